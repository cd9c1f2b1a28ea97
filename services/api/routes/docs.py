"""``/docs``: Swagger UI from this server alone. Its script and style come from the ``fastapi-offline``
package (mounted at :data:`ASSETS_URL`), its start-up script from ``static/docs.js``: no CDN, no inline
script, so the page's Content-Security-Policy allows this origin only (``services.api.guards``)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
ASSETS_URL = "/docs-assets"
ASSETS_DIR = str(files("fastapi_offline") / "static")
PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>wsis control plane - API documentation</title>
  <link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">
  <link rel="icon" href="{ASSETS_URL}/favicon.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>
  <script src="/static/docs.js"></script>
</body>
</html>
"""


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    """Swagger UI over ``/openapi.json``."""
    return HTMLResponse(PAGE)
