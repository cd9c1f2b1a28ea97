"""A host's scratch cache of object storage (``WSIS_SCRATCH``): the local copy a worker runs its stages in and the
API reads artifacts from.

A run's objects are mirrored into ``SCRATCH/artifacts/runs/<id>/`` before a stage (only the objects whose ETag
changed since this host last saw them are fetched, so the stages of a round on one host reuse the copy), the stage
writes its outputs there, and :func:`publish` uploads what the stage changed: the round's stage markers last, so a
marker in the bucket means the files it names are there. A dataset at ``s3://`` is mirrored once into
``SCRATCH/datasets/<bucket>/<prefix>/``. Each mirrored prefix keeps its ETags in ``SCRATCH/.manifests/``; when the
cache grows past ``WSIS_SCRATCH_MAX_MB`` the least recently used mirrors (never the one in use) are deleted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from services.common.artifact_store import ArtifactStore, LocalStore, S3Store, check_key, parse_s3_url
from services.common.paths import OutsideRootError, resolve_inside
from services.common.settings import Settings
from services.common.store import file_sha256, run_dir
from wsis_core import run_layout

MANIFESTS, ARTIFACTS, DATASETS = ".manifests", "artifacts", "datasets"
MARKERS = "stages"  # the folder of a round's stage markers (wsis_core.run_layout.marker_name): uploaded last


def open_store(settings: Settings) -> ArtifactStore:
    """The artifact store the settings name (WSIS_ARTIFACT_URL, else the folder WSIS_ARTIFACT_ROOT); one per
    process and configuration (an S3 client keeps its connection pool)."""
    if settings.object_store:
        return _s3_store(settings.artifact_url, settings.scratch / ARTIFACTS, settings.s3_endpoint_url)
    return LocalStore(settings.artifact_root)


@lru_cache(maxsize=8)
def _s3_store(url: str, local_root: Path, endpoint_url: str | None) -> S3Store:
    return S3Store(url, local_root, endpoint_url)


FileState = dict[str, tuple[int, int]]  # relative path -> (size, mtime_ns)


def file_state(folder: Path) -> FileState:
    """Size and modification time of every file under ``folder`` (what :func:`publish` compares against)."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".part")}


@dataclass
class Mirror:
    """The local copy of the objects under ``prefix`` of ``store``, in ``folder``."""

    store: ArtifactStore
    prefix: str
    folder: Path
    scratch: Path
    max_bytes: int
    host_local: tuple[str, ...] = ()  # files each host writes for itself: uploaded, never fetched

    @property
    def manifest_path(self) -> Path:
        name = hashlib.sha1(f"{self.store.url}|{self.prefix}".encode()).hexdigest()[:16]
        return self.scratch / MANIFESTS / f"{name}.json"

    def _manifest(self) -> dict[str, str]:
        try:
            return json.loads(self.manifest_path.read_text())["tags"]
        except (OSError, ValueError, KeyError):
            return {}

    def _write_manifest(self, tags: dict[str, str]) -> None:
        self.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.manifest_path.with_suffix(f".{uuid.uuid4().hex}.part")
        partial.write_text(json.dumps({"folder": str(self.folder), "tags": tags}))
        partial.replace(self.manifest_path)

    def sync(self) -> FileState:
        """Fetch the objects that are new or changed since the last sync, then evict other mirrors past the bound;
        returns the folder's file state."""
        tags = self._manifest()
        for obj in self.store.list(self.prefix):
            relative = obj.key[len(self.prefix):] if self.prefix else obj.key
            if relative in self.host_local:
                continue
            local = resolve_inside(self.folder, check_key(relative))
            if tags.get(relative) != obj.tag or not local.is_file():
                tags[relative] = self.store.download(obj.key, local)
        self._write_manifest(tags)
        evict(self.scratch, self.max_bytes, keep=self.manifest_path)
        return file_state(self.folder)

    def publish(self, before: FileState) -> list[str]:
        """Upload the files new or changed since ``before`` (stage markers last); returns their keys."""
        after = file_state(self.folder)
        changed = sorted((name for name, state in after.items() if before.get(name) != state),
                         key=lambda name: (f"/{MARKERS}/" in f"/{name}", name))
        tags = self._manifest()
        for name in changed:
            path = self.folder / name
            tags[name] = self.store.upload(path, self.prefix + name, file_sha256(path))
        self._write_manifest(tags)
        return [self.prefix + name for name in changed]


def run_mirror(settings: Settings, store: ArtifactStore, run_id: int) -> Mirror | None:
    """The scratch mirror of run ``run_id`` (None for a local store: the run folder is used in place)."""
    if isinstance(store, LocalStore):
        return None
    folder = run_dir(store.local_root, run_id)
    # config.json names this host's copy of the dataset (its ``data`` folder)
    return Mirror(store, f"{folder.relative_to(store.local_root).as_posix()}/", folder, settings.scratch,
                  settings.scratch_max_mb << 20, host_local=(run_layout.CONFIG,))


def fetch(settings: Settings, store: ArtifactStore, key: str, sha256: str | None = None) -> Path:
    """The local file of artifact ``key``: in place for a local store; for S3 the scratch copy, fetched unless the
    copy already has ``sha256``. OutsideRootError for a key outside the store, FileNotFoundError if it is gone."""
    if isinstance(store, LocalStore):
        return store.path(key)
    local = resolve_inside(store.local_root, check_key(key))
    if local.is_file() and sha256 is not None and file_sha256(local) == sha256:
        return local
    if not store.exists(key):
        raise FileNotFoundError(key)
    store.download(key, local)
    return local


def dataset_folder(settings: Settings, path: str) -> Path:
    """The local folder of a registered dataset: ``path`` inside WSIS_DATA_ROOT, or for ``s3://bucket/prefix``
    the scratch mirror of its objects (synced now)."""
    if not path.startswith("s3://"):
        return resolve_inside(settings.data_root, path)
    bucket, prefix = parse_s3_url(path)
    store = _s3_store(f"s3://{bucket}", settings.scratch / DATASETS / bucket, settings.s3_endpoint_url)
    folder = resolve_inside(store.local_root, prefix) if prefix else store.local_root
    Mirror(store, f"{prefix}/" if prefix else "", folder, settings.scratch, settings.scratch_max_mb << 20).sync()
    return folder


def confined_dataset_url(settings: Settings, url: str) -> str:
    """``url`` normalised (``s3://bucket/prefix``) if it lies under WSIS_DATA_URL; else OutsideRootError."""
    if not settings.data_url:
        raise OutsideRootError(f"{url}: s3:// datasets need WSIS_DATA_URL (the allowed bucket and prefix)")
    try:
        bucket, prefix = parse_s3_url(url)
        root_bucket, root_prefix = parse_s3_url(settings.data_url)
    except ValueError as exc:
        raise OutsideRootError(str(exc)) from None
    if bucket != root_bucket or not (not root_prefix or prefix == root_prefix or prefix.startswith(root_prefix + "/")):
        raise OutsideRootError(f"{url}: outside WSIS_DATA_URL")
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def evict(scratch: Path, max_bytes: int, keep: Path) -> None:
    """Delete the least recently synced mirrors (folder and manifest) until the scratch holds at most
    ``max_bytes``; the mirror whose manifest is ``keep`` stays."""
    manifests = sorted((scratch / MANIFESTS).glob("*.json"), key=lambda p: p.stat().st_mtime)
    sizes = {m: _folder_size(_folder_of(m)) for m in manifests}
    total = sum(sizes.values())
    for manifest in manifests:
        if total <= max_bytes:
            return
        if manifest == keep:
            continue
        folder = _folder_of(manifest)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        manifest.unlink(missing_ok=True)
        total -= sizes[manifest]


def _folder_of(manifest: Path) -> Path | None:
    try:
        return Path(json.loads(manifest.read_text())["folder"])
    except (OSError, ValueError, KeyError):
        return None


def _folder_size(folder: Path | None) -> int:
    if folder is None or not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
