"""Sweeps: one child job per point of a grid over a base JobSpec."""
