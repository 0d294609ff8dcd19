"""Error types for bad input. The CLI prints any `UnlearnError` as one clear line (exit 2)."""


class UnlearnError(Exception):
    """Base class: the input is wrong, and the message says what and how to fix it."""


class ConfigError(UnlearnError, ValueError):
    """A config file or override is malformed; the message names the offending key."""


class DataError(UnlearnError, ValueError):
    """A data spec or file is malformed, missing or empty."""


class ModelError(UnlearnError, ValueError):
    """A model reference cannot be resolved or loaded."""


class FetchError(UnlearnError, RuntimeError):
    """A catalog model could not be fetched or verified; the message names the failed step."""


class RunError(UnlearnError, RuntimeError):
    """A training run cannot start as asked (existing output, mismatched resume, ...)."""


def one_line(exc: BaseException) -> str:
    """A failure as one report line: the exception's type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
