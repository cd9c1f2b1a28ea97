"""``make run`` (``python -m services.dev``): API + worker on the embedded defaults, demo dataset, clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from integration.harness import free_port


def test_dev_script_serves_the_demo_dataset_and_stops_on_ctrl_c(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WSIS_API_TOKEN": "t0ken"}
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "DATA_ROOT", "ARTIFACT_ROOT", "STAGE_BACKEND"):
        env.pop(f"WSIS_{name}", None)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "services.dev", "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        for line in process.stdout:  # dev.py gives up (and exits) by itself if the services do not start
            output.append(line)
            if "wsis is running at" in line:
                break
        assert f"http://127.0.0.1:{port}" in output[-1], "".join(output[-30:])
        datasets = httpx.get(f"http://127.0.0.1:{port}/api/datasets").json()
        assert [(d["name"], d["num_train_images"], d["num_val_images"]) for d in datasets] == [("demo", 60, 20)]
    finally:
        process.send_signal(signal.SIGINT)
        output.extend(process.stdout)
        process.wait(timeout=60)
    assert process.returncode == 0, "".join(output[-30:])
    assert (tmp_path / "var" / "demo" / "classes.txt").is_file() and (tmp_path / "var" / "wsis.sqlite").is_file()
    log = "".join(output)
    assert "Warm shutdown" in log and "Finished server process" in log, log[-3000:]
