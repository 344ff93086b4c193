"""``method=dense``: no compression, the uncompressed reference every compressed model is compared to.

Reads no calibration data (data-free); verify checks only that no weight is NaN or Inf, and a save is
the plain weights.
"""

from __future__ import annotations

from calib_sweep.methods.registry import register_method

register_method("dense", kind="none", save_note="uncompressed reference", data_free=True)
