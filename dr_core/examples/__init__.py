"""Runnable examples (may use scikit-learn for its bundled data sets; the library may not)."""
