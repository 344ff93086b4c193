"""calib_sweep: sweeps over calibration data for post-training LLM quantization and pruning.

The runnable form of Williams & Aletras, "On the Impact of Calibration Data in Post-training
Quantization and Pruning" (ACL 2024, arXiv 2311.09755).  A job is
load -> calibrate -> compress -> evaluate -> record (see :mod:`calib_sweep.job`).
"""

__version__ = "0.1.0"
