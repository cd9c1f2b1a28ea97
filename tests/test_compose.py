"""docker-compose.yml and the Dockerfile (issue 20, item 6): an object store and its settings, no GPU needed by
default, separate scratch per worker, dependencies installed before the code is copied."""

from __future__ import annotations

import yaml

from integration import harness


def test_compose_runs_without_gpus_and_keeps_the_gpu_reservation_under_a_profile():
    services = yaml.safe_load((harness.REPO / "docker-compose.yml").read_text())["services"]
    assert "seaweedfs" in services
    worker = services["worker"]
    assert "deploy" not in worker and "profiles" not in worker  # `docker compose up` on a host without GPUs
    assert worker["environment"]["WSIS_ARTIFACT_URL"].startswith("s3://")
    assert worker["environment"]["WSIS_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert not any(v.startswith("artifacts:") for v in worker.get("volumes", []))  # no shared artifact folder
    assert services["gpu-worker"]["profiles"] == ["gpu"]
    assert services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "--concurrency" in services["cpu-worker"]["command"]
    assert "api/datasets" in services["demo"]["command"][0] and "Authorization" in services["demo"]["command"][0]


def test_the_image_installs_dependencies_before_copying_the_code():
    lines = (harness.REPO / "Dockerfile").read_text().splitlines()
    install = next(i for i, line in enumerate(lines) if "pip install ." in line)
    code = next(i for i, line in enumerate(lines) if line.startswith("COPY wsis_core"))
    assert install < code
