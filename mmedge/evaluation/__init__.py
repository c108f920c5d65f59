"""Evaluation: run a model over a split, accuracy tables, threshold sweeps, FLOPs."""
