"""The three figures of issue 19's "Done means", measured on real processes: the embedded default (SQLite
database and broker) and PostgreSQL + Redis; loopback only.

1. **Body limit.** ``GET /api/health`` latency (p50, max) while a client posts a ``--body-mb`` MB JSON body
   (one object of many keys, like the issue's) to ``POST /api/runs`` back to back for ``--post-seconds``, in
   four ways: without and with the token, with a ``Content-Length`` and chunked. Also the status and time of
   the posts and the API's RSS before / at its peak / after. Baseline: the same health requests alone.
2. **Cancel to idle.** A run whose profile asks for the largest ``cls.epochs`` allowed (1000; the issue's
   1,000,000 is now refused with 422) on a small synthetic dataset, real worker and real stages: once its
   ``cues`` stage has trained for ``--cancel-after-s`` seconds, ``POST /api/jobs/{id}/cancel`` and at once
   ``POST /api/runs/{id}/rounds`` (the retry is queued behind the cancelled stage); the figure is the seconds
   from the cancel to the retried ``cues`` job running, i.e. the worker idle again. ``--cancel-trials`` times.
3. **Concurrent retries.** A round that failed (its first training image was overwritten with garbage after
   registration; the real ``cues`` stage fails on it), the worker stopped, then ``--retries`` concurrent
   ``POST /api/runs/{id}/rounds``: how many were accepted (202). Then the retried round is cancelled and the
   same is done again, ``--retry-trials`` trials in all (the first on the failed round, the next on the
   cancelled one: the API retries both alike).

Writes ``bench/results/security_probe.md`` (``--out``) with the numbers and this command line:

    PYTHONPATH=. .venv/bin/python bench/security_probe.py --postgres-url postgresql://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/9
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_load import REPO, TESTS, fresh_postgres_database, rss_bytes, stop, wait_round  # noqa: E402
from services.dev import wait_until_ready  # noqa: E402

ENDED = ("succeeded", "failed", "cancelled")
MB = 1 << 20


# ---------------------------------------------------------------- services


@contextmanager
def backend_urls(backend: str, work: Path, args) -> Iterator[dict[str, str]]:
    """``WSIS_*`` URLs of ``backend``: ``embedded`` (SQLite files in ``work``) or ``postgres`` (a fresh database
    next to ``--postgres-url`` and the empty Redis database ``--redis-url``, flushed afterwards)."""
    if backend == "embedded":
        yield {"WSIS_DATABASE_URL": f"sqlite:///{work}/wsis.sqlite",
               "WSIS_BROKER_URL": f"sqla+sqlite:///{work}/broker.sqlite",
               "WSIS_RESULT_BACKEND": f"db+sqlite:///{work}/results.sqlite"}
        return
    import redis

    broker = redis.Redis.from_url(args.redis_url)
    if broker.dbsize():
        sys.exit(f"{args.redis_url} is not empty: name an empty Redis database")
    with fresh_postgres_database(args.postgres_url, args.database, keep=False) as database_url:
        try:
            yield {"WSIS_DATABASE_URL": database_url, "WSIS_BROKER_URL": args.redis_url,
                   "WSIS_RESULT_BACKEND": args.redis_url}
        finally:
            broker.flushdb()


def start_api(env: dict[str, str], port: int, work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "services.api.app:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=REPO, env=env, stdout=open(work / "api.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def start_worker(env: dict[str, str], work: Path) -> subprocess.Popen:
    """One Celery worker, real stages, torch on one thread; touches ``worker.ready`` once it consumes."""
    (work / "worker.ready").unlink(missing_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "services.workers.celery_app", "worker", "-Q", "cpu,gpu", "--pool",
         "solo", "--loglevel", "info", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=REPO, env={**env, "WSIS_WORKER_READY_FILE": str(work / "worker.ready"), "OMP_NUM_THREADS": "1",
                       "MKL_NUM_THREADS": "1"},
        stdout=open(work / "worker.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)


# ---------------------------------------------------------------- 1. body limit


def big_json(megabytes: int) -> bytes:
    """One JSON object of ~``megabytes`` MB made of 100-byte members (every key distinct)."""
    members = (megabytes * MB) // 100
    return ("{" + ",".join(f'"k{i:09d}": "{"x" * 84}"' for i in range(members)) + "}").encode()


def health_latencies(url: str, stop_at: threading.Event | None, count: int, pause_s: float) -> list[float]:
    """Seconds of ``count`` health requests ``pause_s`` apart (or until ``stop_at`` is set)."""
    samples = []
    with httpx.Client(base_url=url, timeout=60) as client:
        while len(samples) < count and not (stop_at is not None and stop_at.is_set()):
            began = time.perf_counter()
            client.get("/api/health").raise_for_status()
            samples.append(time.perf_counter() - began)
            time.sleep(pause_s)
    return samples


def post_big_bodies(url: str, body: bytes, headers: dict[str, str], chunked: bool, seconds: float) -> dict:
    """Post ``body`` back to back for ``seconds``; statuses (or transport errors) and seconds per post."""
    outcomes, durations = {}, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        content = (body[i:i + 65536] for i in range(0, len(body), 65536)) if chunked else body
        began = time.perf_counter()
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                response = client.post("/api/runs", content=content,
                                       headers={**headers, "Content-Type": "application/json"})
            outcome = f"{response.status_code} ({len(response.content)} B)"
        except httpx.TransportError as exc:
            outcome = f"closed: {type(exc).__name__}"
        durations.append(time.perf_counter() - began)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {"outcomes": outcomes, "posts": len(durations), "post_p50_s": statistics.median(durations),
            "post_max_s": max(durations)}


def body_limit(url: str, token: str, api_pid: int, args) -> dict:
    body = big_json(args.body_mb)
    baseline = health_latencies(url, None, 100, 0.02)
    rows = []
    for auth in (False, True):
        for chunked in (False, True):
            headers = {"Authorization": f"Bearer {token}"} if auth else {}
            rss_before, peak = rss_bytes(api_pid), [0]
            done = threading.Event()

            def sample_rss() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], rss_bytes(api_pid))
                    time.sleep(0.02)

            with ThreadPoolExecutor(3) as pool:
                pool.submit(sample_rss)
                poster = pool.submit(post_big_bodies, url, body, headers, chunked, args.post_seconds)
                health = pool.submit(health_latencies, url, done, 10**9, 0.02)
                posts = poster.result()
                done.set()
                latencies = health.result()
            rows.append({"token": auth, "chunked": chunked, **posts, "health_n": len(latencies),
                         "health_p50_ms": 1000 * statistics.median(latencies),
                         "health_max_ms": 1000 * max(latencies),
                         "rss_mb": (rss_before / MB, peak[0] / MB, rss_bytes(api_pid) / MB)})
    return {"body_mb": len(body) / MB, "baseline_p50_ms": 1000 * statistics.median(baseline),
            "baseline_max_ms": 1000 * max(baseline), "rows": rows}


# ---------------------------------------------------------------- 2. cancel to idle


def wait_job(client: httpx.Client, round_id: int, stage: str, until, timeout_s: float, poll_s: float = 0.05) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = next(j for j in client.get(f"/api/rounds/{round_id}").json()["jobs"] if j["stage"] == stage)
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {stage} of round {round_id} never got there: {job}")
        time.sleep(poll_s)


def cancel_to_idle(client: httpx.Client, dataset_id: int, args) -> dict:
    from tiny_overrides import TINY_OVERRIDES

    config = {"profile": "tiny", "overrides": {**TINY_OVERRIDES, "cls.epochs": 1000}}
    refused = client.post("/api/runs", json={"dataset_id": dataset_id,
                                             "config": {"overrides": {"cls.epochs": 1_000_000}}})
    run = client.post("/api/runs", json={"dataset_id": dataset_id, "config": config}).json()
    round_ = client.post(f"/api/runs/{run['id']}/rounds").json()
    seconds = []
    for _trial in range(args.cancel_trials):
        cues = wait_job(client, round_["id"], "cues", lambda j: j["status"] == "running" and j["progress"] > 0, 600)
        time.sleep(args.cancel_after_s)
        progress = wait_job(client, round_["id"], "cues", lambda _j: True, 5)["progress"]
        began = time.monotonic()
        assert client.post(f"/api/jobs/{cues['id']}/cancel").status_code == 200
        retried = client.post(f"/api/runs/{run['id']}/rounds")
        assert retried.status_code == 202, retried.text
        attempts = cues["attempts"]
        wait_job(client, round_["id"], "cues", lambda j: j["status"] == "running" and j["attempts"] > attempts, 600,
                 poll_s=0.02)
        seconds.append({"seconds": time.monotonic() - began, "progress_at_cancel": progress})
    cues = wait_job(client, round_["id"], "cues", lambda _j: True, 5)
    client.post(f"/api/jobs/{cues['id']}/cancel")
    wait_round(client, round_["id"], ENDED, 120)
    return {"refused_1e6": f"{refused.status_code}: {refused.json()['detail'][:120]}", "trials": seconds}


# ---------------------------------------------------------------- 3. concurrent retries


def concurrent_retries(client: httpx.Client, work: Path, env: dict[str, str], worker: subprocess.Popen,
                       args) -> dict:
    broken = work / "data" / "broken"
    shutil.copytree(work / "data" / "synth", broken)
    dataset = client.post("/api/datasets", json={"name": "broken", "path": "broken"}).json()
    first = (broken / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    (broken / "JPEGImages" / f"{first}.jpg").write_bytes(b"not a jpeg at all" * 64)  # changed after registration
    run = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": {"profile": "tiny"}}).json()
    round_ = wait_round(client, client.post(f"/api/runs/{run['id']}/rounds").json()["id"], ENDED, 600)
    failure = next((j["error"] for j in round_["jobs"] if j["error"]), None)
    stop((worker,))  # the retries stay queued: nothing runs them
    trials = []
    for trial in range(args.retry_trials):
        before = client.get(f"/api/rounds/{round_['id']}").json()["status"]
        with ThreadPoolExecutor(args.retries) as pool:
            codes = list(pool.map(lambda _: client.post(f"/api/runs/{run['id']}/rounds").status_code,
                                  range(args.retries)))
        after = client.get(f"/api/rounds/{round_['id']}").json()
        trials.append({"before": before, "accepted": codes.count(202), "codes": sorted(set(codes)),
                       "after": after["status"], "jobs": [j["status"] for j in after["jobs"]]})
        client.post(f"/api/jobs/{after['jobs'][0]['id']}/cancel")
    return {"round_status": round_["status"], "failure": failure, "trials": trials}


# ---------------------------------------------------------------- report


def probe(backend: str, args) -> dict:
    from wsis_core.data.synth import generate_dataset

    work = Path(tempfile.mkdtemp(prefix=f"wsis_security_probe_{backend}_"))
    token = secrets.token_urlsafe(16)
    url = f"http://127.0.0.1:{args.port}"
    try:
        generate_dataset(work / "data" / "synth", n_train=args.train, n_val=args.val, size=args.size, seed=0)
        with backend_urls(backend, work, args) as urls:
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("WSIS_")}, **urls,
                   "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]), "WSIS_API_TOKEN": token,
                   "WSIS_DATA_ROOT": str(work / "data"), "WSIS_ARTIFACT_ROOT": str(work / "artifacts")}
            subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=env, check=True,
                           capture_output=True)
            api, worker = start_api(env, args.port, work), start_worker(env, work)
            try:
                wait_until_ready(url, [api, worker], work / "worker.ready")
                print(f"{backend}: API and worker up ({work})", flush=True)
                result = {"body_limit": body_limit(url, token, api.pid, args)}
                print(f"{backend}: body limit measured", flush=True)
                with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
                    dataset = client.post("/api/datasets", json={"name": "synth", "path": "synth"}).json()
                    result["cancel"] = cancel_to_idle(client, dataset["id"], args)
                    print(f"{backend}: cancel to idle measured", flush=True)
                    result["retries"] = concurrent_retries(client, work, env, worker, args)
                    print(f"{backend}: concurrent retries measured", flush=True)
                return result
            finally:
                stop((api, worker))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(results: dict[str, dict], args, command: str) -> str:
    names = {"embedded": "SQLite (embedded default)", "postgres": "PostgreSQL + Redis"}
    lines = ["# Security and reliability probe (issue 19)", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} on {os.cpu_count()} CPU cores (shared with other "
             "sessions), real uvicorn and Celery worker processes, real stages on a synthetic dataset of "
             f"{args.train} train / {args.val} val images of {args.size} px; `WSIS_MAX_JSON_KB` at its default "
             "(1024).", "", "```sh", command, "```", "",
             "## 1. `/api/health` while large JSON bodies are posted", ""]
    for backend, result in results.items():
        limit = result["body_limit"]
        lines += [f"**{names[backend]}**: body {limit['body_mb']:.1f} MB; health alone p50 "
                  f"{limit['baseline_p50_ms']:.1f} ms, max {limit['baseline_max_ms']:.1f} ms.", "",
                  "| token | transfer | posts | answers | post p50 / max (s) | health requests | health p50 (ms) "
                  "| health max (ms) | API RSS before / peak / after (MB) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in limit["rows"]:
            answers = ", ".join(f"{count} x {outcome}" for outcome, count in row["outcomes"].items())
            lines.append(f"| {'yes' if row['token'] else 'no'} | {'chunked' if row['chunked'] else 'Content-Length'} "
                         f"| {row['posts']} | {answers} | {row['post_p50_s']:.3f} / {row['post_max_s']:.3f} "
                         f"| {row['health_n']} | {row['health_p50_ms']:.1f} | {row['health_max_ms']:.1f} "
                         f"| {' / '.join(f'{value:.0f}' for value in row['rss_mb'])} |")
        lines.append("")
    lines += ["## 2. Cancel to idle worker (`cls.epochs` 1000, the largest allowed)", "",
              "| backend | `cls.epochs: 1000000` | trial | cues progress at cancel | seconds from cancel to the "
              "retried cues running |", "| --- | --- | --- | --- | --- |"]
    for backend, result in results.items():
        for i, trial in enumerate(result["cancel"]["trials"], start=1):
            lines.append(f"| {names[backend]} | {result['cancel']['refused_1e6'] if i == 1 else ''} | {i} "
                         f"| {trial['progress_at_cancel']:.4f} | {trial['seconds']:.2f} |")
    lines += ["", f"## 3. {args.retries} concurrent retries (`POST /api/runs/{{id}}/rounds`)", "",
              "| backend | trial | round before | accepted (202) | answers | round after | its jobs |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for backend, result in results.items():
        for i, trial in enumerate(result["retries"]["trials"], start=1):
            lines.append(f"| {names[backend]} | {i} | {trial['before']} | {trial['accepted']} of {args.retries} "
                         f"| {', '.join(map(str, trial['codes']))} | {trial['after']} | {', '.join(trial['jobs'])} |")
    lines.append("")
    for backend, result in results.items():
        lines += [f"{names[backend]}: the round failed with `{result['retries']['failure']}`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="embedded,postgres", help="comma-separated: embedded, postgres")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a database of the server to create --database next to")
    parser.add_argument("--database", default="wsis_security_probe")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9", help="an empty Redis database")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--body-mb", type=int, default=17)
    parser.add_argument("--post-seconds", type=float, default=3.0)
    parser.add_argument("--cancel-trials", type=int, default=3)
    parser.add_argument("--cancel-after-s", type=float, default=3.0)
    parser.add_argument("--retries", type=int, default=20)
    parser.add_argument("--retry-trials", type=int, default=4)
    parser.add_argument("--train", type=int, default=8)
    parser.add_argument("--val", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "security_probe.md")
    args = parser.parse_args()
    command = "PYTHONPATH=. .venv/bin/python bench/security_probe.py " + " ".join(sys.argv[1:])
    results = {backend: probe(backend, args) for backend in args.backends.split(",")}
    report = markdown(results, args, command.strip())
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
