"""Latency of the API's read routes under concurrent clients while a round runs, and the API's memory while it
streams a 100 MB download; on PostgreSQL + Redis, loopback only.

Setup: a fresh PostgreSQL database (``--database``, dropped and created next to ``--postgres-url``, dropped
again at the end), an empty Redis database number (flushed at the end), a synthetic dataset (``wsis synth``),
one real Celery worker and the API (uvicorn), both real processes on 127.0.0.1. Through the API it registers
the dataset, creates a run (profile ``tiny`` with the tests' small overrides) and runs round 1 to the end.
Then, while the next rounds of that run run (whenever one ends, the next is launched, so a round always runs):

1. load, one phase per ``--think-ms`` value: ``--clients`` concurrent clients (asyncio, one keep-alive HTTP/1.1
   connection each, in a process of their own) for ``--seconds`` seconds (after ``--warmup`` unrecorded seconds),
   each in a loop over a random choice of ``GET /api/runs/{id}``, ``GET /api/rounds/{id}`` (the running round),
   ``GET /api/runs/{id}/metrics`` and ``GET /api/rounds/{id}/pseudo-labels`` (round 1's file), pausing
   ``--think-ms`` on average (exponential) between two requests; per route: count, p50, p99, max latency and
   errors (anything but a 200, or a transport error);
2. memory: a ~``--download-mb`` MB pseudo-label file registered like a worker does it (a Job claimed with
   ``jobs.start``, the file described by ``store.describe``, recorded by ``jobs.finish``) on a round of a second
   run, downloaded ``--download-clients`` times concurrently, ``--download-repeats`` times in a row, while the
   RSS of the API process (and its children) is sampled every 20 ms: RSS before / peak / after.

The stages are the real ones (``wsis_core.rounds``); ``--stage-backend integration.fake_rounds`` (the tests'
instant fake) is for trying the script: its rounds end at once, so it can fail to catch one running.

    PYTHONPATH=. .venv/bin/python bench/api_load.py --clients 50 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
sys.path[:0] = [str(REPO), str(TESTS)]  # services, wsis_core; tiny_overrides and the fake backend from tests/

from services.dev import wait_until_ready  # noqa: E402

ROUND_TIMEOUT_S = 1800
MB = 1 << 20


# ---------------------------------------------------------------- services


@contextmanager
def fresh_postgres_database(admin_url: str, name: str, keep: bool) -> Iterator[str]:
    """``name`` dropped (if it exists) and created next to ``admin_url``; dropped again afterwards unless ``keep``."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def empty_redis_database(url: str) -> Iterator[str]:
    """URL of the first empty Redis database number from 1 up (the tests take theirs from 15 down); flushed after."""
    import redis

    number = next((n for n in range(1, 16) if redis.Redis.from_url(f"{url}/{n}").dbsize() == 0), None)
    if number is None:
        sys.exit("no empty Redis database number (1-15)")
    try:
        yield f"{url}/{number}"
    finally:
        redis.Redis.from_url(f"{url}/{number}").flushdb()


def start_processes(env: dict[str, str], port: int, api_workers: int, worker_threads: int | None,
                    worker_nice: int, logs: Path) -> tuple[subprocess.Popen, subprocess.Popen]:
    """One Celery worker (queues cpu and gpu, solo pool, at niceness ``worker_nice``) and uvicorn on ``port``."""
    worker_env = {**env, "WSIS_WORKER_READY_FILE": str(logs / "worker.ready")}
    if worker_threads:
        worker_env.update(OMP_NUM_THREADS=str(worker_threads), MKL_NUM_THREADS=str(worker_threads))
    worker = subprocess.Popen(
        ["nice", "-n", str(worker_nice), sys.executable, "-m", "celery", "-A", "services.workers.celery_app",
         "worker", "-Q", "cpu,gpu", "--pool", "solo", "--loglevel", "info", "--without-gossip", "--without-mingle",
         "--without-heartbeat"],
        cwd=REPO, env=worker_env, stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "services.api.app:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(api_workers), "--no-access-log", "--log-level", "warning"],
        cwd=REPO, env=env, stdout=open(logs / "api.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    return api, worker


def wait_ready(url: str, processes: tuple[subprocess.Popen, ...], ready_file: Path) -> None:
    try:
        wait_until_ready(url, processes, ready_file)
    except RuntimeError as exc:
        sys.exit(f"{exc} (see the logs in the work folder, --keep)")


def stop(processes: tuple[subprocess.Popen, ...], timeout_s: float = 30) -> None:
    """SIGTERM to each process group, SIGKILL after ``timeout_s``."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_round(client: httpx.Client, round_id: int, until: tuple[str, ...], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/api/rounds/{round_id}").json()
        if body["status"] in until or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


# ---------------------------------------------------------------- the 100 MB artifact


def big_pseudo_labels(path: Path, size_mb: int) -> None:
    """A valid COCO file of about ``size_mb`` MB (one image, long RLE strings), written atomically."""
    rng = random.Random(0)
    alphabet = "0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz"
    counts = "".join(rng.choice(alphabet) for _ in range(4000))
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w") as handle:
        handle.write('{"images": [{"id": 1, "file_name": "1.jpg", "width": 4000, "height": 4000}], '
                     '"categories": [{"id": 1, "name": "object"}], "annotations": [')
        written, index = 0, 0
        while written < size_mb * MB:
            index += 1
            text = json.dumps({"id": index, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
                               "iscrowd": 0, "segmentation": {"size": [4000, 4000], "counts": counts}})
            handle.write(("," if index > 1 else "") + text)
            written += len(text) + 1
        handle.write("]}")
    tmp.rename(path)


def register_big_artifact(database_url: str, artifact_root: Path, run_id: int, size_mb: int) -> int:
    """Round 1 of run ``run_id`` with one ``pseudo_labels`` job, recorded the way a worker records a stage."""
    from services.common import jobs, store
    from services.common.db import session_scope
    from services.common.models import Job, Round

    with session_scope(database_url) as session:
        round_ = Round(run_id=run_id, number=1, jobs=[Job(stage="pseudo_labels", position=0, queue="cpu")])
        session.add(round_)
        session.flush()
        round_id, job_id = round_.id, round_.jobs[0].id
    with session_scope(database_url) as session:
        ctx = jobs.start(session, job_id, None, "bench: a large pseudo-label file", lease_s=3600)
    assert isinstance(ctx, jobs.JobContext), ctx
    path = store.run_dir(artifact_root, run_id) / "round_1" / "pseudo_labels.json"
    big_pseudo_labels(path, size_mb)
    record = store.describe(artifact_root, "pseudo_labels", path)
    with session_scope(database_url) as session:
        jobs.finish(session, ctx, [record], {})
    return round_id


# ---------------------------------------------------------------- measurements


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (uvicorn ``--workers``), from /proc."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants that are alive (from /proc/<pid>/stat)."""
    total, stack = 0.0, [pid]
    ticks = os.sysconf("SC_CLK_TCK")
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class RssSampler:
    """Samples ``rss_bytes(pid)`` every ``interval_s`` in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.02):
        self.pid, self.interval_s, self.samples = pid, interval_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_bytes(self.pid))
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# ---------------------------------------------------------------- load clients (their own process)


def run_clients(base_url: str, paths: dict[str, str], clients: int, seconds: float, warmup: float,
                think_ms: float, seed: int) -> dict:
    """``clients`` asyncio tasks, one keep-alive connection each; returns latencies (s) and errors per route."""
    return asyncio.run(_clients(base_url, paths, clients, seconds, warmup, think_ms, seed))


class Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams: a few microseconds of client CPU per request
    (an httpx.AsyncClient with 50 connections costs several milliseconds, as much as the API itself)."""

    def __init__(self, host: str, port: int):
        self.host, self.port, self.reader, self.writer = host, port, None, None

    async def get(self, path: str) -> int:
        """Send ``GET path``, read the whole answer; returns the status code (reconnects when the server closed)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        if headers.get("connection") == "close":
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _clients(base_url, paths, clients, seconds, warmup, think_ms, seed) -> dict:
    latencies: dict[str, list[float]] = {route: [] for route in paths}
    errors: dict[str, dict[str, int]] = {route: {} for route in paths}
    address = httpx.URL(base_url)
    start = time.perf_counter()
    record_from, end = start + warmup, start + warmup + seconds

    async def one_client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        routes = list(paths)
        connection = Connection(address.host, address.port)
        while True:
            route = rng.choice(routes)
            began = time.perf_counter()
            if began >= end:
                connection.close()
                return
            try:
                status = await asyncio.wait_for(connection.get(paths[route]), timeout=60)
                outcome = None if status == 200 else f"HTTP {status}"
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
                connection.close()
                outcome = type(exc).__name__
            done = time.perf_counter()
            if began >= record_from:
                latencies[route].append(done - began)
                if outcome is not None:
                    errors[route][outcome] = errors[route].get(outcome, 0) + 1
            if think_ms:
                await asyncio.sleep(rng.expovariate(1000 / think_ms))

    cpu_before = time.process_time()
    await asyncio.gather(*(one_client(i) for i in range(clients)))
    wall = time.perf_counter() - record_from
    return {"latencies": latencies, "errors": errors, "wall_s": wall,
            "client_cpu_s": time.process_time() - cpu_before}


def download(url: str, chunk: int = MB) -> tuple[float, int, str, str]:
    """Stream ``url`` into a sha256; returns (seconds, bytes, sha256, ETag)."""
    digest, size = hashlib.sha256(), 0
    began = time.perf_counter()
    with httpx.stream("GET", url, timeout=120) as response:
        response.raise_for_status()
        for block in response.iter_bytes(chunk):
            digest.update(block)
            size += len(block)
        etag = response.headers.get("etag", "")
    return time.perf_counter() - began, size, digest.hexdigest(), etag.strip('"')


# ---------------------------------------------------------------- main


class RoundKeeper:
    """Keeps a round of run ``run_id`` running: launches the next round whenever the latest one succeeded.

    Polls once a second (unmeasured requests); ``stages`` collects the stages seen running, ``rounds`` the
    rounds launched, ``problem`` a round that failed or was cancelled (the keeper then stops).
    """

    def __init__(self, url: str, headers: dict[str, str], run_id: int):
        self.http = httpx.Client(base_url=url, headers=headers, timeout=60)
        self.run_id, self.rounds, self.stages, self.problem = run_id, [], [], None
        self.latest: dict | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        try:
            self._keep()
        except httpx.HTTPError as exc:
            self.problem = f"the keeper's request failed: {type(exc).__name__}: {exc}"

    def _keep(self) -> None:
        while not self._stop.is_set():
            latest = self.http.get(f"/api/runs/{self.run_id}").json()["rounds"][-1]
            if latest["status"] == "succeeded":
                launched = self.http.post(f"/api/runs/{self.run_id}/rounds").json()
                self.rounds.append(launched["number"])
                latest = launched
            elif latest["status"] in ("failed", "cancelled"):
                self.problem = f"round {latest['number']} {latest['status']}"
                return
            self.latest = self.http.get(f"/api/rounds/{latest['id']}").json()
            for job in self.latest["jobs"]:
                label = f"{latest['number']}:{job['stage']}"
                if job["status"] == "running" and label not in self.stages:
                    self.stages.append(label)
            self._stop.wait(1)

    def running_round_id(self, timeout_s: float = 120) -> int:
        """Id of the running round (after ``timeout_s`` without one: of the latest round, with a warning)."""
        deadline = time.monotonic() + timeout_s
        while self.latest is None or self.latest["status"] != "running":
            if self.problem:
                sys.exit(f"no round is running: {self.problem}")
            if self.latest is not None and time.monotonic() > deadline:
                print(f"warning: no round running; round {self.latest['number']} is {self.latest['status']}")
                break
            time.sleep(0.2)
        return self.latest["id"]

    def cancel(self) -> None:
        """Stop launching, and cancel the running job (its stage stops at its next progress report)."""
        self._stop.set()
        self._thread.join()
        latest = self.http.get(f"/api/runs/{self.run_id}").json()["rounds"][-1]
        for job in self.http.get(f"/api/rounds/{latest['id']}").json()["jobs"]:
            if job["status"] in ("queued", "running"):
                self.http.post(f"/api/jobs/{job['id']}/cancel")
                break
        self.http.close()

    def __enter__(self) -> RoundKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


def load_phase(url: str, paths: dict[str, str], args, think_ms: float, api_pid: int, worker_pid: int) -> dict:
    """One load phase in a process of its own, with the CPU seconds of the API and of the worker meanwhile."""
    print(f"load: {args.clients} clients x {args.seconds:g} s, think time {think_ms:g} ms", flush=True)
    load_before, api_cpu, worker_cpu = os.getloadavg(), cpu_seconds(api_pid), cpu_seconds(worker_pid)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        load = pool.apply(run_clients, (url, paths, args.clients, args.seconds, args.warmup, think_ms, args.seed))
    phase = summarize(load)
    phase.update(think_ms=think_ms, load_before=[round(x, 2) for x in load_before],
                 load_after=[round(x, 2) for x in os.getloadavg()],
                 api_cpu_s=round(cpu_seconds(api_pid) - api_cpu, 1),
                 worker_cpu_s=round(cpu_seconds(worker_pid) - worker_cpu, 1),
                 api_rss_mb=round(rss_bytes(api_pid) / MB, 1))
    return phase


def memory_phase(big_url: str, args, api_pid: int) -> dict:
    """``--download-repeats`` x ``--download-clients`` concurrent downloads of the big file, RSS sampled meanwhile."""
    print(f"memory: {args.download_repeats} x {args.download_clients} concurrent downloads of {args.download_mb} MB",
          flush=True)
    with RssSampler(api_pid) as sampler:
        time.sleep(1)
        idle = len(sampler.samples)
        results = []
        for _ in range(args.download_repeats):
            with ThreadPoolExecutor(args.download_clients) as threads:
                results += list(threads.map(download, [big_url] * args.download_clients))
        busy = len(sampler.samples)
        time.sleep(2)
    samples = sampler.samples
    return {
        "file_mb": round(max(size for _, size, _, _ in results) / MB, 1),
        "downloads": len(results), "concurrent": args.download_clients,
        "intact": all(digest == etag for _, _, digest, etag in results),
        "seconds_each_max": round(max(seconds for seconds, _, _, _ in results), 2),
        "rss_before_mb": round(max(samples[:idle]) / MB, 1),
        "rss_peak_mb": round(max(samples[idle:busy]) / MB, 1),
        "rss_after_mb": round(samples[-1] / MB, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=3, help="unrecorded seconds of load before --seconds")
    parser.add_argument("--think-ms", default="500,0",
                        help="mean pause of a client between two requests, one load phase per comma-separated value: "
                             "500 is about a status page each (it polls every 2 s), 0 a closed loop (the capacity)")
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn --workers")
    parser.add_argument("--worker-threads", type=int, default=1,
                        help="OMP/MKL threads of the Celery worker's torch (0: torch's default, every core)")
    parser.add_argument("--worker-nice", type=int, default=0,
                        help="niceness of the Celery worker (10: the API's requests go before the stages' computing)")
    parser.add_argument("--download-mb", type=int, default=100)
    parser.add_argument("--download-clients", type=int, default=4)
    parser.add_argument("--download-repeats", type=int, default=3)
    parser.add_argument("--train", type=int, default=40, help="training images of the synthetic dataset")
    parser.add_argument("--val", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="image size of the synthetic dataset")
    parser.add_argument("--stage-backend", default="wsis_core.rounds")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a database of the server to create --database next to")
    parser.add_argument("--database", default="wsis_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the database")
    args = parser.parse_args()
    think_times = [float(value) for value in args.think_ms.split(",")]

    from tiny_overrides import TINY_OVERRIDES
    from wsis_core.data.synth import generate_dataset

    work = Path(tempfile.mkdtemp(prefix="wsis_api_load_"))
    url = f"http://127.0.0.1:{args.port}"
    token = secrets.token_urlsafe(16)
    report: dict = {"args": vars(args) | {"json": str(args.json)}, "cpus": os.cpu_count(),
                    "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    with fresh_postgres_database(args.postgres_url, args.database, args.keep) as database_url, \
            empty_redis_database(args.redis_url) as redis_url:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]),
               "WSIS_DATABASE_URL": database_url, "WSIS_BROKER_URL": redis_url, "WSIS_RESULT_BACKEND": redis_url,
               "WSIS_DATA_ROOT": str(work / "data"), "WSIS_ARTIFACT_ROOT": str(work / "artifacts"),
               "WSIS_STAGE_BACKEND": args.stage_backend, "WSIS_API_TOKEN": token}
        os.environ.update({k: v for k, v in env.items() if k.startswith("WSIS_")})
        from services.common.db import upgrade_database
        from services.common.settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        upgrade_database(database_url)
        generate_dataset(work / "data" / "synth", n_train=args.train, n_val=args.val, size=args.size,
                         seed=args.seed)
        print(f"work folder {work}; database {database_url}; broker {redis_url}", flush=True)
        processes = start_processes(env, args.port, args.api_workers, args.worker_threads, args.worker_nice, work)
        api, worker = processes
        try:
            wait_ready(url, processes, work / "worker.ready")
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                dataset = http.post("/api/datasets", json={"name": "synth", "path": "synth"}).json()
                config = {"profile": "tiny", "overrides": TINY_OVERRIDES, "seed": args.seed}
                run = http.post("/api/runs", json={"dataset_id": dataset["id"], "config": config}).json()
                began = time.monotonic()
                round1 = http.post(f"/api/runs/{run['id']}/rounds").json()
                round1 = wait_round(http, round1["id"], ("succeeded", "failed", "cancelled"), ROUND_TIMEOUT_S)
                if round1["status"] != "succeeded":
                    sys.exit(f"round 1 {round1['status']}: {[job['error'] for job in round1['jobs'] if job['error']]}")
                report["round1_s"] = round(time.monotonic() - began, 1)
                print(f"round 1 succeeded in {report['round1_s']} s", flush=True)
                big_run = http.post("/api/runs", json={"dataset_id": dataset["id"], "config": config}).json()
                big_round = register_big_artifact(database_url, settings.artifact_root, big_run["id"],
                                                  args.download_mb)
                report["pseudo_labels_bytes"] = len(http.get(f"/api/rounds/{round1['id']}/pseudo-labels").content)
            with RoundKeeper(url, headers, run["id"]) as keeper:
                report["phases"] = []
                for think_ms in think_times:
                    paths = {"run": f"/api/runs/{run['id']}", "round": f"/api/rounds/{keeper.running_round_id()}",
                             "metrics": f"/api/runs/{run['id']}/metrics",
                             "pseudo_labels": f"/api/rounds/{round1['id']}/pseudo-labels"}
                    report["phases"].append(load_phase(url, paths, args, think_ms, api.pid, worker.pid))
                    report["phases"][-1]["paths"] = paths
                keeper.running_round_id()
                report["download"] = memory_phase(f"{url}/api/rounds/{big_round}/pseudo-labels", args, api.pid)
                report["rounds_launched"], report["stages_running"] = keeper.rounds, keeper.stages
                report["round_problem"] = keeper.problem
        finally:
            stop(processes)
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def summarize(load: dict) -> dict:
    routes = {}
    for route, values in load["latencies"].items():
        routes[route] = {
            "count": len(values),
            "p50_ms": round(1000 * statistics.median(values), 1) if values else None,
            "p99_ms": round(1000 * percentile(values, 99), 1) if values else None,
            "max_ms": round(1000 * max(values), 1) if values else None,
            "errors": sum(load["errors"][route].values()), "error_kinds": load["errors"][route],
        }
    total = sum(r["count"] for r in routes.values())
    return {"routes": routes, "requests": total, "rps": round(total / load["wall_s"], 1),
            "wall_s": round(load["wall_s"], 1), "client_cpu_s": round(load["client_cpu_s"], 1)}


def print_report(report: dict) -> None:
    print(f"\n{report['date']}, {report['cpus']} CPUs; round 1 took {report['round1_s']} s; pseudo-label file "
          f"{report['pseudo_labels_bytes']} bytes. Rounds running during the measurements: "
          f"{report['rounds_launched']}; stages seen running: {', '.join(report['stages_running'])}"
          + (f"; {report['round_problem']}" if report["round_problem"] else ""))
    for phase in report["phases"]:
        print(f"\nthink time {phase['think_ms']:g} ms: {phase['requests']} requests in {phase['wall_s']} s = "
              f"{phase['rps']} req/s; load average before {phase['load_before']}, after {phase['load_after']}; "
              f"CPU seconds: API {phase['api_cpu_s']}, worker {phase['worker_cpu_s']}, clients "
              f"{phase['client_cpu_s']}; API RSS {phase['api_rss_mb']} MB\n")
        print("| route | count | p50 ms | p99 ms | max ms | errors |\n|---|---|---|---|---|---|")
        for route, row in phase["routes"].items():
            kinds = f" ({row['error_kinds']})" if row["errors"] else ""
            print(f"| {route} | {row['count']} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} | "
                  f"{row['errors']}{kinds} |")
    d = report["download"]
    print(f"\n{d['downloads']} downloads of {d['file_mb']} MB, {d['concurrent']} at a time (intact: {d['intact']}, "
          f"slowest {d['seconds_each_max']} s); API RSS before {d['rss_before_mb']} MB, peak {d['rss_peak_mb']} MB, "
          f"after {d['rss_after_mb']} MB")


if __name__ == "__main__":
    main()
