"""End to end on PostgreSQL (127.0.0.1:5432, a throwaway database) and Redis (127.0.0.1:6379) with a real worker.

Skipped when a service is unreachable, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

from pycocotools.coco import COCO

from integration import harness
from tiny_overrides import TINY_OVERRIDES
from wsis_core.data.synth import generate_dataset

STAGE_BACKEND = "wsis_core.rounds"  # the real stages
CONFIG = {"profile": "tiny", "overrides": TINY_OVERRIDES}
REPORTED_METRICS = ("mAP_r@0.25", "mAP_r@0.5", "mAP_b@0.5")


def test_a_round_on_postgres_and_redis_with_a_real_worker(tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    generate_dataset(data_root / "tiny", n_train=10, n_val=4, size=64, seed=5)
    log = tmp_path / "worker.log"
    with harness.live_service_urls() as urls:
        settings = harness.service_settings(monkeypatch, tmp_path, data_root, stage_backend=STAGE_BACKEND, **urls)
        with harness.api_client(settings) as client, harness.celery_worker(settings, log):
            assert client.get("/api/health").json() == {"status": "ok", "database": "ok", "broker": "ok"}
            dataset = client.post("/api/datasets", json={"name": "tiny", "path": "tiny"}).json()
            assert dataset["num_train_images"] == 10
            run = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": CONFIG}).json()
            launched = client.post(f"/api/runs/{run['id']}/rounds")
            assert launched.status_code == 202
            round_ = harness.wait_for_round(client, launched.json()["id"], timeout_s=900)
            assert round_["status"] == "succeeded", harness.log_tail(log)
            labels = client.get(f"/api/rounds/{round_['id']}/pseudo-labels")
            metrics = client.get(f"/api/runs/{run['id']}/metrics").json()
    assert labels.status_code == 200
    (tmp_path / "pseudo_labels.json").write_bytes(labels.content)
    coco = COCO(str(tmp_path / "pseudo_labels.json"))
    assert len(coco.getImgIds()) == 10
    assert [(row["round"], row["split"]) for row in metrics] == [(1, "val")]
    for name in REPORTED_METRICS:
        assert metrics[0][name] is None or 0 <= metrics[0][name] <= 100
