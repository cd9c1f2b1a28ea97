"""POST /api/datasets/upload: a zip of a dataset streamed under WSIS_MAX_UPLOAD_MB, unpacked safely, registered."""

from __future__ import annotations

import io
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from integration import harness
from wsis_core.data.convert import write_tagged_folder

UPLOAD = "/api/datasets/upload"


@pytest.fixture(scope="module")
def tagged_folder(synth_dataset, tmp_path_factory) -> Path:
    return write_tagged_folder(synth_dataset, tmp_path_factory.mktemp("upload") / "tags", ["train", "val"],
                               with_ground_truth=False)


zip_of = harness.zip_folder


def with_entry(archive_bytes: bytes, name: str, data: bytes = b"x", mode: int | None = None) -> bytes:
    buffer = io.BytesIO(archive_bytes)
    with zipfile.ZipFile(buffer, "a") as archive:
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        archive.writestr(info, data)
    return buffer.getvalue()


@pytest.fixture
def client(tmp_path, monkeypatch):
    settings = harness.service_settings(monkeypatch, tmp_path, tmp_path / "data")
    with harness.api_client(settings) as test_client:
        yield test_client


def upload(client, name: str, archive: bytes, **headers):
    return client.post(UPLOAD, data={"name": name}, files={"file": ("data.zip", archive, "application/zip")},
                       headers=headers)


def leftovers(tmp_path: Path) -> list[str]:
    uploads = tmp_path / "data" / "uploads"
    return sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []


def test_a_good_zip_registers_with_its_ground_truth_report(client, tagged_folder, tmp_path):
    response = upload(client, "tags", zip_of(tagged_folder))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["path"] == "uploads/tags"
    assert (body["num_train_images"], body["num_val_images"], body["val_split"]) == (8, 4, "val")
    assert body["ground_truth"] == {"train": {"images": 8, "with_ground_truth": 0, "ground_truth": False},
                                    "val": {"images": 4, "with_ground_truth": 0, "ground_truth": False}}
    assert client.get(f"/api/datasets/{body['id']}").json() == body
    assert leftovers(tmp_path) == ["tags"]
    assert upload(client, "tags", zip_of(tagged_folder)).status_code == 409
    assert leftovers(tmp_path) == ["tags"]


def test_a_zip_of_a_folder_without_split_column_has_no_val_split(client, tmp_path, synth_dataset):
    folder = tmp_path / "plain"
    write_tagged_folder(synth_dataset, folder, ["train"], with_ground_truth=False)
    lines = (folder / "labels.csv").read_text().splitlines()
    (folder / "labels.csv").write_text("\n".join(["image,labels"] + [line.rsplit(",", 1)[0] for line in lines[1:]]))
    response = upload(client, "plain", zip_of(folder, prefix="my-photos/"))
    assert response.status_code == 201, response.text
    assert response.json()["val_split"] is None and response.json()["ground_truth"]["val"] is None
    assert response.json()["path"] == "uploads/plain/my-photos"


@pytest.mark.parametrize(("entry", "mode", "message"), [
    ("../evil.txt", None, "'..' in its path"),
    ("/tmp/evil.txt", None, "absolute path"),
    ("link", stat.S_IFLNK | 0o777, "symbolic link"),
    ("fifo", stat.S_IFIFO | 0o644, "device or special file"),
])
def test_unsafe_entries_are_refused_and_nothing_is_left(client, tagged_folder, tmp_path, entry, mode, message):
    response = upload(client, "bad", with_entry(zip_of(tagged_folder), entry, b"/etc/passwd", mode))
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_an_oversized_upload_is_413_and_leaves_nothing(tmp_path, monkeypatch, tagged_folder):
    monkeypatch.setenv("WSIS_MAX_UPLOAD_MB", "1")
    settings = harness.service_settings(monkeypatch, tmp_path, tmp_path / "data")
    big = with_entry(zip_of(tagged_folder), "images/noise.bin", os.urandom(2 * 2**20))
    with harness.api_client(settings) as client:
        response = upload(client, "big", big)
        assert response.status_code == 413 and "WSIS_MAX_UPLOAD_MB" in response.json()["detail"]

        def chunks():  # no Content-Length: the cap holds while streaming
            boundary = b"--b\r\n"
            yield boundary + b'Content-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
            yield boundary + b'Content-Disposition: form-data; name="file"; filename="d.zip"\r\n\r\n'
            for _ in range(3):
                yield b"\0" * 2**20
            yield b"\r\n--b--\r\n"

        streamed = client.post(UPLOAD, content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert streamed.status_code == 413
    assert leftovers(tmp_path) == []


def test_a_corrupt_zip_or_a_bad_dataset_is_400(client, tagged_folder, tmp_path):
    corrupt = upload(client, "corrupt", b"PK\x03\x04 this is not a zip")
    assert corrupt.status_code == 400 and "not a readable zip archive" in corrupt.json()["detail"]
    folder = tmp_path / "bad-csv"
    shutil.copytree(tagged_folder, folder)
    (folder / "labels.csv").write_text("image,labels\nmissing.jpg,cat\n")
    bad = upload(client, "csv", zip_of(folder))
    assert bad.status_code == 400
    assert "labels.csv row 2: images/missing.jpg: image not found" in bad.json()["detail"]
    assert str(tmp_path) not in bad.json()["detail"]
    assert leftovers(tmp_path) == []


def test_name_and_fields_are_checked(client, tagged_folder):
    assert upload(client, "../up", zip_of(tagged_folder)).status_code == 400
    missing = client.post(UPLOAD, files={"name": (None, "x")})
    assert missing.status_code == 400 and "'name' and 'file' are required" in missing.json()["detail"]
    assert client.post(UPLOAD, json={"name": "x"}).status_code == 400


def test_the_token_is_checked_before_the_body(tmp_path, monkeypatch, tagged_folder):
    settings = harness.service_settings(monkeypatch, tmp_path, tmp_path / "data", api_token="secret")
    with harness.api_client(settings) as client:
        assert upload(client, "tags", zip_of(tagged_folder)).status_code == 401
        assert leftovers(tmp_path) == []
        accepted = upload(client, "tags", zip_of(tagged_folder), Authorization="Bearer secret")
        assert accepted.status_code == 201


def test_a_malformed_multipart_body_is_400(client):
    boundary = "a222103b9b30b1f9e8be6882ecedb1d2"
    response = client.post("/api/datasets/upload", content=f"--{boundary}\r\n[]--{boundary}--\r\n".encode(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 400 and "malformed multipart/form-data body" in response.json()["detail"]
