"""Synthetic file sets in torchvision's on-disk layouts (CIFAR-10, LFW people, CelebA).

The reproductions on these datasets cannot run where the real files are missing; these writers
put a small stand-in in the same layout, with some class structure, so that ``privbench
reproduce --quick`` walks its whole code path (loader, models, defenses, attacks, row checks) in
the test suite. Each CIFAR-10 class and LFW person has its own colour and stripe pattern, drawn
from a seeded generator; CelebA's 'male' darkens a band at the top of a face and 'smiling' adds a
bright bar to the lower third; every image adds pixel noise on top. Nothing here is tuned to
make a reproduction's row hold: the rows are the papers' claims, the data is only something a
model can learn from.

torchvision checks the MD5 sums of CIFAR-10's and CelebA's files; ``md5_free`` (from
tests/test_torchvision_datasets.py) replaces those checks by file-exists checks, in process.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from privbench.torchvision_datasets import CELEBA_ATTRIBUTES

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")


def class_styles(rng: np.random.Generator, classes: int) -> np.ndarray:
    """Per class a colour (3 values), a stripe angle and a stripe period."""
    return np.column_stack([rng.uniform(40, 215, size=(classes, 3)), rng.uniform(0, np.pi, classes),
                            rng.uniform(4, 12, classes)])


def class_images(rng: np.random.Generator, styles: np.ndarray, labels: list[int], height: int,
                 width: int, noise: float = 40.0) -> np.ndarray:
    """N x H x W x 3 uint8 images: the colour and stripes of each label's style, plus Gaussian
    pixel noise (standard deviation ``noise`` grey levels)."""
    y, x = np.mgrid[:height, :width]
    images = np.empty((len(labels), height, width, 3))
    for index, label in enumerate(labels):
        *colour, angle, period = styles[label]
        stripes = 35 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period)
        images[index] = np.asarray(colour) + stripes[..., None]
    images += rng.normal(0, noise, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


# --- CIFAR-10: five pickled training batches, one test batch, batches.meta -------------------------

def write_cifar(root: Path, per_batch: int = 20, seed: int = 0) -> int:
    """``root/cifar-10-batches-py`` with ``per_batch`` images in each of the six batches (labels
    cycle through the 10 classes); returns the number of images written."""
    rng = np.random.default_rng(seed)
    styles = class_styles(rng, len(CIFAR_CLASSES))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [f"data_batch_{n}" for n in range(1, 6)] + ["test_batch"]
    start = 0
    for batch in batches:
        labels = [k % len(CIFAR_CLASSES) for k in range(start, start + per_batch)]
        pixels = class_images(rng, styles, labels, 32, 32)
        # CIFAR's rows are 3072 bytes in channel, row, column order; torchvision reads the
        # Python 2 pickles with encoding="latin1", so the keys are str.
        rows = pixels.transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        (folder / batch).write_bytes(pickle.dumps({"data": rows, "labels": labels}, protocol=2))
        start += per_batch
    meta = {"label_names": list(CIFAR_CLASSES)}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return start


# --- LFW people: lfw-names.txt, the development lists, one folder of JPEGs per person ----------------

def write_lfw(root: Path, persons: int = 14, images: int = 10, side: int = 48, seed: int = 0) -> int:
    """``root/lfw-py`` in torchvision's LFWPeople layout: ``persons`` persons, the first with
    ``images`` photos and each later one with one fewer (at least 2), alternately in the
    development train and test lists; returns the number of images written."""
    rng = np.random.default_rng(seed)
    folder = root / "lfw-py"
    folder.mkdir(parents=True)
    names = [f"Person_{chr(ord('A') + k)}{k:02d}" for k in range(persons)]
    counts = {name: max(2, images - k) for k, name in enumerate(names)}
    (folder / "lfw-names.txt").write_text("".join(f"{n}\t{counts[n]}\n" for n in names))
    for parity, split in enumerate(("Train", "Test")):
        listed = names[parity::2]
        lines = [f"{len(listed)}\n"] + [f"{n}\t{counts[n]}\n" for n in listed]
        (folder / f"peopleDev{split}.txt").write_text("".join(lines))
    labels = [k for k, name in enumerate(names) for _ in range(counts[name])]
    pixels = iter(class_images(rng, class_styles(rng, persons), labels, side, side))
    for name in names:
        (folder / "lfw_funneled" / name).mkdir(parents=True)
        for number in range(1, counts[name] + 1):
            path = folder / "lfw_funneled" / name / f"{name}_{number:04d}.jpg"
            Image.fromarray(next(pixels)).save(path, quality=95)
    return len(labels)


# --- CelebA: aligned 178 x 218 JPEGs and the space-separated lists ----------------------------------

def celeba_faces(rng: np.random.Generator, male: list[int], smiling: list[int]) -> np.ndarray:
    """N x 218 x 178 x 3 uint8 faces of one skin colour with pixel noise: 'male' faces darker in
    a band at the top, 'smiling' ones with a bright bar in the lower third (both inside the
    178 x 178 centre crop, rows 20 to 197, and of about the same area)."""
    faces = np.empty((len(male), 218, 178, 3))
    faces[:] = (190, 150, 125)
    faces[np.asarray(male, dtype=bool), 20:60] -= 60
    faces[np.asarray(smiling, dtype=bool), 130:180, 30:148] += 60
    faces += rng.normal(0, 40, size=faces.shape)
    return np.clip(faces, 0, 255).astype(np.uint8)


def write_celeba(root: Path, count: int = 120, seed: int = 0) -> int:
    """``root/celeba`` with ``count`` aligned JPEGs and CelebA's five list files; 'Male' and
    'Smiling' drawn independently at random, the other attributes too. Returns ``count``."""
    rng = np.random.default_rng(seed)
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{k + 1:06d}.jpg" for k in range(count)]
    attrs = np.where(rng.random((count, len(CELEBA_ATTRIBUTES))) < 0.5, 1, -1)
    male = (attrs[:, CELEBA_ATTRIBUTES.index("Male")] == 1).astype(int).tolist()
    smiling = (attrs[:, CELEBA_ATTRIBUTES.index("Smiling")] == 1).astype(int).tolist()
    for name, face in zip(names, celeba_faces(rng, male, smiling), strict=True):
        Image.fromarray(face).save(folder / "img_align_celeba" / name, quality=90)

    def rows(values) -> str:
        return "".join(f"{name} {' '.join(f'{v:>2}' for v in row)}\n"
                       for name, row in zip(names, values, strict=True))

    header = f"{count}\n"
    (folder / "list_attr_celeba.txt").write_text(
        header + " ".join(CELEBA_ATTRIBUTES) + " \n" + rows(attrs.tolist()))
    (folder / "list_bbox_celeba.txt").write_text(
        header + "image_id x_1 y_1 width height\n" + rows([[95, 71, 226, 313]] * count))
    (folder / "list_landmarks_align_celeba.txt").write_text(
        header + "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
        "rightmouth_x rightmouth_y\n" + rows([[69, 109, 106, 113, 77, 142, 73, 152, 108, 154]] * count))
    (folder / "identity_CelebA.txt").write_text(rows([[1 + k] for k in range(count)]))
    (folder / "list_eval_partition.txt").write_text(rows([[k % 3] for k in range(count)]))
    return count
