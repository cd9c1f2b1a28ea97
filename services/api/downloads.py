"""File downloads with an ``ETag``: ``If-None-Match`` answers 304, ``HEAD`` the headers alone (the route is
registered for both), small files are sent from memory and larger ones streamed in chunks; an object of an S3
store is streamed from the bucket in chunks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fastapi import HTTPException, Response
from fastapi.responses import FileResponse, StreamingResponse

from services.common.artifact_store import ArtifactStore

# Files up to this size are sent from memory (read in the request's thread); larger ones are streamed in
# 64 KiB chunks (FileResponse), so a download never holds a large file in memory.
SMALL_FILE_BYTES = 1 << 20


def file_download(path: Path, etag: str, filename: str, media_type: str, if_none_match: str | None,
                  missing: str) -> Response:
    """``path`` as an attachment named ``filename`` with the (quoted) ``etag``; 404 with ``missing`` when
    ``path`` is no regular file."""
    try:
        stat_result = os.stat(path)
    except OSError:
        stat_result = None
    if stat_result is None or not stat.S_ISREG(stat_result.st_mode):
        raise HTTPException(404, missing)
    if if_none_match is not None and {etag, "*"} & {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    if stat_result.st_size <= SMALL_FILE_BYTES:
        return Response(Path(path).read_bytes(), media_type=media_type,
                        headers={"ETag": etag, "Content-Disposition": f'attachment; filename="{filename}"'})
    return FileResponse(path, media_type=media_type, filename=filename, headers={"ETag": etag},
                        stat_result=stat_result)


def object_download(store: ArtifactStore, key: str, size: int, etag: str, filename: str, media_type: str,
                    if_none_match: str | None, missing: str) -> Response:
    """The object ``key`` of ``store`` as an attachment, streamed in chunks (constant memory); 404 with
    ``missing`` when it is gone."""
    if if_none_match is not None and {etag, "*"} & {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    if not store.exists(key):
        raise HTTPException(404, missing)
    headers = {"ETag": etag, "Content-Length": str(size), "Content-Disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(store.open_chunks(key), media_type=media_type, headers=headers)
