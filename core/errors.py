"""Typed errors whose messages are written for analysts, not for developers.

Every error raised on purpose by ``core`` derives from :class:`DetectorError`, so
callers (the CLI, the dashboard) can show ``str(err)`` and never a traceback.
"""
from __future__ import annotations


class DetectorError(Exception):
    """Base class: ``str(err)`` is a complete, human-readable message."""

    code = "error"


class ImageDecodeError(DetectorError):
    """The bytes are not an image we can read safely."""

    code = "decode_error"


class UnsupportedImageError(ImageDecodeError):
    """Not a recognised image format (or an empty file)."""

    code = "unsupported_format"


class ImageTooLargeError(ImageDecodeError):
    """More pixels than the configured limit (decompression-bomb guard)."""

    code = "too_large"


class TruncatedImageError(ImageDecodeError):
    """The file ends before the image data does."""

    code = "truncated"


class CheckpointError(DetectorError):
    """A model file that is missing, corrupt, or lacks its preprocessing spec."""

    code = "checkpoint_error"


class CalibrationError(DetectorError):
    """Calibration cannot be fitted or applied (e.g. one class only)."""

    code = "calibration_error"


class InvalidArgumentError(DetectorError, ValueError):
    """A value outside what a function accepts (a method name, a range, a shape).

    Also a ``ValueError``, so library callers that catch that keep working, while the CLI and the
    dashboard show its message like every other :class:`DetectorError`.
    """

    code = "invalid_argument"


class ModelFileError(CheckpointError, ValueError):
    """A model-side file (checkpoint, patch teacher) that is not what the command needs."""

    code = "model_file_error"
