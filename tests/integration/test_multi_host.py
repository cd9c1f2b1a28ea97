"""Workers on several hosts (issue 20): a real S3 server (SeaweedFS on loopback), PostgreSQL, Redis and two workers
with separate scratch folders and no shared folder. A round of the ``tiny`` profile completes; in the next round
the worker running a stage is killed -9 mid-stage and the other one finishes the round; every artifact is in the
bucket once, with its row's sha256.

Skipped when a server is unreachable, except under ``CI=true`` where that is a failure. The per-stage timings are
printed (and written to ``$WSIS_SCALING_TIMINGS`` when set): docs/scaling.md's table comes from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import datetime

from sqlalchemy import select

from integration import harness
from services.common.db import session_scope
from services.common.models import Artifact
from tiny_overrides import TINY_OVERRIDES
from wsis_core.data.synth import generate_dataset

LEASE_S = 3  # a killed worker's job is queued again within seconds
KILLED_STAGE = "is_train"  # long enough on CPU to be caught running
ARTIFACTS, DATA = "wsis-artifacts", "wsis-data"
CONFIG = {"profile": "tiny", "overrides": TINY_OVERRIDES}


def upload_folder(client, folder, bucket: str, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def bucket_objects(client, bucket: str) -> dict[str, str]:
    """Key -> sha256 metadata of every object of the bucket."""
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {key: client.head_object(Bucket=bucket, Key=key)["Metadata"].get("sha256") for key in keys}


def expected_sha256(objects: dict[str, str], key: str) -> str | None:
    """The sha256 an Artifact row of ``key`` must hold: the object's, or for a folder the hash of its sorted
    ``relative-path NUL file-sha256`` lines (services.common.store.describe)."""
    if key in objects:
        return objects[key]
    inside = sorted((k[len(key) + 1:], sha) for k, sha in objects.items() if k.startswith(key + "/"))
    if not inside:
        return None
    return hashlib.sha256("".join(f"{name}\0{sha}\n" for name, sha in inside).encode()).hexdigest()


def worker_running(logs, task_id: str) -> int:
    """Index of the worker whose log received ``task_id``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for index, log in enumerate(logs):
            if log.exists() and task_id in log.read_text(errors="replace"):
                return index
        time.sleep(0.2)
    raise AssertionError(f"no worker log names task {task_id}")


def stage_seconds(round_: dict) -> dict[str, float]:
    return {job["stage"]: (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"]))
            .total_seconds() for job in round_["jobs"]}


def test_two_workers_without_a_shared_folder_finish_rounds_and_survive_a_kill(tmp_path, monkeypatch):
    with harness.seaweedfs_s3(tmp_path / "seaweedfs") as endpoint, harness.live_service_urls() as urls:
        s3 = harness.s3_client(endpoint)
        for bucket in (ARTIFACTS, DATA):
            s3.create_bucket(Bucket=bucket)
        generate_dataset(tmp_path / "dataset", n_train=6, n_val=2, size=64, seed=5)
        upload_folder(s3, tmp_path / "dataset", DATA, "datasets/tiny")
        for name, value in {"AWS_ACCESS_KEY_ID": harness.S3_KEY, "AWS_SECRET_ACCESS_KEY": harness.S3_SECRET,
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        settings = harness.service_settings(
            monkeypatch, tmp_path, tmp_path / "no-data", stage_backend="wsis_core.rounds", job_lease_s=str(LEASE_S),
            artifact_url=f"s3://{ARTIFACTS}/store", s3_endpoint_url=endpoint, data_url=f"s3://{DATA}/datasets",
            scratch=str(tmp_path / "api-scratch"), **urls)
        hosts = [settings.model_copy(update={"scratch": tmp_path / f"host{i}-scratch"}) for i in (1, 2)]
        logs = [tmp_path / f"host{i}.log" for i in (1, 2)]
        with harness.api_client(settings) as client, harness.celery_worker(hosts[0], logs[0], name="host1") as one, \
                harness.celery_worker(hosts[1], logs[1], name="host2") as two:
            dataset = client.post("/api/datasets", json={"name": "tiny", "path": f"s3://{DATA}/datasets/tiny"})
            assert dataset.status_code == 201, dataset.text
            run = client.post("/api/runs", json={"dataset_id": dataset.json()["id"], "config": CONFIG}).json()
            first = harness.wait_for_round(client, client.post(f"/api/runs/{run['id']}/rounds").json()["id"], 900)
            assert first["status"] == "succeeded", "\n".join(map(harness.log_tail, logs))

            second_id = client.post(f"/api/runs/{run['id']}/rounds").json()["id"]
            job = harness.wait_for_job(client, second_id, KILLED_STAGE,
                                       lambda j: j["status"] == "running" and j["progress"] > 0, timeout_s=900)
            victim = worker_running(logs, job["celery_task_id"])
            (one, two)[victim].kill()  # SIGKILL mid-stage: that host is gone
            (one, two)[victim].wait()
            second = harness.wait_for_round(client, second_id, 900)
            assert second["status"] == "succeeded", "\n".join(map(harness.log_tail, logs))
            model = client.get(f"/api/rounds/{second_id}/model")
            storage = client.get(f"/api/runs/{run['id']}").json()["storage_bytes"]
        with session_scope(settings.database_url) as session:
            rows = session.execute(select(Artifact.path, Artifact.sha256, Artifact.size)).all()
        objects = bucket_objects(s3, ARTIFACTS)
        bucket_bytes = sum(o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=ARTIFACTS)
                           for o in page.get("Contents", []))

    assert {job["stage"]: job["attempts"] for job in second["jobs"]}[KILLED_STAGE] == 2
    assert model.status_code == 200 and model.headers["etag"].strip('"') == hashlib.sha256(model.content).hexdigest()
    assert not settings.artifact_root.exists()  # no shared folder: every file went through the bucket
    assert rows and storage == sum(row.size for row in rows)
    for path, sha256, _size in rows:
        assert expected_sha256(objects, f"store/{path}") == sha256, path
    assert len(objects) == len(set(objects)) and not [k for k in objects if k.endswith(".part")]
    timings = {"round_1": stage_seconds(first), "round_2_with_kill": stage_seconds(second),
               "killed_worker": f"host{victim + 1}", "objects": len(objects),
               "bucket_mb": round(bucket_bytes / 2**20, 1)}
    print(json.dumps(timings, indent=1))
    if os.environ.get("WSIS_SCALING_TIMINGS"):
        with open(os.environ["WSIS_SCALING_TIMINGS"], "w") as handle:
            json.dump(timings, handle, indent=1)
