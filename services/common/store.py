"""The artifact store under ``WSIS_ARTIFACT_ROOT``: run folders, and size + sha256 of what a stage produced.

Stages write their files atomically (temp file + rename, see ``wsis_core.workdir``), so a file that
exists is complete; the worker only records it. A folder artifact (e.g. score maps) is hashed as
the sha256 of its sorted ``relative-path NUL file-sha256`` lines.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from services.common.paths import relative_inside

CHUNK = 1 << 20


@dataclass(frozen=True)
class ArtifactRecord:
    """What the Artifact row stores about one output of a stage."""

    kind: str
    path: str  # relative to the artifact root
    size: int
    sha256: str


def run_prefix(run_id: int) -> str:
    """Key prefix of a run in the store (its layout: ``wsis_core.run_layout``)."""
    return f"runs/{run_id}"


def run_dir(artifact_root: Path, run_id: int) -> Path:
    """Folder of a run under a local store root or a scratch copy."""
    return Path(artifact_root) / run_prefix(run_id)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(artifact_root: Path, kind: str, path: Path) -> ArtifactRecord:
    """Record of an output; raises OutsideRootError if it lies outside the store, FileNotFoundError if missing."""
    relative = relative_inside(artifact_root, path)
    path = Path(artifact_root).resolve() / relative
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        lines = "".join(f"{p.relative_to(path).as_posix()}\0{file_sha256(p)}\n" for p in files)
        size = sum(p.stat().st_size for p in files)
        return ArtifactRecord(kind, relative, size, hashlib.sha256(lines.encode()).hexdigest())
    return ArtifactRecord(kind, relative, path.stat().st_size, file_sha256(path))
