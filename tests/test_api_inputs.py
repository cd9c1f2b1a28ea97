"""Run configurations are bounded, strictly typed and finite; the lists are paginated (issue 19, items 3, 6, 7, 11)."""

from __future__ import annotations

import json

import pytest

from integration import harness


@pytest.fixture
def client(tmp_path, monkeypatch, synth_dataset):
    settings = harness.service_settings(monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset))
    with harness.api_client(settings) as client:
        assert client.post("/api/datasets", json={"name": "synth", "path": "synth"}).status_code == 201
        yield client


def post_run(client, raw: str):
    return client.post("/api/runs", content=raw, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"dataset_id": 1, "config": {"overrides": {"name": "x"}}}', "profile field name"),
        ('{"dataset_id": 1, "config": {"overrides": {"aff.rw_beta": Infinity}}}', "aff.rw_beta"),
        ('{"dataset_id": 1, "config": {"overrides": {"cls_epochs": 2}}}', "did you mean cls.epochs"),  # flat name
        ('{"dataset_id": 1, "config": {"overrides": {"cls.lr": NaN}}}', "cls.lr"),
        ('{"dataset_id": 1, "config": {"overrides": {"cls.epochs": 1e100}}}', "cls.epochs"),
        ('{"dataset_id": 1, "config": {"overrides": {"cls.epochs": 100000000000000000000}}}', "cls.epochs"),
        ('{"dataset_id": 1, "config": {"overrides": {"ccgr.iters": 1000000000000}}}', "ccgr.iters"),
        (json.dumps({"dataset_id": 1, "config": {"overrides": {"seg.psp_bins": list(range(1, 100_001))}}}), "seg.psp_bins"),
        ('{"dataset_id": 1, "config": {"seed": false}}', "body.config.seed"),
        ('{"dataset_id": "1"}', "body.dataset_id"),
        ('{"dataset_id": 1, "config": {"ccgr": "yes"}}', "body.config.ccgr"),
        ('{"dataset_id": 1, "config": {"profile": 3}}', "body.config.profile"),
    ],
)
def test_bad_configs_are_422_with_one_line(client, raw, expected):
    response = post_run(client, raw)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert expected in detail and "\n" not in detail and len(detail) < 2000, detail


def test_the_profile_is_an_enum_and_ids_are_bounded_in_the_openapi_schema(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["RunConfig"]["properties"]["profile"]["enum"] == ["tiny", "paper"]
    dataset_id = schemas["RunCreate"]["properties"]["dataset_id"]
    assert (dataset_id["minimum"], dataset_id["maximum"]) == (1, 2**31 - 1) and "ge" not in dataset_id


def test_the_run_and_dataset_lists_are_paginated(client):
    ids = [client.post("/api/runs", json={"dataset_id": 1, "config": {"seed": seed}}).json()["id"]
           for seed in range(55)]
    assert [run["id"] for run in client.get("/api/runs").json()] == ids[:50]  # default limit 50
    assert [run["id"] for run in client.get("/api/runs?limit=3&offset=52").json()] == ids[52:]
    assert client.get("/api/runs?limit=0").status_code == 422
    assert client.get("/api/runs?limit=100000").status_code == 422
    assert len(client.get("/api/datasets?limit=1").json()) == 1
    assert client.get("/api/datasets?offset=1").json() == []


def test_integral_numbers_are_integers_and_405_lists_every_method(client):
    assert client.post("/api/runs", json={"dataset_id": 1.0, "config": {"seed": 212.0}}).json()["config"]["seed"] == 212
    assert client.post("/api/runs", json={"dataset_id": 1, "config": {"seed": 2.5}}).status_code == 422
    response = client.options("/api/datasets")
    assert response.status_code == 405 and set(response.headers["allow"].split(", ")) == {"GET", "POST"}
