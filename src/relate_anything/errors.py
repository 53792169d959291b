"""Errors a user can act on.

Every error raised on purpose by relate-anything derives from `RelateAnythingError`; the CLI
prints its message (no traceback) and exits with the error's `exit_code`.
"""


class RelateAnythingError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""

    exit_code = 1


class CheckpointError(RelateAnythingError):
    """A weights file that is missing, unreadable, or does not have the expected keys/shapes."""

    exit_code = 3


class WeightsNotFoundError(RelateAnythingError):
    """Weights are neither on disk nor in the Hugging Face cache, and cannot be downloaded."""

    exit_code = 3


class ImageError(RelateAnythingError):
    """An image that cannot be read, or is too large to process."""

    exit_code = 2
