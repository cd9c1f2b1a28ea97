"""Errors the user can fix (bad paths, corrupt files, wrong class names).

The CLI prints them as one line and exits with code 2; the API turns them into 4xx responses.
"""


class WsisInputError(Exception):
    """Bad user input: the message names the file and the problem in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class LabelLeakError(RuntimeError):
    """Weakly supervised training tried to reach ground-truth masks or boxes of the training split."""
