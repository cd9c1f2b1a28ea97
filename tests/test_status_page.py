"""The status page at ``/``: served from ``services/api/static``, self-contained, and calling only real API routes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from integration import harness
from services.api.app import STATIC_DIR

STATIC_FILES = ("index.html", "app.js", "style.css")
# A string literal in app.js naming an API route: "/api/..." (templates use {name} placeholders).
ROUTE_LITERAL = re.compile(r"""(["'`])(/api/[^"'`]*)\1""")


@pytest.fixture
def client(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    data_root.mkdir()
    settings = harness.service_settings(monkeypatch, tmp_path, data_root)
    with harness.api_client(settings) as client:
        yield client


def _source(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def test_root_serves_the_page_referencing_its_script_and_style(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in response.text
    assert '<link rel="stylesheet" href="/static/style.css"' in response.text
    assert response.text == _source("index.html")


@pytest.mark.parametrize(
    ("name", "content_types"),
    [
        ("index.html", ("text/html",)),
        ("app.js", ("text/javascript", "application/javascript")),
        ("style.css", ("text/css",)),
    ],
)
def test_static_files_have_their_content_types(client, name, content_types):
    response = client.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0].strip() in content_types
    assert response.text == _source(name)


def test_the_page_is_not_part_of_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/static") for path in paths)
    missing = client.get("/static/nothing.js")
    assert missing.status_code == 404


@pytest.mark.parametrize("name", STATIC_FILES)
def test_static_files_fetch_nothing_from_other_hosts(name):
    text = _source(name)
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.IGNORECASE), name
    if name == "style.css":
        assert "@import" not in text and "url(" not in text  # no fonts or images from anywhere
    if name == "index.html":  # every src/href is a path on this server
        links = re.findall(r'\b(?:src|href)="([^"]*)"', text)
        assert links and all(link.startswith("/") and not link.startswith("//") for link in links), links


def test_app_js_calls_exactly_existing_routes(client):
    source = _source("app.js")
    routes = {match.group(2) for match in ROUTE_LITERAL.finditer(source)}
    # every "/api/" in the script is one of those literals: no route is built ad hoc
    assert source.count("/api/") == sum(1 for _ in ROUTE_LITERAL.finditer(source))
    assert not any("${" in route for route in routes)
    paths = client.app.openapi()["paths"]
    unknown = routes - set(paths)
    assert not unknown, f"app.js names routes the API does not have: {sorted(unknown)}"
    # and the page covers what it promises: polling, the three forms, launching, downloads, cancelling, review
    assert {
        "/api/health", "/api/datasets", "/api/runs", "/api/runs/{run_id}/rounds", "/api/runs/{run_id}/metrics",
        "/api/rounds/{round_id}", "/api/rounds/{round_id}/pseudo-labels", "/api/jobs/{job_id}/cancel",
        "/api/rounds/{round_id}/model", "/api/rounds/{round_id}/gallery", "/api/rounds/{round_id}/quality",
    } <= routes


def test_app_js_uses_only_elements_of_the_page():
    ids = set(re.findall(r'\bid="([^"]+)"', _source("index.html")))
    used = set(re.findall(r"""getElementById\(["']([^"']+)["']\)""", _source("app.js")))
    assert used and used <= ids, sorted(used - ids)


def test_page_has_labels_and_empty_states():
    html = _source("index.html")
    for field in re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', html):
        assert f'<label for="{field}"' in html, f"input {field} has no label"
    script = _source("app.js")
    assert "no runs yet" in script and "no datasets yet" in script
    assert "sessionStorage" in script and "Authorization" in script and "Bearer" in script
    assert "<progress" not in script and '"progress"' in script  # progress bars are <progress> elements


def test_static_dir_is_inside_the_package():
    assert STATIC_DIR == Path(__file__).resolve().parents[1] / "services" / "api" / "static"
    assert all((STATIC_DIR / name).is_file() for name in STATIC_FILES)
