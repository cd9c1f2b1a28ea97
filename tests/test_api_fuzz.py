"""Property-based fuzzing of the REST API against its own OpenAPI spec (schemathesis, in-process ASGI).

Every operation of ``/openapi.json`` gets a bounded, derandomized Hypothesis run (valid and invalid
inputs, ``MAX_EXAMPLES`` each) on a fresh SQLite database holding a tiny synthetic dataset, a run and
one finished round (id ``1`` of each, with a stand-in model file), with the fake stage backend and eager Celery (no worker; a
launched round runs the instant fake stages in-request). ``KNOWN`` requests then reach the success
paths that random ids miss. Every check of schemathesis (``--checks all``) applies: no 5xx, documented
status codes, content types, headers and schemas, invalid data rejected, valid data accepted, ``Allow``
on a 405, and the rest (writes carry the token; ``ignored_auth`` checks that they need it).
"""

from __future__ import annotations

import io
import zipfile

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS as CHECK_REGISTRY
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi import checks as openapi_checks  # importing it registers the OpenAPI checks

from integration import harness
from integration.review_data import add_stage_file
from services.api.app import create_app
from services.common.db import sessionmaker_for, upgrade_database
from services.common.settings import get_settings
from services.workers.celery_app import app as celery_app
from wsis_core.data.synth import generate_dataset

CHECKS = CHECK_REGISTRY.get_all()  # schemathesis's `--checks all`
TOKEN = "fuzz-token"
# Writes carry the token (``ignored_auth`` sends them without it too and expects a 401). A schema-valid request
# may still be 400: a dataset path or zip that is no usable dataset is found out only by reading it.
# A run's ``config.overrides`` holds profile fields whose constraints relate fields to each other
# (cls_min_scale <= cls_max_scale, an odd peak_window, ...): no JSON Schema says which random objects are valid,
# so schema-valid overrides may be 422 there (the 422 itself is checked: documented, one line, schema-valid).
NOT_CHECKED = {"POST /api/runs": [openapi_checks.positive_data_acceptance]}
CONFIG = SchemathesisConfig.from_dict({
    "headers": {"Authorization": f"Bearer {TOKEN}"},
    "checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]}},
})
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
MAX_EXAMPLES = 15  # per operation and mode
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
    suppress_health_check=list(HealthCheck), print_blob=False,
)


@pytest.fixture
def app(tmp_path, monkeypatch):
    """A freshly built app (own database, data and artifact roots) with dataset 1 and run 1."""
    data_root = tmp_path / "data"
    generate_dataset(data_root / "synth", n_train=4, n_val=2, size=64, seed=1)
    service_settings = harness.service_settings(monkeypatch, tmp_path, data_root, api_token=TOKEN)
    upgrade_database(service_settings.database_url)
    celery_app.conf.task_always_eager = True
    try:
        app = create_app(service_settings)
        with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            dataset = client.post("/api/datasets", json={"name": "synth", "path": "synth"})
            assert dataset.status_code == 201, dataset.text
            run = client.post("/api/runs", json={"dataset_id": dataset.json()["id"], "config": {"seed": 1}})
            assert run.status_code == 201, run.text
            launched = client.post(f"/api/runs/{run.json()['id']}/rounds")
            assert launched.status_code == 202, launched.text
            assert client.get(f"/api/rounds/{launched.json()['id']}").json()["status"] == "succeeded"
        add_stage_file(service_settings, 1, "is_train", "model", "model.pt", b"a checkpoint")  # the fake trains none
        yield app
    finally:
        celery_app.conf.task_always_eager = False
        sessionmaker_for(service_settings.database_url).kw["bind"].dispose()
        get_settings.cache_clear()


def _tagged_zip() -> bytes:
    """A one-image tagged folder (images/ + labels.csv) as a zip, for the upload route's success path."""
    image, archive = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (8, 6)).save(image, format="PNG")
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("images/a.png", image.getvalue())
        zipped.writestr("labels.csv", "image,labels\na.png,cat\n")
    return archive.getvalue()


# Requests that reach the success paths (random ids almost never exist): operation label -> Case arguments.
KNOWN = {
    "POST /api/datasets/upload": [{"body": {"name": "uploaded", "file": _tagged_zip()}, "media_type": "multipart/form-data"}],
    "POST /api/datasets": [{"body": {"name": "again", "path": "synth"}}, {"body": {"name": "synth", "path": "synth"}}],
    "GET /api/datasets/{dataset_id}": [{"path_parameters": {"dataset_id": 1}}],
    "POST /api/runs": [{"body": {"dataset_id": 1, "config": {"seed": 2, "supervision": "full"}}}],
    "GET /api/runs/{run_id}": [{"path_parameters": {"run_id": 1}}],
    # run 2: made by POST /api/runs's known case (that operation comes first); run 1 stays for the later operations
    "DELETE /api/runs/{run_id}": [{"path_parameters": {"run_id": 2}}],
    "POST /api/runs/{run_id}/rounds": [{"path_parameters": {"run_id": 1}}],
    "GET /api/runs/{run_id}/metrics": [{"path_parameters": {"run_id": 1}}],
    "GET /api/rounds/{round_id}": [{"path_parameters": {"round_id": 1}}],
    "GET /api/rounds/{round_id}/artifacts": [{"path_parameters": {"round_id": 1}}],
    "GET /api/rounds/{round_id}/pseudo-labels": [{"path_parameters": {"round_id": 1}}] + [
        {"path_parameters": {"round_id": 1}, "query": {"format": fmt}} for fmt in ("coco-polygon", "yolo")],
    "GET /api/rounds/{round_id}/overlays/{image_id}.png": [
        {"path_parameters": {"round_id": 1, "image_id": 1}}, {"path_parameters": {"round_id": 1, "image_id": 2},
                                                              "query": {"thumbnail": 32}}],
    "GET /api/rounds/{round_id}/gallery": [{"path_parameters": {"round_id": 1}, "query": {"limit": 2, "sort": "id"}}],
    "GET /api/rounds/{round_id}/quality": [{"path_parameters": {"round_id": 1}}],
    "GET /api/rounds/{round_id}/model": [{"path_parameters": {"round_id": 1}}],
    "POST /api/jobs/{job_id}/cancel": [{"path_parameters": {"job_id": 1}}],
}


def test_every_operation_conforms_to_the_openapi_spec(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [operation.label for operation in operations]
    calls: dict[str, int] = {}
    statuses: dict[str, set[int]] = {}
    failures: list[str] = []
    for operation in operations:
        for mode in MODES:
            @FUZZ_SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                calls[operation.label] = calls.get(operation.label, 0) + 1
                response = case.call_and_validate(checks=CHECKS,
                                                  excluded_checks=NOT_CHECKED.get(operation.label))
                statuses.setdefault(operation.label, set()).add(response.status_code)

            try:
                fuzz()
            except Unsatisfiable:  # no invalid request exists: the operation has no parameters and no body
                assert mode is GenerationMode.NEGATIVE and calls.get(operation.label) == 1, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure, then report them all
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
        for arguments in KNOWN.get(operation.label, []):
            try:
                response = operation.Case(**arguments).call_and_validate(
                    checks=CHECKS, headers={"Authorization": f"Bearer {TOKEN}"})
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label} {arguments}: {exc}")
            else:
                statuses.setdefault(operation.label, set()).add(response.status_code)
    print(f"fuzzed {len(operations)} operations with {sum(calls.values())} examples: {calls}; status codes: {statuses}")
    assert not failures, "\n\n".join(failures)
    assert set(calls) == {operation.label for operation in operations}
    assert set(KNOWN) <= set(calls)
    # every operation reached a 2xx, but job cancel: the seeded round has ended, so its jobs answer 409
    statuses.pop("POST /api/jobs/{job_id}/cancel")
    assert all(any(200 <= code < 300 for code in codes) for codes in statuses.values()), statuses
