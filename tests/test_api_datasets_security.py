"""Dataset registration and the workers refuse files outside the dataset folder, answer bad datasets with one
readable 400 line, and never show server paths in job errors (issue 19, items 1, 7 and 8)."""

from __future__ import annotations

import os

import pytest

from integration import harness
from test_confinement import png_header_claiming
from wsis_core.io import write_json

pytestmark = pytest.mark.usefixtures("eager_tasks")

SECRET = "root:x:0:0:root:/root:/bin/bash"


@pytest.fixture
def data_root(tmp_path, synth_dataset):
    return harness.data_root_with(tmp_path, synth_dataset)


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "passwd"
    path.write_text(f"{SECRET}\n")
    return path


@pytest.fixture
def settings(tmp_path, monkeypatch, data_root):
    return harness.service_settings(monkeypatch, tmp_path, data_root)


@pytest.fixture
def client(settings):
    with harness.api_client(settings) as client:
        yield client


def register(client, path: str = "synth"):
    return client.post("/api/datasets", json={"name": "x", "path": path})


def assert_readable_400(response, expected: str, settings) -> None:
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert expected in detail, detail
    assert "\n" not in detail and SECRET not in detail and str(settings.data_root) not in detail


def test_a_classes_file_symlinked_to_a_secret_is_400_and_never_listed(client, settings, data_root, secret):
    classes = data_root / "synth" / "classes.txt"
    classes.unlink()
    classes.symlink_to(secret)
    assert_readable_400(register(client), "outside the dataset folder", settings)
    assert client.get("/api/datasets").json() == []


def test_a_split_list_symlinked_to_a_secret_does_not_leak_its_first_word(client, settings, data_root, secret):
    split = data_root / "synth" / "ImageSets" / "Segmentation" / "train.txt"
    split.unlink()
    split.symlink_to(secret)
    assert_readable_400(register(client), "outside the dataset folder", settings)


def test_split_list_lines_and_coco_file_names_leaving_the_folder_are_400(client, settings, data_root):
    split = data_root / "synth" / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text("../../../outside/ds/JPEGImages/x\n" + split.read_text())
    assert_readable_400(register(client), "outside the dataset folder", settings)
    coco = data_root / "coco"
    (coco / "train").mkdir(parents=True)
    write_json(coco / "annotations" / "instances_train.json", {
        "images": [{"id": 1, "file_name": "/etc/passwd", "width": 4, "height": 4}],
        "categories": [{"id": 1, "name": "cat"}], "annotations": []})
    assert_readable_400(register(client, "coco"), "outside the dataset folder", settings)


@pytest.mark.parametrize(
    ("break_dataset", "expected"),
    [
        (lambda ds: (ds / "classes.txt").write_bytes(b"caf\xe9\n"), "not UTF-8"),
        (lambda ds: next((ds / "JPEGImages").iterdir()).write_bytes(png_header_claiming(100_000, 100_000)),
         "too large"),
    ],
)
def test_bad_dataset_files_are_400_not_500(client, settings, data_root, break_dataset, expected):
    break_dataset(data_root / "synth")
    assert_readable_400(register(client), expected, settings)


@pytest.mark.parametrize(
    ("images", "annotations", "expected"),
    [([{"file_name": "a.jpg", "width": 4, "height": 4}], [], "id"),
     ([{"id": 1, "width": 4, "height": 4}], [], "file_name"),
     ("abc", [], "images is not a list"),
     ([{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}], [1], "annotations[0] is not an object")],
)
def test_malformed_coco_files_are_400(client, settings, data_root, images, annotations, expected):
    coco = data_root / "coco"
    (coco / "train").mkdir(parents=True)
    write_json(coco / "annotations" / "instances_train.json",
               {"images": images, "categories": [{"id": 1, "name": "cat"}], "annotations": annotations})
    assert_readable_400(register(client, "coco"), expected, settings)


def test_a_dataset_path_in_a_symlink_loop_is_400(client, settings, data_root):
    (data_root / "loop").symlink_to(data_root / "loop")
    assert_readable_400(register(client, "loop/x"), "cannot be resolved", settings)


def test_a_dataset_path_resolving_to_more_than_1000_characters_is_400(client, settings, data_root):
    deep = data_root
    for letter in "abcde":
        deep = deep / (letter * 250)
    deep.mkdir(parents=True)
    os.rename(data_root / "synth", deep / "synth")
    (data_root / "short").symlink_to(deep / "synth", target_is_directory=True)
    assert_readable_400(register(client, "short"), "more than 1000 characters", settings)


def test_the_workers_check_again_and_their_errors_show_no_server_paths(client, settings, data_root, secret):
    assert register(client).status_code == 201
    run = client.post("/api/runs", json={"dataset_id": 1}).json()
    classes = data_root / "synth" / "classes.txt"
    classes.unlink()
    classes.symlink_to(secret)  # the dataset changed after registration
    round_ = client.post(f"/api/runs/{run['id']}/rounds").json()
    assert round_["status"] == "failed"
    error = round_["jobs"][0]["error"]
    assert "outside the dataset folder" in error and error.startswith("$WSIS_DATA_ROOT/synth/classes.txt")
    assert str(settings.data_root) not in error and SECRET not in error
