"""The status page in a real browser: Debian's chromium, driven headless by Playwright.

The API (uvicorn) and a Celery worker run as real processes on the embedded defaults (SQLite
database, SQLite broker) in a temporary folder, with the fast fake stage backend. Through the page
the test enters the API token, registers a dataset, creates a run and launches its first round,
then waits until every job of its two rounds (it asks for two) has succeeded and the chart shows every metric.
The rounds' pseudo labels are then replaced by shapes of the dataset's ground truth, and the test opens the
quality panel, the gallery and one image's overlay beside the previous round's, and ``/docs`` (Swagger UI
served by the API itself). Screenshots go to ``tests/artifacts/``: ``status_page.png`` (the full page),
``quality_panel.png``, ``gallery.png``, ``overlay.png`` and ``docs.png``.

``make test`` installs ``/usr/bin/chromium`` (apt-get) and the ``playwright`` package (dev extras);
Playwright's own browser download is never used. Without either the test is skipped, and fails
under ``CI=true``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from integration import fake_rounds, harness
from wsis_core.io import write_json
from wsis_core.quality import split_ground_truth

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOT = harness.TESTS / "artifacts" / "status_page.png"
FAILED_SCREENSHOT = SCREENSHOT.with_name("status_page_failed.png")  # the page as it was when the test failed
REVIEW_SCREENSHOTS = {name: SCREENSHOT.with_name(f"{name}.png") for name in ("quality_panel", "gallery", "overlay", "docs")}
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
    for stale in (SCREENSHOT, FAILED_SCREENSHOT, *REVIEW_SCREENSHOTS.values()):
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
            page.fill("#run-seed", "3")
            page.fill("#run-rounds", "2")
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
            expect(run).to_contain_text("seed 3")

            # every job of both rounds finishes: one row per stage of the fake backend, all succeeded at 100%
            expect(run.locator(".round-head h4")).to_have_text(["Round 2", "Round 1"], timeout=TIMEOUT_MS)
            for round_id in (1, 2):
                rows = run.locator(f"#round-{round_id} table.jobs tbody tr")
                expect(rows).to_have_count(len(fake_rounds.STAGES))
                expect(rows.locator("td:nth-child(1)")).to_have_text(list(fake_rounds.STAGES))
                expect(rows.locator(".badge")).to_have_text(["succeeded"] * len(fake_rounds.STAGES), timeout=TIMEOUT_MS)
                expect(rows.locator("td:nth-child(3)")).to_have_text(["cpu"] * len(fake_rounds.STAGES))  # device
                for index in range(len(fake_rounds.STAGES)):
                    expect(rows.nth(index).locator("progress")).to_have_attribute("value", "100")
                    expect(rows.nth(index).locator("td.duration")).to_have_text(re.compile(r"^\d+ s$"))
            expect(run.locator(".round-head .badge")).to_have_text(["succeeded", "succeeded"])
            expect(launch).to_have_text("Launch round 3")
            expect(launch).to_be_enabled()

            # the chart: one point per metric of the fake (coco_segm_AP is null) and round, with their values
            chart = run.locator("svg.chart")
            expect(chart).to_be_visible()
            numeric = [name for name, value in fake_rounds.METRICS.items() if value is not None]
            expect(chart.locator("circle.dot")).to_have_count(2 * len(numeric))
            expect(chart.locator("circle.dot title").first).to_have_text("mAP_r@0.25, round 1: 41.50")
            legend = run.locator(".legend")
            for name in numeric:
                expect(legend).to_contain_text(f"{name} (round 2: {fake_rounds.METRICS[name]:.2f})")
            expect(legend).to_contain_text("split: val")

            # the pseudo-label downloads (three formats), and the files behind them
            download = run.locator("#round-1 a.download")
            expect(download).to_have_text("COCO (RLE)")
            expect(download).to_have_attribute("href", "/api/rounds/1/pseudo-labels")
            labels = page.request.get(base + download.get_attribute("href"))
            assert labels.status == 200, labels.text()
            assert len(labels.json()["images"]) == 8
            for fmt in ("coco-polygon", "yolo"):
                link = run.locator(f"#round-1 a.download-{fmt}")
                expect(link).to_have_attribute("href", f"/api/rounds/1/pseudo-labels?format={fmt}")
                assert page.request.get(base + link.get_attribute("href")).status == 200

            # the review panels, on pseudo labels with real shapes: the ground truth, fewer and moved in round 2
            write_shaped_labels(settings.artifact_root / "runs" / "1", synth_dataset)
            quality = run.locator("#round-2 details.quality")
            quality.locator("summary").click()
            expect(quality.locator(".ground-truth")).to_contain_text("against ground truth (8 train images")
            expect(quality.locator(".agreement")).to_contain_text("vs round 1:")
            quality.screenshot(path=str(REVIEW_SCREENSHOTS["quality_panel"]))
            gallery = run.locator("#round-2 details.gallery")
            gallery.locator("summary").click()
            thumbs = gallery.locator("figure.thumb img")
            expect(thumbs).to_have_count(8)
            expect(gallery.locator(".gallery-range")).to_have_text("1–8 of 8")
            for index in range(8):  # every thumbnail decoded (the 96 px images are below the thumbnail size)
                expect(thumbs.nth(index)).to_have_js_property("naturalWidth", 96)
            gallery.screenshot(path=str(REVIEW_SCREENSHOTS["gallery"]))
            gallery.locator("select.gallery-sort").select_option("id")
            expect(gallery.locator("figure.thumb figcaption").first).to_contain_text("#1 ")
            gallery.locator("figure.thumb").first.click()
            viewer = gallery.locator(".viewer")
            expect(viewer.locator("img")).to_have_count(2)
            for index in range(2):  # this round's overlay and the previous round's, at full size
                expect(viewer.locator("img").nth(index)).to_have_js_property("naturalWidth", 96)
            expect(viewer).to_contain_text("round 1")
            viewer.screenshot(path=str(REVIEW_SCREENSHOTS["overlay"]))

            assert not run.locator(".form-message.error-text").count(), run.inner_text()
            assert not problems, problems
        except (AssertionError, sync_api.Error) as error:
            page.screenshot(path=str(FAILED_SCREENSHOT), full_page=True)
            raise AssertionError(f"{error}{context()}") from error
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        try:  # /docs: Swagger UI from the API's own files lists the operations (no CDN: no request fails)
            page.goto(base + "/docs")
            expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.locator(".opblock-summary-path[data-path='/api/rounds/{round_id}/gallery']")).to_have_count(1)
            operations = sum(len(methods) for methods in api.get("/openapi.json").json()["paths"].values())
            expect(page.locator(".opblock")).to_have_count(operations)
            assert not problems, problems
        except (AssertionError, sync_api.Error) as error:
            page.screenshot(path=str(FAILED_SCREENSHOT), full_page=True)
            raise AssertionError(f"{error}{context()}") from error
        page.screenshot(path=str(REVIEW_SCREENSHOTS["docs"]), full_page=True)
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
    assert all(path.stat().st_size > 2_000 for path in REVIEW_SCREENSHOTS.values())


def write_shaped_labels(run_dir: Path, dataset: Path) -> None:
    """Pseudo labels with the shapes of the train split's ground truth in place of the fake's whole-image
    masks: round 1 all of them with falling scores, round 2 without the last instance of every other image."""
    truth = split_ground_truth(dataset, "train")
    count = len(truth["annotations"])
    first = [{**ann, "score": round(0.95 - 0.9 * ann["id"] / count, 2)} for ann in truth["annotations"]]
    last = {ann["image_id"]: ann["id"] for ann in first}
    second = [ann for ann in first if not (ann["image_id"] % 2 == 0 and ann["id"] == last[ann["image_id"]])]
    for number, round_annotations in ((1, first), (2, second)):
        write_json(run_dir / f"round_{number}" / "pseudo_labels.json", {**truth, "annotations": round_annotations})
