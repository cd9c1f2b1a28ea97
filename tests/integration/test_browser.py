"""The status page in a real browser: Debian's chromium, driven headless by Playwright.

The API (uvicorn) and a Celery worker run as real processes on the embedded defaults (SQLite
database, SQLite broker) in a temporary folder, with the fast fake stage backend. Through the page
the test enters the API token, registers a dataset, creates a run and launches its first round,
then waits until every job has succeeded and the mAP chart shows the round. A full-page screenshot
is saved to ``tests/artifacts/status_page.png``.

``make test`` installs ``/usr/bin/chromium`` (apt-get) and the ``playwright`` package (dev extras);
Playwright's own browser download is never used. Without either the test is skipped, and fails
under ``CI=true``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from integration import fake_rounds, harness

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOT = harness.TESTS / "artifacts" / "status_page.png"
FAILED_SCREENSHOT = SCREENSHOT.with_name("status_page_failed.png")  # the page as it was when the test failed
TOKEN = "browser-test-token"
TIMEOUT_MS = 45_000  # upper bound for the slow steps (imports of torch, the round); no time is asserted


def require_browser():
    """The ``playwright.sync_api`` module; skips (fails under CI=true) without chromium or Playwright."""
    problems = []
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"{CHROMIUM} is missing (`make test` installs Debian's chromium with apt-get)")
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        problems.append("the Python package playwright is missing (`pip install -e '.[dev]'`)")
    if problems:
        message = "browser test: " + "; ".join(problems)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return sync_api


def test_a_round_launched_from_the_page_finishes_and_is_charted(tmp_path, monkeypatch, synth_dataset):
    sync_api = require_browser()
    expect = sync_api.expect
    settings = harness.service_settings(monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset),
                                        **harness.embedded_service_urls(tmp_path), api_token=TOKEN)
    worker_log, api_log = tmp_path / "worker.log", tmp_path / "api.log"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    for stale in (SCREENSHOT, FAILED_SCREENSHOT):
        stale.unlink(missing_ok=True)

    with harness.celery_worker(settings, worker_log), \
            harness.api_server(settings, api_log, harness.free_port()) as (_, api), \
            sync_api.sync_playwright() as pw:
        base = str(api.base_url).rstrip("/")
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        # uncaught script errors, console errors, and failed requests of the page (the favicon it does not have aside;
        # a failed request's console line does not name it, the response does)
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda msg: problems.append(f"console: {msg.text}")
                if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
        page.on("response", lambda response: problems.append(f"{response.status} {response.request.method} {response.url}")
                if response.status >= 400 and not response.url.endswith("/favicon.ico") else None)

        def context() -> str:
            return (f"\n--- worker log ---\n{harness.log_tail(worker_log)}\n--- API log ---\n{harness.log_tail(api_log)}"
                    f"\n--- page problems ---\n{problems}")

        try:
            page.goto(base + "/")
            expect(page.locator("#health")).to_have_text("healthy")
            expect(page.locator("#runs")).to_contain_text("no runs yet")
            page.fill("#token", TOKEN)

            # register the dataset through its form
            page.fill("#dataset-name", "synth")
            page.fill("#dataset-path", "synth")
            page.click("#dataset-form button[type=submit]")
            expect(page.locator("#dataset-form .form-message")).to_contain_text("registered “synth” (#1)")
            expect(page.locator("#datasets")).to_contain_text("8 train / 4 val images")

            # create a run of it
            expect(page.locator("#run-dataset option")).to_have_text(["synth (#1)"])
            page.select_option("#run-dataset", "1")
            page.select_option("#run-profile", "tiny")
            page.click("#run-form button[type=submit]")
            # the API's first run validation imports wsis_core.profiles (torch): seconds on a small machine
            expect(page.locator("#run-form .form-message")).to_contain_text("created run 1", timeout=TIMEOUT_MS)

            # launch round 1 from the run's block
            run = page.locator("#run-1")
            launch = run.locator("button.launch")
            expect(launch).to_have_text("Launch round 1")
            expect(run).to_contain_text("no metrics yet")
            launch.click()
            expect(run.locator(".form-message")).to_have_text("round 1 launched")
            expect(run.locator(".round-head h4")).to_have_text(["Round 1"])

            # every job finishes: one row per stage of the fake backend, all succeeded at 100%
            rows = run.locator("table.jobs tbody tr")
            expect(rows).to_have_count(len(fake_rounds.STAGES))
            expect(rows.locator("td:nth-child(1)")).to_have_text(list(fake_rounds.STAGES))
            expect(rows.locator(".badge")).to_have_text(["succeeded"] * len(fake_rounds.STAGES), timeout=TIMEOUT_MS)
            for index in range(len(fake_rounds.STAGES)):
                expect(rows.nth(index).locator("progress")).to_have_attribute("value", "100")
            expect(run.locator(".round-head .badge")).to_have_text("succeeded")
            expect(launch).to_have_text("Launch round 2")
            expect(launch).to_be_enabled()

            # the chart: one point per plotted metric for round 1, the legend with the fake's values
            chart = run.locator("svg.chart")
            expect(chart).to_be_visible()
            expect(chart.locator("circle.dot")).to_have_count(3)
            expect(chart.locator("circle.dot title")).to_have_text(
                ["mAP_r@0.25, round 1: 41.50", "mAP_r@0.5, round 1: 22.00", "mAP_b@0.5, round 1: 30.00"])
            legend = run.locator(".legend")
            expect(legend).to_contain_text("mAP_r@0.5 (round 1: 22.00)")
            expect(legend).to_contain_text("split: val")

            # the pseudo-label download link, and the file behind it
            download = run.locator("a.download")
            expect(download).to_have_text("Download pseudo labels (COCO JSON)")
            expect(download).to_have_attribute("href", "/api/rounds/1/pseudo-labels")
            labels = page.request.get(base + download.get_attribute("href"))
            assert labels.status == 200, labels.text()
            assert len(labels.json()["images"]) == 8

            assert not run.locator(".form-message.error-text").count(), run.inner_text()
            assert not problems, problems
        except (AssertionError, sync_api.Error) as error:
            page.screenshot(path=str(FAILED_SCREENSHOT), full_page=True)
            raise AssertionError(f"{error}{context()}") from error
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
