"""Shared fixtures. A run that collects no tests fails (pytest's exit code 5 is turned into 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VOC_MINI_CANDIDATES = [REPO.parent / "shared" / "data" / "voc-mini", Path("/work/shared/data/voc-mini")]


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def voc_mini() -> Path:
    """The three real VOC 2012 images of ../shared/data/voc-mini (read in place, never copied)."""
    override = os.environ.get("WSIS_VOC_MINI")
    for path in ([Path(override)] if override else []) + VOC_MINI_CANDIDATES:
        if (path / "JPEGImages").is_dir():
            return path
    pytest.skip("voc-mini not found next to the repository (set WSIS_VOC_MINI)")


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    """A small synthetic VOC-layout dataset shared by the tests."""
    from wsis_core.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(root, n_train=8, n_val=4, size=96, seed=3)
    return root


@pytest.fixture(scope="session", autouse=True)
def stage_tasks_registered():
    """The stage tasks are known to this process's Celery app, so that eager mode runs them here (the API sends
    them by name and imports no task code)."""
    import services.workers.tasks  # noqa: F401  (registers the tasks)


@pytest.fixture
def eager_tasks():
    """Celery tasks run inside the request that sends them (a module uses it with ``pytestmark``)."""
    from services.workers.celery_app import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False
