"""User-facing errors.

`InputError` is the one exception class for bad input a user can fix (a missing file, a wrong
shape, NaN voxels, an output path inside the input dataset ...). The CLI turns it into a one-line
message and exit code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input that the user can fix. The message names the file and the problem.

    Args:
        message: what is wrong, in one line.
        path: the offending file or folder; prefixed to the message when given.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = message
        super().__init__(f"{path}: {message}" if path is not None else message)
