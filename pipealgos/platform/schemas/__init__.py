"""Hyperparameter schemas, one module per algorithm (the tables of algorithms.md)."""
