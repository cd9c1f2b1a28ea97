"""JSON artifacts: atomic writes (temp file + rename) and reads with one-line errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from wsis_core.errors import WsisInputError


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it onto ``path`` when the block succeeds,
    so that readers never see a half-written file (the temporary file is removed on failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_file(path, "w") as handle:
        json.dump(obj, handle)


def read_json(path: str | Path):
    """Parse a JSON file; a missing or malformed file raises WsisInputError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WsisInputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise WsisInputError(f"{path}: is a folder, expected a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WsisInputError(f"{path}: not valid JSON ({exc})") from None
