"""Hydra config tree of calib_sweep (package data, so installed copies find it)."""
