"""The one exception type a user of blender_m2d ever sees.

Anything the user can fix (a bad file, a mismatched model, a missing bone) raises :class:`M2DError`
with a message that names the file or item and says what is wrong. Operators and the CLI catch
exactly this type and show the message verbatim; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import os


class M2DError(Exception):
    """A user-facing error: ``"<path>: <reason>"`` when a path is known, else ``"<reason>"``.

    Parameters
    ----------
    reason : str
        What is wrong and, where possible, what to do about it.
    path : str | os.PathLike | None
        The file or folder the error is about; it leads the message.
    """

    def __init__(self, reason: str, *, path: str | os.PathLike | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)
