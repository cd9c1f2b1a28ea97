"""Dataset uploads: a multipart body streamed to disk under a byte cap, then a zip unpacked safely.

The archive is written chunk by chunk as it arrives (python-multipart's streaming parser), never held
in memory, and the upload stops with 413 as soon as the body passes ``WSIS_MAX_UPLOAD_MB``. Unpacking
refuses, before writing anything, every entry with an absolute path, a ``..`` component, a symlink or
a device file, and stops past :data:`UNPACK_FACTOR` times the cap of unpacked bytes (zip bombs).
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from wsis_core.data.dataset import detect_layout
from wsis_core.errors import WsisInputError

MAX_FIELD_BYTES = 1024  # text fields (the dataset name, split names)
UNPACK_FACTOR = 4  # unpacked bytes may be at most this many times the upload cap
IGNORED_TOP_FOLDERS = ("__MACOSX",)  # added by macOS's Archive Utility


class UploadTooLarge(Exception):
    """The body (or the unpacked archive) passed its cap."""


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    data: bytearray = field(default_factory=bytearray)
    handle: object = None


class MultipartUpload:
    """Feeds a ``multipart/form-data`` body to the parser: text fields are kept (capped), the ``file``
    field is written to ``archive_path``."""

    def __init__(self, content_type: str, archive_path: Path, limit_bytes: int):
        kind, params = parse_options_header(content_type)
        if kind != b"multipart/form-data" or b"boundary" not in params:
            raise WsisInputError("expected a multipart/form-data body with fields 'name' and 'file'")
        self.archive_path, self.limit_bytes = archive_path, limit_bytes
        self.fields: dict[str, str] = {}
        self.received = 0
        self.has_file = False
        self._part = _Part()
        self._header_field = self._header_value = b""
        self._parser = MultipartParser(params[b"boundary"], {
            "on_part_begin": self._begin, "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value, "on_header_end": self._on_header_end,
            "on_headers_finished": self._headers_done, "on_part_data": self._data, "on_part_end": self._end,
        })

    async def consume(self, chunks: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in chunks:
                self.received += len(chunk)
                if self.received > self.limit_bytes:
                    raise UploadTooLarge(f"upload larger than {self.limit_bytes // 2**20} MB (WSIS_MAX_UPLOAD_MB)")
                self._parser.write(chunk)
            self._parser.finalize()
        except MultipartParseError as exc:
            raise WsisInputError(f"malformed multipart/form-data body ({exc})") from None
        finally:
            if self._part.handle is not None:
                self._part.handle.close()

    def _begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field = self._header_value = b""

    def _headers_done(self) -> None:
        _, params = parse_options_header(self._part.headers.get("content-disposition", ""))
        self._part.name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._part.name == "file":
            if self.has_file:
                raise WsisInputError("more than one 'file' field")
            self.has_file = True
            self._part.handle = open(self.archive_path, "wb")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part.handle is not None:
            self._part.handle.write(data[start:end])
            return
        self._part.data += data[start:end]
        if len(self._part.data) > MAX_FIELD_BYTES:
            raise WsisInputError(f"field {self._part.name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def _end(self) -> None:
        if self._part.handle is not None:
            self._part.handle.close()
            self._part.handle = None
        elif self._part.name:
            try:
                self.fields[self._part.name] = self._part.data.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise WsisInputError(f"field {self._part.name!r} is not UTF-8 text") from None


def _checked_entries(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Every entry of ``archive``, after refusing the unsafe ones (one line naming the first)."""
    entries = archive.infolist()
    for info in entries:
        name = info.filename
        path = PurePosixPath(name.replace("\\", "/"))
        if name.startswith(("/", "\\")) or path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
            raise WsisInputError(f"archive entry {name!r}: absolute path")
        if ".." in path.parts:
            raise WsisInputError(f"archive entry {name!r}: '..' in its path")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise WsisInputError(f"archive entry {name!r}: symbolic link")
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            raise WsisInputError(f"archive entry {name!r}: device or special file")
        if info.flag_bits & 0x1:
            raise WsisInputError(f"archive entry {name!r}: encrypted")
    return entries


def unpack(archive_path: Path, dest: Path, limit_bytes: int) -> None:
    """Unpack a zip into the empty folder ``dest``, refusing unsafe entries and more than
    ``UNPACK_FACTOR * limit_bytes`` bytes (counted as written, not as declared)."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            entries = _checked_entries(archive)
            budget = UNPACK_FACTOR * limit_bytes
            for info in entries:
                target = dest / PurePosixPath(info.filename.replace("\\", "/"))
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(target, "wb") as sink:
                    while chunk := source.read(2**20):
                        budget -= len(chunk)
                        if budget < 0:
                            raise UploadTooLarge(f"archive unpacks to more than {UNPACK_FACTOR} x WSIS_MAX_UPLOAD_MB")
                        sink.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise WsisInputError(f"not a readable zip archive ({exc})") from None


def dataset_folder(unpacked: Path) -> Path:
    """The dataset root inside an unpacked archive: the folder itself, or its one sub-folder (an archive
    of a folder); the layout is checked by :func:`wsis_core.data.dataset.detect_layout`."""
    children = [p for p in unpacked.iterdir() if p.name not in IGNORED_TOP_FOLDERS]
    if len(children) == 1 and children[0].is_dir():
        try:
            detect_layout(unpacked)
        except WsisInputError:
            return children[0]
    return unpacked


def remove(path: Path) -> None:
    """Delete a partial upload (file or folder); nothing is left behind."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
