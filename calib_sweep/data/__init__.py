"""Calibrate stage: sources of calibration text and seeded, disjoint calibration sets."""

from calib_sweep.data.sampling import (
    CalibrationSet,
    draw_calibration_set,
    permute_rows,
    token_hash,
    validate_row_order_seed,
    validate_samples,
)
from calib_sweep.data.sources import Document, load_documents, split_documents, validate_source

# Modules that register more loaders (import for their side effect on ``sources.LOADERS``).
from calib_sweep.data import hub, offline  # noqa: E402,F401  isort: skip
from calib_sweep.data.build import (  # noqa: E402
    build_calibration_set,
    check_selection,
    dataset_config,
    heldout_token_ids,
    needs_model,
)

__all__ = [
    "build_calibration_set",
    "check_selection",
    "dataset_config",
    "heldout_token_ids",
    "needs_model",
    "CalibrationSet",
    "Document",
    "draw_calibration_set",
    "load_documents",
    "permute_rows",
    "split_documents",
    "token_hash",
    "validate_row_order_seed",
    "validate_samples",
    "validate_source",
]
