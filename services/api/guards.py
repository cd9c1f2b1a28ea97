"""Checks every request passes before a route sees it (an ASGI middleware, so nothing is parsed first).

Writes (any method but GET, HEAD and OPTIONS) under ``/api/``, in this order:

1. ``Origin``, when a browser sent one, must name the host the request was sent to (or one of
   ``WSIS_TRUSTED_ORIGINS``); without ``Origin``, ``Sec-Fetch-Site`` must not say ``cross-site`` or
   ``same-site``: another site's page cannot write, token or not (403).
2. A request with a body must say it is JSON (the upload route also takes ``multipart/form-data``): no
   ``Content-Type``, or one an HTML form or a "simple" cross-site ``fetch`` may send, is refused (415).
   Requests without a body (launch, cancel) need no ``Content-Type``.
3. The bearer token, when ``WSIS_API_TOKEN`` is set (401), before a byte of the body is read.
4. The body may hold at most ``WSIS_MAX_JSON_KB`` (413): a larger ``Content-Length`` is refused at once,
   a chunked body once it grows past the limit. Multipart uploads to ``/api/datasets/upload`` are
   exempt: that route streams them to disk and enforces ``WSIS_MAX_UPLOAD_MB`` itself.

Every response also gets headers that keep the status page out of frames and stop content sniffing.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from services.common.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CROSS_SITE = frozenset({"cross-site", "same-site"})  # Sec-Fetch-Site of a request another site's page made
UPLOAD_PATH = "/api/datasets/upload"
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin")]
# The status page and its files load nothing from elsewhere; nor does /docs (Swagger UI, served by this server),
# whose widgets set inline styles and draw data: images.
PAGE_POLICY = b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
DOCS_POLICY = (b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; "
               b"base-uri 'none'; form-action 'self'; object-src 'none'")
DOCS_PATHS = ("/docs", "/docs-assets/")
OTHER_POLICY = b"frame-ancestors 'none'"


class RequestGuard:
    """ASGI middleware applying the checks of this module's docstring with ``settings``."""

    def __init__(self, app, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        page = path == "/" or path.startswith("/static/")
        docs = path.startswith(DOCS_PATHS)
        send = _with_security_headers(send, PAGE_POLICY if page else DOCS_POLICY if docs else OTHER_POLICY)
        if scope["method"] in READ_METHODS or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["path"] == UPLOAD_PATH and _media_type(headers) == "multipart/form-data":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_json_kb * 1024
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        await self.app(scope, _limited(receive, limit), send)

    def _refusal(self, scope, headers: Headers) -> JSONResponse | None:
        origin = headers.get("origin")
        if origin is not None and not self._trusted(origin, headers.get("host", "")):
            return _error(403, "cross-site request refused (Origin does not match the host)")
        if origin is None and headers.get("sec-fetch-site", "").lower() in CROSS_SITE:
            return _error(403, "cross-site request refused (Sec-Fetch-Site)")
        media_type = _media_type(headers)
        if not media_type and _has_body(headers):
            return _error(415, "Content-Type must be application/json")
        if media_type and not _is_json(media_type) and not (
            scope["path"] == UPLOAD_PATH and media_type == "multipart/form-data"
        ):
            return _error(415, f"Content-Type must be application/json, not {media_type[:100]}")
        token = self.settings.api_token
        if token is not None:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        return None

    def _trusted(self, origin: str, host: str) -> bool:
        if origin in self.settings.trusted_origins:
            return True
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(netloc) and netloc.lower() == host.lower()


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length", "").strip()
    return "transfer-encoding" in headers or (length != "" and length != "0")


def _media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _too_large_detail(limit: int) -> str:
    return f"request body larger than {limit // 1024} KiB (WSIS_MAX_JSON_KB)"


def _too_large(limit: int) -> JSONResponse:
    return _error(413, _too_large_detail(limit))


def _limited(receive, limit: int):
    """``receive`` that raises a 413 once the body passed ``limit`` bytes (FastAPI answers it)."""
    received = 0

    async def receive_limited():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, _too_large_detail(limit))
        return message

    return receive_limited


def _with_security_headers(send, policy: bytes):
    async def send_with_headers(message):
        if message["type"] == "http.response.start":
            names = {name.lower() for name, _ in message.get("headers", [])}
            wanted = [*SECURITY_HEADERS, (b"content-security-policy", policy)]
            extra = [(name, value) for name, value in wanted if name not in names]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return send_with_headers
