"""Errors a user can act on.

Every error raised on purpose by relate-anything derives from `RelateAnythingError` and says
what to do. The errors carry no exit codes: the command line maps error types to its exit codes
in one table (`relate_anything.console.EXIT_CODES`), the REST API to HTTP statuses.
"""


class RelateAnythingError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class UsageError(RelateAnythingError):
    """An argument or setting outside what the call accepts (caught before any model loads
    where possible)."""


class CheckpointError(RelateAnythingError):
    """A weights file that is missing, unreadable, or does not have the expected keys/shapes."""


class WeightsNotFoundError(RelateAnythingError):
    """Weights are neither on disk nor in the Hugging Face cache, and cannot be downloaded."""


class InputFileError(RelateAnythingError):
    """An input (photo, clip) that cannot be read or used; a command that has several goes on
    with the others."""


class ImageError(InputFileError):
    """An image that cannot be read or used."""


class NotAnImageError(ImageError):
    """A file that is not an image in a format we read."""


class ImageTooLargeError(ImageError):
    """An image with more pixels than the limit (checked before decoding)."""


class PromptError(UsageError):
    """A point or box prompt that does not fit the image."""


class VideoError(InputFileError):
    """A video that cannot be read or written."""
