"""The torchvision-backed datasets, on tiny files written in torchvision's own on-disk formats."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from privbench.context import RunContext
from privbench.errors import PrivbenchError
from privbench.torchvision_datasets import CELEBA_ATTRIBUTES, CelebA, Cifar10, FashionMnist, Mnist

TRAIN_LABELS = [0, 1, 2, 3, 4, 5]
TEST_LABELS = [6, 7, 8, 9]


def md5_free(monkeypatch, module) -> None:
    """Keep the file-exists checks of ``module`` but skip its MD5 comparisons."""
    monkeypatch.setattr(module, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


# --- MNIST and Fashion-MNIST: idx files, big-endian headers --------------------------------------

def idx_pixels(offset: int, count: int) -> np.ndarray:
    """Images whose pixel (i, y, x) is (offset + 10 i + y + x) mod 256."""
    i, y, x = np.ogrid[:count, :28, :28]
    return ((offset + 10 * i + y + x) % 256).astype(np.uint8)


def write_idx(raw, prefix: str, pixels: np.ndarray, labels: list[int]) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">IIII", 2051, len(pixels), 28, 28)
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + pixels.tobytes())
    header = struct.pack(">II", 2049, len(labels))
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header + bytes(labels))


def write_mnist_like(root, folder: str) -> torch.Tensor:
    """6 training and 4 test images; returns the pooled pixels in [0, 1]."""
    train, test = idx_pixels(0, len(TRAIN_LABELS)), idx_pixels(100, len(TEST_LABELS))
    write_idx(root / folder / "raw", "train", train, TRAIN_LABELS)
    write_idx(root / folder / "raw", "t10k", test, TEST_LABELS)
    return torch.from_numpy(np.concatenate([train, test])).float().unsqueeze(1) / 255


def test_mnist_pools_train_then_test(tmp_path):
    expected = write_mnist_like(tmp_path, "MNIST")
    dataset = Mnist.from_params({}).load(RunContext(data_dir=tmp_path))
    assert dataset.images.shape == (10, 1, 28, 28)
    assert dataset.images.dtype == torch.float32
    assert 0 <= dataset.images.min() and dataset.images.max() <= 1
    assert torch.allclose(dataset.images, expected)
    assert dataset.labels["digit"].tolist() == list(range(10))
    assert dataset.labels["parity"].tolist() == [0, 1] * 5
    assert dataset.labels["magnitude"].tolist() == [0] * 5 + [1] * 5
    assert set(dataset.tasks) == {"digit", "parity", "magnitude", "above5"}


def test_mnist_limit_takes_a_fixed_subset(tmp_path):
    write_mnist_like(tmp_path, "MNIST")
    ctx = RunContext(data_dir=tmp_path)
    first = Mnist.from_params({"limit": "4"}).load(ctx)
    again = Mnist.from_params({"limit": "4"}).load(ctx)
    assert len(first) == 4
    assert first.labels["digit"].tolist() == again.labels["digit"].tolist()


def test_fashion_mnist_groups(tmp_path):
    expected = write_mnist_like(tmp_path, "FashionMNIST")
    source = FashionMnist.from_params({})
    assert (source.target_task, source.private_task) == ("group", "class")
    dataset = source.load(RunContext(data_dir=tmp_path))
    assert dataset.images.shape == (10, 1, 28, 28)
    assert torch.allclose(dataset.images, expected)
    assert dataset.labels["class"].tolist() == list(range(10))
    # T-shirt, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot
    assert dataset.labels["group"].tolist() == [0, 2, 0, 0, 0, 1, 0, 1, 2, 1]
    assert dataset.tasks["group"].classes == 3


# --- CIFAR-10: pickled batches -------------------------------------------------------------------

def cifar_pixels(start: int, count: int) -> np.ndarray:
    """Rows of 3072 bytes in channel, row, column order: pixel (k, c, y, x) = k + 50 c + y + 2 x."""
    k, c, y, x = np.ogrid[start:start + count, :3, :32, :32]
    return ((k + 50 * c + y + 2 * x) % 256).astype(np.uint8).reshape(count, 3072)


def write_cifar(root) -> int:
    """Five training batches of 2 images and a test batch of 3; labels are k mod 10."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    # torchvision reads the Python 2 pickles with encoding="latin1", so their keys come back as
    # str: it indexes entry["data"], and bytes keys (b"data") would not be found.
    batches = [f"data_batch_{n}" for n in range(1, 6)] + ["test_batch"]
    start = 0
    for batch in batches:
        count = 3 if batch == "test_batch" else 2
        entry = {"data": cifar_pixels(start, count),
                 "labels": [k % 10 for k in range(start, start + count)]}
        (folder / batch).write_bytes(pickle.dumps(entry, protocol=2))
        start += count
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=2))
    return start


def test_cifar10_channels_first_and_animal_task(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar
    md5_free(monkeypatch, cifar)
    total = write_cifar(tmp_path)
    dataset = Cifar10.from_params({}).load(RunContext(data_dir=tmp_path))
    assert dataset.images.shape == (total, 3, 32, 32)
    assert dataset.images[5, 2, 4, 7].item() == pytest.approx((5 + 100 + 4 + 14) / 255)
    expected = torch.from_numpy(cifar_pixels(0, total)).reshape(total, 3, 32, 32).float() / 255
    assert torch.allclose(dataset.images, expected)
    classes = [k % 10 for k in range(total)]
    assert dataset.labels["class"].tolist() == classes
    vehicles = {0, 1, 8, 9}
    assert dataset.labels["animal"].tolist() == [int(c not in vehicles) for c in classes]


# --- CelebA: aligned JPEGs and space-separated lists ---------------------------------------------

COLOURS = [(0, 0, 255), (0, 200, 0), (255, 255, 0), (40, 40, 40), (250, 250, 250)]


def celeba_attributes(k: int) -> list[int]:
    """Image k: Male present when k is even, Smiling present when k is 1 or 4, others alternate."""
    values = [1 if (k + a) % 3 == 0 else -1 for a in range(len(CELEBA_ATTRIBUTES))]
    values[CELEBA_ATTRIBUTES.index("Male")] = 1 if k % 2 == 0 else -1
    values[CELEBA_ATTRIBUTES.index("Smiling")] = 1 if k in (1, 4) else -1
    return values


def write_celeba(root) -> None:
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{k + 1:06d}.jpg" for k in range(len(COLOURS))]
    for name, colour in zip(names, COLOURS, strict=True):
        image = Image.new("RGB", (178, 218), colour)
        # red bands that the 178 x 178 centre crop (rows 20 to 197) must remove
        image.paste((255, 0, 0), (0, 0, 178, 16))
        image.paste((255, 0, 0), (0, 208, 178, 218))
        image.save(folder / "img_align_celeba" / name, quality=95)
    count = f"{len(names)}\n"

    def rows(values) -> str:
        return "".join(f"{name} {' '.join(f'{v:>2}' for v in row)}\n"
                       for name, row in zip(names, values, strict=True))

    # list_attr_celeba.txt: the count, the attribute names (the real line ends with a space), then
    # one row per image of -1 / 1 values aligned with extra spaces.
    attrs = [celeba_attributes(k) for k in range(len(names))]
    (folder / "list_attr_celeba.txt").write_text(
        count + " ".join(CELEBA_ATTRIBUTES) + " \n" + rows(attrs))
    (folder / "list_bbox_celeba.txt").write_text(
        count + "image_id x_1 y_1 width height\n" + rows([[95, 71, 226, 313]] * len(names)))
    (folder / "list_landmarks_align_celeba.txt").write_text(
        count + "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
        "rightmouth_x rightmouth_y\n" + rows([[69, 109, 106, 113, 77, 142, 73, 152, 108, 154]] * 5))
    # No header: identity_CelebA.txt and list_eval_partition.txt start with the first image.
    (folder / "identity_CelebA.txt").write_text(rows([[2880 + k] for k in range(len(names))]))
    (folder / "list_eval_partition.txt").write_text(rows([[0], [0], [0], [1], [2]]))


@pytest.fixture
def celeba_root(tmp_path, monkeypatch):
    import torchvision.datasets.celeba as celeba
    md5_free(monkeypatch, celeba)
    write_celeba(tmp_path)
    return tmp_path


def test_celeba_crops_resizes_and_labels(celeba_root):
    source = CelebA.from_params({})
    assert (source.target_task, source.private_task) == ("male", "smiling")
    dataset = source.load(RunContext(data_dir=celeba_root))
    assert dataset.images.shape == (len(COLOURS), 3, 64, 64)
    expected = torch.tensor(COLOURS, dtype=torch.float32)[:, :, None, None] / 255
    # JPEG is lossy; no red from the cropped-away bands may remain
    assert (dataset.images - expected).abs().max() < 0.05
    assert dataset.labels["male"].tolist() == [1, 0, 1, 0, 1]
    assert dataset.labels["smiling"].tolist() == [0, 1, 0, 0, 1]
    shadow = [int(celeba_attributes(k)[0] == 1) for k in range(len(COLOURS))]
    assert dataset.labels["5_o_clock_shadow"].tolist() == shadow
    assert len(dataset.tasks) == 40 and dataset.tasks["young"].classes == 2


def test_celeba_image_size_and_limit(celeba_root):
    source = CelebA.from_params({"image_size": "24", "limit": "2"})
    dataset = source.load(RunContext(data_dir=celeba_root))
    assert dataset.images.shape == (2, 3, 24, 24)
    assert dataset.labels["male"].tolist() == [1, 0]
    assert source.load_config()["image_size"] == 24


def test_celeba_image_size_has_a_minimum():
    with pytest.raises(PrivbenchError, match="image_size"):
        CelebA.from_params({"image_size": "4"})


# --- Errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "folder"), [
    (Mnist, "MNIST"), (FashionMnist, "FashionMNIST"), (Cifar10, "cifar-10-batches-py"),
    (CelebA, "celeba")])
def test_missing_dataset_is_one_line(tmp_path, source, folder):
    with pytest.raises(PrivbenchError) as error:
        source.from_params({}).load(RunContext(data_dir=tmp_path))
    message = error.value.format_message()
    assert "\n" not in message
    assert f"'{source.name}'" in message
    assert str(tmp_path / folder) in message
    assert "--download" in message


def test_missing_celeba_names_its_files_and_google_drive(tmp_path):
    with pytest.raises(PrivbenchError) as error:
        CelebA.from_params({}).load(RunContext(data_dir=tmp_path))
    message = error.value.format_message()
    assert "Google Drive" in message
    assert "list_attr_celeba.txt" in message and "img_align_celeba" in message


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried a mirror")

    monkeypatch.setattr(MNIST, "download", offline)
    with pytest.raises(PrivbenchError) as error:
        Mnist.from_params({}).load(RunContext(data_dir=tmp_path, download=True))
    message = error.value.format_message()
    assert "\n" not in message
    assert "could not be downloaded" in message and "Error downloading" in message


def test_unknown_task_names_the_accepted_ones():
    with pytest.raises(PrivbenchError, match="accepted: above5, digit, magnitude, parity"):
        Mnist.from_params({"target": "nope"})
