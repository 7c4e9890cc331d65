"""Error hierarchy. Every message is one line and says what to do.

The CLI maps every :class:`ConvDoctorError` to exit code 2 with the message on stderr.
"""

from __future__ import annotations


class ConvDoctorError(Exception):
    """Base of every error convdoctor raises on purpose."""


class UsageError(ConvDoctorError, ValueError):
    """The caller passed something invalid (an input spec, an option value)."""


class ModelLoadError(ConvDoctorError):
    """A MODEL spec, factory or checkpoint could not be turned into a module."""


class CaptureError(ConvDoctorError):
    """The model could not be run, not even by the real-tensor fallback."""


def one_line(exc: BaseException) -> str:
    """Return the first line of an exception's message, with its type when it is not ours.

    Args:
        exc: any exception.

    Returns:
        A single line, suitable for stderr.
    """
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, ConvDoctorError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
