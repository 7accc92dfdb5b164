"""The ``lfw-people`` dataset on tiny files written in the layout torchvision's LFWPeople reads."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from privbench.context import RunContext
from privbench.errors import PrivbenchError
from privbench.testing import check_params, check_registers
from privbench.torchvision_datasets import LfwPeople

# name -> (images, development list, colour). Carol and Bob tie on 3 images: Carol comes first in
# the files (train list, listed before Bob's test list) but Bob comes first by name.
PERSONS = {
    "Alice_Archer": (4, "Train", (220, 30, 30)),
    "Carol_Cole": (3, "Train", (30, 200, 30)),
    "Eve_Eng": (1, "Train", (128, 128, 128)),
    "Bob_Baker": (3, "Test", (30, 30, 220)),
    "Dave_Dunn": (2, "Test", (230, 230, 40)),
}
BY_RANK = ["Alice_Archer", "Bob_Baker", "Carol_Cole"]  # most images first, ties by name


def write_lfw(root, persons=PERSONS, images_folder: str = "lfw_funneled", side: int = 50):
    """torchvision's LFW layout under root/lfw-py: lfw-names.txt, peopleDevTrain.txt,
    peopleDevTest.txt (a count line, then 'Name<TAB>images' lines) and one folder of
    Name_0001.jpg, ... per person. lfw-names.txt is written in reverse name order, so that
    torchvision's class indices differ from the ranking."""
    folder = root / "lfw-py"
    folder.mkdir(parents=True)
    names = sorted(persons, reverse=True)
    (folder / "lfw-names.txt").write_text("".join(f"{n}\t{persons[n][0]}\n" for n in names))
    for split in ("Train", "Test"):
        listed = [n for n in persons if persons[n][1] == split]
        lines = [f"{len(listed)}\n"] + [f"{n}\t{persons[n][0]}\n" for n in listed]
        (folder / f"peopleDev{split}.txt").write_text("".join(lines))
    for name, (count, _, colour) in persons.items():
        (folder / images_folder / name).mkdir(parents=True)
        for number in range(1, count + 1):
            path = folder / images_folder / name / f"{name}_{number:04d}.jpg"
            Image.new("RGB", (side, side), colour).save(path, quality=95)
    return folder


def load(root, **params):
    return LfwPeople.from_params({k: str(v) for k, v in params.items()}).load(
        RunContext(data_dir=root))


def one_line_error(root, download: bool = False, **params) -> str:
    with pytest.raises(PrivbenchError) as error:
        LfwPeople.from_params({k: str(v) for k, v in params.items()}).load(
            RunContext(data_dir=root, download=download))
    message = error.value.format_message()
    assert "\n" not in message and "'lfw-people'" in message
    return message


def test_keeps_the_most_photographed_persons_ranked_by_count_then_name(tmp_path):
    write_lfw(tmp_path)
    dataset = load(tmp_path, people=3)
    assert dataset.images.shape == (10, 3, 32, 32) and dataset.images.dtype == torch.float32
    assert 0 <= dataset.images.min() and dataset.images.max() <= 1
    # pooled train list first (Alice, Carol; Eve dropped), then the test list (Bob; Dave dropped)
    assert dataset.labels["person"].tolist() == [0] * 4 + [2] * 3 + [1] * 3
    assert dataset.tasks["person"].classes == 3
    colours = torch.tensor([PERSONS[name][2] for name in BY_RANK], dtype=torch.float32) / 255
    expected = colours[dataset.labels["person"]][:, :, None, None]
    assert (dataset.images - expected).abs().max() < 0.05  # JPEG is lossy


def test_defaults_are_disguised_nets_12_persons_in_colour_32x32(tmp_path):
    source = LfwPeople.from_params({})
    assert (source.people, source.image_size, source.image_set) == (12, 32, "funneled")
    assert (source.target_task, source.private_task) == ("person", "person")
    # 13 persons: twelve with 2 images, the last one (by name, P12) with 1
    persons = {f"P{k:02d}": (1 if k == 12 else 2, "Train" if k % 2 else "Test", (10 * k, 90, 160))
               for k in range(13)}
    write_lfw(tmp_path, persons, side=12)
    dataset = load(tmp_path)
    assert dataset.images.shape == (24, 3, 32, 32)
    assert dataset.tasks["person"].classes == 12
    assert sorted(dataset.labels["person"].tolist()) == sorted(list(range(12)) * 2)


def test_more_people_than_the_lists_hold_is_one_line(tmp_path):
    write_lfw(tmp_path)
    message = one_line_error(tmp_path)
    assert "people=12" in message and "only 5 persons" in message and "people <= 5" in message


def test_image_size_resize_and_cache_key(tmp_path):
    write_lfw(tmp_path)
    assert load(tmp_path, people=2, image_size=16).images.shape == (7, 3, 16, 16)
    assert load(tmp_path, people=2, resize=8).images.shape == (7, 3, 8, 8)
    config = LfwPeople.from_params({"people": "5", "image_set": "original"}).load_config()
    assert (config["people"], config["image_set"], config["image_size"]) == (5, "original", 32)


def test_image_set_picks_torchvisions_folder(tmp_path):
    folder = write_lfw(tmp_path, images_folder="lfw")
    assert len(load(tmp_path, people=3, image_set="original")) == 10
    message = one_line_error(tmp_path, people=3)  # funneled: lfw_funneled/ is missing
    assert str(folder) in message and "lfw_funneled/" in message


@pytest.mark.parametrize("download", [False, True])
def test_missing_folder_is_one_line_naming_where_and_what(tmp_path, download):
    message = one_line_error(tmp_path, download=download)
    assert f"not found under {tmp_path / 'lfw-py'}" in message
    assert "no longer downloads LFW" in message and "--download" in message
    assert "peopleDevTrain.txt" in message and "--data-dir" in message


def test_unreadable_image_is_one_line(tmp_path):
    folder = write_lfw(tmp_path)
    missing = folder / "lfw_funneled" / "Bob_Baker" / "Bob_Baker_0002.jpg"
    missing.unlink()
    message = one_line_error(tmp_path, people=3)
    assert "cannot read image" in message and str(missing) in message


def test_person_missing_from_the_names_file_is_one_line(tmp_path):
    folder = write_lfw(tmp_path)
    names = folder / "lfw-names.txt"
    names.write_text("".join(line for line in names.read_text().splitlines(keepends=True)
                             if not line.startswith("Bob_Baker")))
    message = one_line_error(tmp_path, people=3)
    assert "cannot parse the LFW lists" in message and "Bob_Baker" in message


def test_registers_and_validates_its_parameters():
    check_registers(LfwPeople)
    check_params(LfwPeople)
    with pytest.raises(PrivbenchError, match="image_set"):
        LfwPeople.from_params({"image_set": "aligned"})
