"""``make run``: the API (uvicorn) and one Celery worker on the embedded defaults, plus the demo dataset.

    python -m services.dev [--host 127.0.0.1] [--port 8000]

Migrates the database, generates ``<WSIS_DATA_ROOT>/demo`` with ``wsis synth`` when it is missing,
generates an API token unless ``WSIS_API_TOKEN`` is set,
starts both processes, waits until the API answers and the worker consumes tasks, registers the demo
dataset through the API, prints the URL and stops both on Ctrl-C (or when either exits).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from services.common.db import upgrade_database
from services.common.settings import Settings, get_settings, prepare_folders
from wsis_core.cli import main as wsis_cli

DEMO = "demo"
DEMO_SYNTH_ARGS = ["--train", "60", "--val", "20", "--size", "160", "--seed", "0"]
STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20


def ensure_demo(settings: Settings) -> None:
    """Generate the demo dataset under the data root unless it is complete (``classes.txt`` is written last)."""
    demo = settings.data_root / DEMO
    if not (demo / "classes.txt").is_file() and wsis_cli(["synth", str(demo), *DEMO_SYNTH_ARGS]) != 0:
        sys.exit("could not generate the demo dataset")


def start(host: str, port: int, worker_ready: Path) -> list[subprocess.Popen]:
    """Worker first, then the API; each in its own session so that Ctrl-C reaches only this script.

    The worker touches ``worker_ready`` once it consumes tasks.
    """
    worker_ready.unlink(missing_ok=True)
    worker_env = {**os.environ, "WSIS_WORKER_READY_FILE": str(worker_ready)}
    commands = [
        [sys.executable, "-m", "celery", "-A", "services.workers.celery_app", "worker",
         "-Q", "cpu,gpu", "--pool", "solo", "--loglevel", "info"],
        [sys.executable, "-m", "uvicorn", "--factory", "services.api.app:create_app",
         "--host", host, "--port", str(port)],
    ]
    return [subprocess.Popen(command, start_new_session=True, env=env)
            for command, env in zip(commands, (worker_env, None))]


def wait_until_ready(url: str, processes: Sequence[subprocess.Popen], worker_ready: Path,
                     timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Return once ``/api/health`` answers 200 and the worker touched ``worker_ready``; RuntimeError if
    a process exits or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
            raise RuntimeError("the API or the worker did not start")
        try:
            if httpx.get(f"{url}/api/health", timeout=5).status_code == 200 and worker_ready.is_file():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)


def register_demo(url: str, settings: Settings, processes: list[subprocess.Popen], worker_ready: Path) -> None:
    """Wait for ``/api/health`` and the worker, then register the demo dataset (an existing registration is kept)."""
    headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
    wait_until_ready(url, processes, worker_ready)
    response = httpx.post(f"{url}/api/datasets", json={"name": DEMO, "path": DEMO}, headers=headers, timeout=60)
    if response.status_code not in (201, 409):
        raise RuntimeError(f"registering the demo dataset failed: {response.status_code} {response.text}")


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM (warm shutdown) to each process, SIGKILL after STOP_TIMEOUT_S."""
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.dev", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if not os.environ.get("WSIS_API_TOKEN"):  # POSTs need a token; both child processes inherit it
        os.environ["WSIS_API_TOKEN"] = secrets.token_urlsafe(24)
        get_settings.cache_clear()
    settings = get_settings()
    prepare_folders(settings)
    upgrade_database(settings.database_url)
    ensure_demo(settings)
    url = f"http://{args.host}:{args.port}"
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, and `kill`, stop both processes
        signal.signal(signum, _interrupt)
    worker_ready = settings.data_root / "worker.ready"
    processes = start(args.host, args.port, worker_ready)
    try:
        register_demo(url, settings, processes, worker_ready)
        print(f"\nwsis is running at {url}  (API docs: {url}/docs, demo dataset registered). Ctrl-C stops it."
              f"\nAPI token (status page field, or header 'Authorization: Bearer <token>'): {settings.api_token}\n",
              flush=True)
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        return 1  # a process died on its own
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"make run: {exc}; see the output above", file=sys.stderr)
        return 1
    finally:
        stop(processes)


if __name__ == "__main__":
    sys.exit(main())
