"""The artifact store and its lifecycle (issue 20, items 1, 2 and 7): key confinement, the local backend, the
scratch mirror's upload order and reuse, DELETE /api/runs/{id}, WSIS_KEEP_MODELS retention, each run's storage."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from integration import harness
from services.common.artifact_store import LocalStore, check_key, parse_s3_url
from services.common.db import session_scope
from services.common.models import Artifact
from services.common.paths import OutsideRootError
from services.common.scratch import Mirror, confined_dataset_url, evict, file_state
from services.workers.retention import unneeded_checkpoints

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
pytestmark = pytest.mark.usefixtures("eager_tasks")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/..", "a\\b", "a\x00b"])
def test_keys_outside_the_store_are_refused(key):
    with pytest.raises(OutsideRootError):
        check_key(key)


def test_s3_urls_and_dataset_urls_are_confined_to_their_prefix(tmp_path, monkeypatch):
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    with pytest.raises(ValueError):
        parse_s3_url("s3://bucket/a/../b")
    settings = harness.service_settings(monkeypatch, tmp_path, tmp_path, data_url="s3://data/sets")
    assert confined_dataset_url(settings, "s3://data/sets/voc/") == "s3://data/sets/voc"
    for url in ("s3://data/setsx/voc", "s3://other/sets/voc", "s3://data/sets/../x", "s3://data/other"):
        with pytest.raises(OutsideRootError):
            confined_dataset_url(settings, url)
    monkeypatch.delenv("WSIS_DATA_URL")
    unset = harness.service_settings(monkeypatch, tmp_path, tmp_path)
    with pytest.raises(OutsideRootError, match="WSIS_DATA_URL"):
        confined_dataset_url(unset, "s3://data/sets/voc")


class FakeBucket(LocalStore):
    """A LocalStore that records uploads and downloads like an object store (a folder stands for the bucket)."""

    def __init__(self, root, local_root):
        super().__init__(root)
        self.bucket_root, self.local_root, self.uploaded, self.downloaded = self.local_root, local_root, [], []

    def path(self, key):
        return LocalStore(self.bucket_root).path(key)

    def list(self, prefix):
        return LocalStore(self.bucket_root).list(prefix)

    def download(self, key, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.path(key).read_bytes())
        self.downloaded.append(key)
        return self.tag(key)

    def upload(self, source, key, sha256):
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        self.uploaded.append(key)
        return self.tag(key)

    def tag(self, key):
        stat = self.path(key).stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}"


def test_a_mirror_uploads_what_changed_markers_last_and_fetches_only_new_objects(tmp_path):
    bucket = FakeBucket(tmp_path / "bucket", tmp_path / "scratch" / "artifacts")
    (tmp_path / "bucket" / "runs" / "1" / "round_1").mkdir(parents=True)
    (tmp_path / "bucket" / "runs" / "1" / "round_1" / "peaks.json").write_text("{}")
    mirror = Mirror(bucket, "runs/1/", bucket.local_root / "runs" / "1", tmp_path / "scratch", 1 << 30)
    before = mirror.sync()
    assert bucket.downloaded == ["runs/1/round_1/peaks.json"] and list(before) == ["round_1/peaks.json"]
    (mirror.folder / "round_1" / "stages").mkdir()
    (mirror.folder / "round_1" / "stages" / "cues.json").write_text("{}")
    (mirror.folder / "round_1" / "model.pt").write_bytes(b"weights")
    assert mirror.publish(before) == ["runs/1/round_1/model.pt", "runs/1/round_1/stages/cues.json"]
    assert mirror.sync() and bucket.downloaded == ["runs/1/round_1/peaks.json"]  # the copy is reused


def test_eviction_drops_the_least_recently_used_mirror_but_never_the_current_one(tmp_path):
    bucket = FakeBucket(tmp_path / "bucket", tmp_path / "scratch" / "artifacts")
    mirrors = []
    for run in (1, 2):
        (tmp_path / "bucket" / "runs" / str(run)).mkdir(parents=True)
        (tmp_path / "bucket" / "runs" / str(run) / "model.pt").write_bytes(b"x" * 1000)
        mirrors.append(Mirror(bucket, f"runs/{run}/", bucket.local_root / "runs" / str(run), tmp_path / "scratch", 1500))
        mirrors[-1].sync()
    assert not file_state(mirrors[0].folder) and file_state(mirrors[1].folder)  # run 1 went when run 2 came
    evict(tmp_path / "scratch", 0, keep=mirrors[1].manifest_path)
    assert file_state(mirrors[1].folder)


def test_retention_keeps_what_a_later_round_resume_or_download_reads():
    rows = [(1, 1, "runs/1/round_1/models/classifier.pt"), (2, 1, "runs/1/round_1/models/affinity.pt"),
            (3, 1, "runs/1/round_1/models/mil.pt"), (4, 1, "runs/1/round_1/models/segmentation.pt"),
            (5, 1, "runs/1/round_1/model.pt"), (6, 2, "runs/1/round_2/models/classifier.pt"),
            (7, 2, "runs/1/round_2/models/segmentation.pt"), (8, 1, "runs/1/round_1/pseudo_labels.json")]
    assert unneeded_checkpoints(rows, ss_done={1}) == [2, 3, 6]
    assert unneeded_checkpoints(rows, ss_done={1, 2}) == [2, 3, 4, 6]


def test_deleting_a_run_needs_the_token_and_removes_its_rows_and_files(tmp_path, monkeypatch, synth_dataset):
    settings = harness.service_settings(monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset),
                                        api_token=TOKEN)
    with harness.api_client(settings) as client:
        dataset = client.post("/api/datasets", json={"name": "synth", "path": "synth"}, headers=AUTH).json()
        run = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": {}}, headers=AUTH).json()
        round_ = client.post(f"/api/runs/{run['id']}/rounds", headers=AUTH).json()
        assert round_["status"] == "succeeded"
        with session_scope(settings.database_url) as session:
            stored = sum(session.scalars(select(Artifact.size)))
        assert client.get(f"/api/runs/{run['id']}").json()["storage_bytes"] == stored > 0
        folder = settings.artifact_root / "runs" / str(run["id"])
        assert folder.is_dir()
        assert client.delete(f"/api/runs/{run['id']}").status_code == 401
        assert client.delete(f"/api/runs/{run['id']}", headers=AUTH).status_code == 204
        assert client.get(f"/api/runs/{run['id']}").status_code == 404
        assert client.delete(f"/api/runs/{run['id']}", headers=AUTH).status_code == 404
    assert not folder.exists()
    with session_scope(settings.database_url) as session:
        assert not session.scalars(select(Artifact)).all()


def test_keep_models_needed_drops_the_checkpoints_of_a_finished_round(tmp_path, monkeypatch, synth_dataset):
    from integration import fake_rounds

    settings = harness.service_settings(monkeypatch, tmp_path, harness.data_root_with(tmp_path, synth_dataset),
                                        keep_models="needed")
    monkeypatch.setitem(fake_rounds.OUTPUTS, "mil", ("mil_model", "models/mil.pt"))
    with harness.api_client(settings) as client:
        round_ = harness.start_round(client)
        assert round_["status"] == "succeeded"
        kinds = {a["kind"] for a in client.get(f"/api/rounds/{round_['id']}/artifacts").json()}
    assert "mil_model" not in kinds and kinds
    assert not list(settings.artifact_root.rglob("mil.pt"))


def test_the_status_page_shows_each_runs_storage():
    from services.api.app import STATIC_DIR

    assert "run.storage_bytes" in (STATIC_DIR / "app.js").read_text()
