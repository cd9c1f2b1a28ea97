"""The status page's upload in a real browser: a zip of a tags-only tagged folder chosen in the
"Register a dataset" form is uploaded and registered, and a run of it says that no metrics can be
computed instead of showing an empty chart (same set-up as test_browser.py)."""

from __future__ import annotations

from integration import harness
from integration.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, TOKEN, require_browser
from wsis_core.data.convert import write_tagged_folder


def test_a_zip_uploaded_from_the_page_registers_a_tags_only_dataset(tmp_path, monkeypatch, synth_dataset):
    sync_api = require_browser()
    expect = sync_api.expect
    tags = write_tagged_folder(synth_dataset, tmp_path / "tags", ["train", "val"], with_ground_truth=False)
    archive = tmp_path / "tags.zip"
    archive.write_bytes(harness.zip_folder(tags))
    settings = harness.service_settings(monkeypatch, tmp_path, tmp_path / "data",
                                        **harness.embedded_service_urls(tmp_path), api_token=TOKEN)
    with harness.api_server(settings, tmp_path / "api.log", harness.free_port()) as (_, api), \
            sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.goto(str(api.base_url).rstrip("/") + "/")
        page.fill("#token", TOKEN)
        page.fill("#dataset-name", "tags")
        page.set_input_files("#dataset-file", str(archive))
        page.click("#dataset-form button[type=submit]")
        expect(page.locator("#dataset-form .form-message")).to_contain_text("registered “tags” (#1)")
        expect(page.locator("#datasets")).to_contain_text("uploads/tags · 5 classes · 8 train / 4 val images")
        expect(page.locator("#datasets")).to_contain_text("no ground truth in val: metrics not available")
        page.select_option("#run-dataset", "1")
        page.click("#run-form button[type=submit]")
        expect(page.locator("#run-form .form-message")).to_contain_text("created run 1", timeout=TIMEOUT_MS)
        expect(page.locator("#run-1 .no-ground-truth")).to_have_text("no ground truth: metrics not available")
        browser.close()
    assert not problems, problems
    assert (tmp_path / "data" / "uploads" / "tags" / "labels.csv").is_file()
