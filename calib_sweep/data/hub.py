"""Hugging Face Hub calibration sources (C4, CNN/DailyMail, RedPajama, RefinedWeb, Wikipedia, WikiText, Pile).

Each loader registers itself with :func:`calib_sweep.data.sources.register_loader`.
"""
