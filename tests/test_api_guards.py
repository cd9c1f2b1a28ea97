"""Request guards (issue 19, items 2 and 10): body limits before parsing, the token before the body, capped
error bodies, JSON-only mutating requests, and no cross-site writes."""

from __future__ import annotations

import json

import pytest

from integration import harness

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def data_root(tmp_path, synth_dataset):
    return harness.data_root_with(tmp_path, synth_dataset)


@pytest.fixture
def client(tmp_path, monkeypatch, data_root):
    settings = harness.service_settings(monkeypatch, tmp_path, data_root, api_token=TOKEN, max_json_kb="64")
    with harness.api_client(settings) as client:
        yield client


@pytest.fixture
def open_client(tmp_path, monkeypatch, data_root):
    """No token configured (docker-compose's old default): only the browser guards protect the writes."""
    settings = harness.service_settings(monkeypatch, tmp_path, data_root)
    with harness.api_client(settings) as client:
        yield client


def big_body(kilobytes: int) -> bytes:
    return json.dumps({f"key{i}": "x" * 90 for i in range(kilobytes * 10)}).encode()


def test_a_body_over_the_json_limit_is_413_before_it_is_parsed(client):
    response = client.post("/api/runs", content=big_body(200), headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == "request body larger than 64 KiB (WSIS_MAX_JSON_KB)"


def test_a_chunked_body_over_the_limit_is_413(client):
    body = big_body(200)
    chunks = (body[i:i + 8192] for i in range(0, len(body), 8192))  # no Content-Length: chunked encoding
    response = client.post("/api/runs", content=chunks, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413


def test_the_token_is_checked_before_the_body(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = client.post("/api/runs", content=big_body(200),
                               headers={**headers, "Content-Type": "application/json"})
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_uploads_are_exempt_from_the_json_limit(client):
    response = client.post("/api/datasets/upload", files={"file": ("ds.zip", b"0" * (200 << 10), "application/zip")},
                           headers=AUTH)
    assert response.status_code != 413  # the upload route enforces WSIS_MAX_UPLOAD_MB itself


def test_validation_error_bodies_are_capped(client):
    body = json.dumps({"dataset_id": 1, **{f"k{i}": 1 for i in range(3000)}})  # 3,000 unknown fields, 36 KB
    response = client.post("/api/runs", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422
    assert len(response.content) < 8192
    assert "and 2980 more" in response.json()["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_mutating_requests_with_a_browser_form_content_type_are_415(open_client, content_type):
    response = open_client.post("/api/runs/1/rounds", content=b"{}", headers={"Content-Type": content_type})
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


def test_a_body_without_a_content_type_is_415(open_client):
    # fetch(url, {method: "POST", body: new Blob([...])}) from another site sends no Content-Type and no preflight
    response = open_client.post("/api/runs", content=b'{"dataset_id": 1}')
    assert response.status_code == 415 and response.json()["detail"] == "Content-Type must be application/json"
    chunked = open_client.post("/api/runs", content=iter([b'{"dataset_id": 1}']))
    assert chunked.status_code == 415


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_a_browser_write_from_another_site_is_403_even_without_origin(open_client, site):
    response = open_client.post("/api/runs/1/rounds", headers={"Sec-Fetch-Site": site})
    assert response.status_code == 403 and "cross-site" in response.json()["detail"]


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://testserver.evil.example"])
def test_cross_site_writes_are_403(open_client, origin):
    for url in ("/api/runs/1/rounds", "/api/jobs/1/cancel"):
        response = open_client.post(url, headers={"Origin": origin})
        assert response.status_code == 403 and "cross-site" in response.json()["detail"]
    assert open_client.get("/api/runs", headers={"Origin": origin}).status_code == 200  # reads stay open


def test_same_origin_and_non_browser_writes_pass(open_client):
    created = open_client.post("/api/datasets", json={"name": "synth", "path": "synth"},
                               headers={"Origin": "http://testserver"})
    assert created.status_code == 201, created.text
    assert open_client.post("/api/runs", json={"dataset_id": 1}).status_code == 201  # no Origin: curl, scripts
    assert open_client.post("/api/runs/1/rounds").status_code != 415  # no body, no Content-Type
    assert open_client.post("/api/runs/1/rounds", headers={"Sec-Fetch-Site": "same-origin"}).status_code != 403


def test_the_status_page_forbids_framing_and_sniffing(open_client):
    for url in ("/", "/api/runs"):
        headers = open_client.get(url).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in open_client.get("/").headers["content-security-policy"]


def test_docker_compose_refuses_to_start_the_api_and_worker_without_a_token():
    import yaml

    compose = yaml.safe_load((harness.REPO / "docker-compose.yml").read_text())
    for service in ("api", "worker"):
        token = compose["services"][service]["environment"]["WSIS_API_TOKEN"]
        assert token.startswith("${WSIS_API_TOKEN:?"), token  # compose stops with this message when unset or empty
