"""Errors that the command line reports as one line, without a traceback."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the value and the fix.

    Raised during validation, before any model weights are loaded.
    """


class CompressionError(RuntimeError):
    """Compression produced an unusable model: nothing compressed, wrong sparsity, NaN/Inf weights."""


def lookup(table, name, unknown: str):
    """``table[name]`` for a registry (methods, selection strategies, zero-shot tasks).

    Args:
        table: the registry, a mapping of names.
        name: the configured name.
        unknown: the one-line message for a name not in ``table``; ``{name!r}`` and ``{known}`` (the
            sorted registered names) are filled in.

    Raises:
        ConfigError: ``name`` is not registered (the message names it and the known ones).
    """
    if name not in table:
        raise ConfigError(unknown.format(name=name, known=sorted(table)))
    return table[name]
