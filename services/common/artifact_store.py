"""The artifact store: one interface, two backends, used by the workers and the API.

``WSIS_ARTIFACT_URL`` chooses it: unset (or a plain folder) is the local folder ``WSIS_ARTIFACT_ROOT``, as before;
``s3://bucket/prefix`` is S3-compatible object storage (``WSIS_S3_ENDPOINT_URL`` for a server other than AWS, the
credentials from the standard ``AWS_*`` variables). Keys are POSIX paths relative to the store (``runs/3/...``),
the same strings the Artifact rows hold.

The S3 backend is boto3: AWS's own SDK, the reference client of the protocol, with the standard credential chain
(``AWS_ACCESS_KEY_ID``, profiles, instance roles), multipart uploads that make an object visible only once complete,
streamed GETs and presigned URLs. fsspec/s3fs add a file-system layer (and aiobotocore pins) we do not need;
obstore is younger and lacks the credential chain's long tail.

Files are always read and written through a local folder (:attr:`ArtifactStore.local_root`): the store folder
itself for the local backend, a scratch copy (``services.common.scratch``) for S3.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.common.paths import OutsideRootError, resolve_inside

CHUNK = 1 << 20
SHA256_META = "sha256"  # the object metadata (x-amz-meta-sha256) holding the hex sha256 of its bytes


@dataclass(frozen=True)
class StoredObject:
    """One object of the store: its key, size and version tag (S3's ETag; size:mtime for a local file)."""

    key: str
    size: int
    tag: str


class ArtifactStore(Protocol):
    url: str
    local_root: Path  # where the files of the store are read and written on this host

    def list(self, prefix: str) -> list[StoredObject]: ...
    def exists(self, key: str) -> bool: ...
    def download(self, key: str, target: Path) -> str: ...
    def upload(self, source: Path, key: str, sha256: str) -> str: ...
    def open_chunks(self, key: str) -> Iterator[bytes]: ...
    def sha256_of(self, key: str) -> str | None: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def delete(self, key: str) -> None: ...


def check_key(key: str) -> str:
    """``key`` if it is a relative POSIX key without ``.``/``..``/empty segments, NUL or backslash; else
    OutsideRootError (the confinement rules of local paths, applied to object keys)."""
    parts = key.split("/")
    if (not key or "\x00" in key or "\\" in key or key.startswith("/")
            or any(part in ("", ".", "..") for part in parts[:-1]) or parts[-1] in (".", "..")):
        raise OutsideRootError(f"{key!r}: not a key inside the store")
    return key


def join_key(prefix: str, key: str) -> str:
    return f"{prefix.rstrip('/')}/{key}" if prefix else key


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at its ends); ValueError if malformed."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r}: not an s3:// URL")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    if not bucket or (prefix and check_key(prefix) != prefix):
        raise ValueError(f"{url!r}: expected s3://bucket/prefix")
    return bucket, prefix


class LocalStore:
    """The store in a local (or shared) folder: files are written in place, there is nothing to upload."""

    def __init__(self, root: Path):
        self.local_root = Path(root).resolve()
        self.url = str(self.local_root)

    def path(self, key: str) -> Path:
        return resolve_inside(self.local_root, check_key(key))

    def list(self, prefix: str) -> list[StoredObject]:
        folder = self.path(prefix.rstrip("/")) if prefix else self.local_root
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        return [StoredObject(p.relative_to(self.local_root).as_posix(), p.stat().st_size,
                             f"{p.stat().st_size}:{p.stat().st_mtime_ns}") for p in files]

    def exists(self, key: str) -> bool:
        try:
            return self.path(key).exists()
        except OutsideRootError:
            return False

    def download(self, key: str, target: Path) -> str:
        raise NotImplementedError("a local store is read in place")

    def upload(self, source: Path, key: str, sha256: str) -> str:
        raise NotImplementedError("a local store is written in place")

    def open_chunks(self, key: str) -> Iterator[bytes]:
        with open(self.path(key), "rb") as handle:
            yield from iter(lambda: handle.read(CHUNK), b"")

    def sha256_of(self, key: str) -> str | None:
        return None  # not stored beside the file: the Artifact row holds it

    def delete_prefix(self, prefix: str) -> int:
        folder = self.path(prefix.rstrip("/"))
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
        shutil.rmtree(folder, ignore_errors=True)
        return size

    def delete(self, key: str) -> None:
        path = self.path(key)
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


class S3Store:
    """The store in an S3 bucket under a prefix; ``local_root`` is this host's scratch copy."""

    def __init__(self, url: str, local_root: Path, endpoint_url: str | None = None, client=None):
        import boto3
        from botocore.config import Config

        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.local_root = Path(local_root).resolve()
        self.client = client or boto3.client(
            "s3", endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}))

    def _key(self, key: str) -> str:
        return join_key(self.prefix, check_key(key))

    def list(self, prefix: str) -> list[StoredObject]:
        full = join_key(self.prefix, prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            found += [StoredObject(o["Key"][strip:], o["Size"], o["ETag"]) for o in page.get("Contents", [])]
        return found

    def exists(self, key: str) -> bool:
        """The object ``key``, or a 'folder' of objects under ``key/``, is in the bucket."""
        try:
            full = self._key(key)
        except OutsideRootError:
            return False
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full, MaxKeys=2).get("Contents", [])
        return any(o["Key"] == full or o["Key"].startswith(full + "/") for o in listed)

    def download(self, key: str, target: Path) -> str:
        """Copy the object into ``target`` (a temp file renamed at the end: a file that exists is complete);
        returns its ETag."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            with open(partial, "wb") as handle:
                for chunk in response["Body"].iter_chunks(CHUNK):
                    handle.write(chunk)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return response["ETag"]

    def upload(self, source: Path, key: str, sha256: str) -> str:
        """Upload ``source`` with its sha256 as metadata (multipart above 8 MiB: the object appears only once
        complete); returns the object's ETag."""
        full = self._key(key)
        self.client.upload_file(str(source), self.bucket, full, ExtraArgs={"Metadata": {SHA256_META: sha256}})
        return self.client.head_object(Bucket=self.bucket, Key=full)["ETag"]

    def open_chunks(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks of CHUNK (constant memory whatever its size)."""
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def sha256_of(self, key: str) -> str | None:
        return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["Metadata"].get(SHA256_META)

    def delete_prefix(self, prefix: str) -> int:
        objects = self.list(prefix.rstrip("/") + "/")
        for start in range(0, len(objects), 1000):
            batch = [{"Key": join_key(self.prefix, o.key)} for o in objects[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return sum(o.size for o in objects)

    def delete(self, key: str) -> None:
        """Delete the object ``key``, or every object under ``key/`` (a folder artifact)."""
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        self.delete_prefix(key)
