"""Errors that the command line reports as one line, without a traceback."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the value and the fix.

    Raised during validation, before any model weights are loaded.
    """


class CompressionError(RuntimeError):
    """Compression produced an unusable model: nothing compressed, wrong sparsity, NaN/Inf weights."""
