"""Datasets: parsing uploads (CSV, NPZ, IDX), built-ins, the repository and the service."""
