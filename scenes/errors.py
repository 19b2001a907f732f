"""Errors that are the user's to fix: the CLI prints their one-line message and exits with 2."""


class UserError(Exception):
    """A user's mistake (missing file, bad camera, unknown key): one clear line, exit code 2."""


class UnreadableImage(UserError):
    """An image or mask file that is missing or cannot be decoded (training skips and counts these)."""


class CheckpointMissing(UserError):
    """A model folder that does not exist (comparisons skip the method and say why)."""
