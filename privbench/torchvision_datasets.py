"""Datasets read from disk through torchvision: MNIST, Fashion-MNIST, CIFAR-10, CelebA, LFW people.

Every source pools the dataset's official train and test splits (train first): the scenario draws
its own owner / aux / test splits by seed. The files live under ``ctx.data_dir`` in torchvision's
own layout; ``ctx.download`` lets torchvision fetch them (this needs internet). A missing dataset is
reported as one line naming the folder that was searched and how to fill it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from privbench.datasets import DIGIT_TASKS, Dataset, DatasetSource, LabelTask, digit_task_labels
from privbench.errors import PrivbenchError
from privbench.params import param

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from privbench.context import RunContext

FETCH_HINT = "run with --download to fetch it (needs internet) or place torchvision's files there"


def open_torchvision(name: str, folder: Path, ctx: RunContext, build: Callable,
                     fetch_hint: str = FETCH_HINT, fetchable: bool = True):
    """``build()`` (a torchvision dataset), with a missing or failed download as one line.

    ``fetchable`` False: torchvision cannot download this dataset, so ``build`` never tries and a
    missing one is reported as not found (``fetch_hint`` says how to place it) even under
    --download."""
    fetching = ctx.download and fetchable
    caught = (RuntimeError, OSError) if fetching else RuntimeError
    try:
        return build()
    except caught as error:
        if fetching:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise PrivbenchError(f"dataset '{name}' could not be downloaded into {folder} "
                                 f"({reason}); check the network, or place torchvision's files there "
                                 "(--data-dir sets the folder)") from None
        raise PrivbenchError(f"dataset '{name}' not found under {folder}; {fetch_hint} "
                             "(--data-dir sets the folder)") from None


def task_dict(tasks: tuple[LabelTask, ...]) -> dict[str, LabelTask]:
    return {task.name: task for task in tasks}


def pooled_idx(source: DatasetSource, dataset_class, ctx: RunContext):
    """Train + test images (N x 1 x H x W in [0, 1]) and labels of an MNIST-format dataset."""
    import torch
    root = Path(ctx.data_dir)
    hint = ("run with --download to fetch it (needs internet) or place the four uncompressed idx "
            "files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-...) in its raw/ folder")
    parts = [open_torchvision(source.name, root / dataset_class.__name__, ctx,
                              lambda train=train: dataset_class(root=root, train=train,
                                                                download=ctx.download), hint)
             for train in (True, False)]
    images = torch.cat([part.data for part in parts]).unsqueeze(1).float().div_(255)
    return images, torch.cat([part.targets for part in parts]).long()


@dataclass
class Mnist(DatasetSource):
    """MNIST handwritten digits (torchvision.datasets.MNIST): 70,000 grey 28x28 images.

    The 60,000 training and 10,000 test digits are pooled (training first); the scenario re-splits
    them by seed. Images are 1 x 28 x 28 in [0, 1]. Tasks: ``digit`` (0-9), ``parity`` (even 0,
    odd 1) and ``magnitude`` (0-4 -> 0, 5-9 -> 1). Files: ``<data_dir>/MNIST/raw``.
    """

    name: ClassVar[str] = "mnist"
    summary: ClassVar[str] = "MNIST handwritten digits via torchvision, 70,000 28x28 grey images"
    tasks: ClassVar[tuple[LabelTask, ...]] = DIGIT_TASKS
    default_target: ClassVar[str] = "parity"
    default_private: ClassVar[str] = "digit"

    def load_raw(self, ctx: RunContext) -> Dataset:
        from torchvision.datasets import MNIST
        images, digits = pooled_idx(self, MNIST, ctx)
        return Dataset(self.name, images, digit_task_labels(digits), task_dict(self.tasks))


# Fashion-MNIST class -> group: tops 0, footwear 1, other 2 (index = class number).
FASHION_GROUP = (0, 2, 0, 0, 0, 1, 0, 1, 2, 1)


@dataclass
class FashionMnist(DatasetSource):
    """Fashion-MNIST clothing pictures (torchvision.datasets.FashionMNIST): 70,000 grey 28x28.

    Training (60,000) and test (10,000) images are pooled, training first, and re-split by the
    scenario's seed. Images are 1 x 28 x 28 in [0, 1]. Tasks: ``class``, the 10 original classes
    (0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag,
    9 Ankle boot), and ``group``, 3 coarse groups: tops 0 (T-shirt/top, Pullover, Dress, Coat,
    Shirt), footwear 1 (Sandal, Sneaker, Ankle boot), other 2 (Trouser, Bag).
    Files: ``<data_dir>/FashionMNIST/raw``.
    """

    name: ClassVar[str] = "fashion-mnist"
    summary: ClassVar[str] = "Fashion-MNIST clothing via torchvision, 70,000 28x28 grey images"
    tasks: ClassVar[tuple[LabelTask, ...]] = (
        LabelTask("class", 10, "which of the 10 Fashion-MNIST classes"),
        LabelTask("group", 3, "tops (0), footwear (1) or other: trousers and bags (2)"),
    )
    default_target: ClassVar[str] = "group"
    default_private: ClassVar[str] = "class"

    def load_raw(self, ctx: RunContext) -> Dataset:
        import torch
        from torchvision.datasets import FashionMNIST
        images, classes = pooled_idx(self, FashionMNIST, ctx)
        labels = {"class": classes, "group": torch.tensor(FASHION_GROUP)[classes]}
        return Dataset(self.name, images, labels, task_dict(self.tasks))


# CIFAR-10 class -> animal: vehicles (airplane, automobile, ship, truck) 0, animals 1.
CIFAR_ANIMAL = (0, 0, 1, 1, 1, 1, 1, 1, 0, 0)


@dataclass
class Cifar10(DatasetSource):
    """CIFAR-10 (torchvision.datasets.CIFAR10): 60,000 colour 32x32 photos in 10 classes.

    The 50,000 training and 10,000 test photos are pooled, training first; the scenario re-splits
    them by seed. Images are 3 x 32 x 32 in [0, 1]. Tasks: ``class`` (0 airplane, 1 automobile,
    2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse, 8 ship, 9 truck) and ``animal``: vehicles 0
    (airplane, automobile, ship, truck), animals 1 (the other six).
    Files: ``<data_dir>/cifar-10-batches-py``.
    """

    name: ClassVar[str] = "cifar10"
    summary: ClassVar[str] = "CIFAR-10 photos via torchvision, 60,000 32x32 colour images"
    tasks: ClassVar[tuple[LabelTask, ...]] = (
        LabelTask("class", 10, "which of the 10 CIFAR-10 classes"),
        LabelTask("animal", 2, "vehicle (0) or animal (1)"),
    )
    default_target: ClassVar[str] = "animal"
    default_private: ClassVar[str] = "class"

    def load_raw(self, ctx: RunContext) -> Dataset:
        import torch
        from torchvision.datasets import CIFAR10
        root = Path(ctx.data_dir)
        parts = [open_torchvision(self.name, root / CIFAR10.base_folder, ctx,
                                  lambda train=train: CIFAR10(root=root, train=train,
                                                              download=ctx.download))
                 for train in (True, False)]
        pixels = torch.cat([torch.from_numpy(part.data) for part in parts])  # N x H x W x C
        images = pixels.permute(0, 3, 1, 2).float().div_(255).contiguous()
        classes = torch.tensor([t for part in parts for t in part.targets], dtype=torch.long)
        labels = {"class": classes, "animal": torch.tensor(CIFAR_ANIMAL)[classes]}
        return Dataset(self.name, images, labels, task_dict(self.tasks))


CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)

CELEBA_FILES = ("img_align_celeba/ (the aligned JPEGs), list_attr_celeba.txt, identity_CelebA.txt, "
                "list_bbox_celeba.txt, list_landmarks_align_celeba.txt, list_eval_partition.txt")


@dataclass
class CelebA(DatasetSource):
    """CelebA aligned faces (torchvision.datasets.CelebA, split "all"): 202,599 colour photos.

    The official train, valid and test splits are pooled in file order; the scenario re-splits
    them by seed. Each 178 x 218 aligned JPEG is centre-cropped to 178 x 178 and resized to
    ``image_size``, giving 3 x image_size x image_size in [0, 1]. ``limit`` > 0 reads only the first
    ``limit`` files (the whole set at 64 px is about 10 GB as float32, so set it). Tasks: one per
    binary attribute, named as the attribute in lower case ("male", "smiling", "5_o_clock_shadow",
    ...), label 1 where CelebA marks the attribute present (1) and 0 where absent (-1).
    Files: ``<data_dir>/celeba``.
    """

    name: ClassVar[str] = "celeba"
    summary: ClassVar[str] = ("CelebA aligned faces via torchvision, 202,599 colour images, "
                              "40 attributes")
    tasks: ClassVar[tuple[LabelTask, ...]] = tuple(
        LabelTask(attr.lower(), 2, f"attribute {attr} absent (0) or present (1)")
        for attr in CELEBA_ATTRIBUTES)
    default_target: ClassVar[str] = "male"
    default_private: ClassVar[str] = "smiling"

    image_size: int = param(64, "side of the square the aligned faces are centre-cropped (178 px) "
                            "and resized to", minimum=8)

    def load_config(self) -> dict:
        return {**super().load_config(), "image_size": self.image_size}

    def load_raw(self, ctx: RunContext) -> Dataset:
        from torchvision.datasets import CelebA as TorchCelebA
        root = Path(ctx.data_dir)
        hint = ("--download fetches it from Google Drive through gdown (needs internet, often "
                f"fails on Drive quotas); otherwise place {CELEBA_FILES} there")
        celeba = open_torchvision(self.name, root / TorchCelebA.base_folder, ctx,
                                  lambda: TorchCelebA(root=root, split="all", target_type="attr",
                                                      download=ctx.download), hint)
        count = min(self.limit, len(celeba)) if self.limit else len(celeba)
        folder = root / TorchCelebA.base_folder / "img_align_celeba"
        images = self.read_faces(folder, celeba.filename[:count], ctx)
        labels = attribute_labels(celeba.attr_names, celeba.attr[:count])
        return Dataset(self.name, images, labels, task_dict(self.tasks))

    def read_faces(self, folder: Path, filenames: list[str], ctx: RunContext) -> torch.Tensor:
        """The listed JPEGs, centre-cropped square and resized, as N x 3 x S x S in [0, 1]."""
        import torch
        images = torch.empty(len(filenames), 3, self.image_size, self.image_size)
        with ctx.progress.task("reading CelebA faces", total=len(filenames)) as advance:
            for index, filename in enumerate(filenames):
                images[index] = square_face(folder / filename, self.image_size)
                advance()
        return images


def square_face(path: Path, size: int, dataset: str = "celeba") -> torch.Tensor:
    """One image centre-cropped to a square and resized to size x size: 3 x S x S in [0, 1]."""
    import numpy as np
    import torch
    from PIL import Image
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except OSError as error:
        raise PrivbenchError(f"dataset '{dataset}': cannot read image {path} ({error})") from None
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div_(255)


def attribute_labels(header: list[str], attr: torch.Tensor) -> dict[str, torch.Tensor]:
    """Labels of every CelebA attribute task from torchvision's 0 / 1 attribute matrix."""
    columns = [name for name in header if name]  # the real header line ends with a space
    missing = [name for name in CELEBA_ATTRIBUTES if name not in columns]
    if missing:
        raise PrivbenchError(f"dataset 'celeba': list_attr_celeba.txt lacks the attribute "
                             f"'{missing[0]}'; expected CelebA's 40 attributes")
    return {name.lower(): attr[:, columns.index(name)].long() for name in CELEBA_ATTRIBUTES}


# LFW image sets (torchvision's ``image_set``) -> the folder their extracted images live in.
LFW_IMAGE_FOLDERS = {"funneled": "lfw_funneled", "original": "lfw", "deepfunneled": "lfw-deepfunneled"}
LFW_SPLITS = ("train", "test")  # peopleDevTrain.txt and peopleDevTest.txt: disjoint persons


def lfw_people_class():
    """torchvision's ``LFWPeople``, checking that its files are present instead of their MD5s.

    torchvision checks the MD5 of the downloaded ``.tgz`` archive, which it can no longer download
    and which a copy fetched by hand (e.g. a mirror's extracted folder) lacks; this subclass asks
    only for what it reads: the image folder, ``lfw-names.txt`` and the split's people list."""
    from torchvision.datasets import LFWPeople

    class PresentFilesLFWPeople(LFWPeople):
        def _check_integrity(self) -> bool:
            folder = Path(self.root)
            images = folder / self.file_dict[self.image_set][0]
            return (images.is_dir() and (folder / self.names).is_file()
                    and (folder / self.labels_file).is_file())

    return PresentFilesLFWPeople


@dataclass
class LfwPeople(DatasetSource):
    """LFW faces of the ``people`` most photographed persons (torchvision.datasets.LFWPeople).

    Disguised-Nets (Sharma & Chen, Section 5, "Datasets") uses a subset of LFW: 12 persons, about
    1,400 training and 150 test colour images resized to 32 x 32. Here the persons of LFW's
    development train and test lists (``peopleDevTrain.txt``, ``peopleDevTest.txt``: every LFW
    person, each in one list) are pooled, train first, and the ``people`` persons with the most
    images are kept; the scenario re-splits their images by seed. Task ``person``: label 0 is the
    person with the most images, 1 the next, ...; persons with equally many images are ordered by
    name (Unicode order of their LFW folder names). Each 250 x 250 image is resized to
    ``image_size``, giving 3 x image_size x image_size in [0, 1]. ``image_set`` picks torchvision's
    alignment: ``funneled`` (folder ``lfw_funneled``), ``original`` (``lfw``) or ``deepfunneled``
    (``lfw-deepfunneled``). Files: ``<data_dir>/lfw-py``. torchvision no longer downloads LFW, so
    ``--download`` cannot fetch it; place the files by hand.
    """

    name: ClassVar[str] = "lfw-people"
    summary: ClassVar[str] = ("LFW faces of the most photographed persons via torchvision "
                              "(Disguised-Nets: 12 persons), 32x32 colour")
    tasks: ClassVar[tuple[LabelTask, ...]] = (
        LabelTask("person", 12, "which of the `people` persons (0: the one with the most images)"),)
    default_target: ClassVar[str] = "person"
    default_private: ClassVar[str] = "person"

    people: int = param(12, "keep this many persons, those with the most images "
                        "(Disguised-Nets: 12)", minimum=2)
    image_size: int = param(32, "side of the square the 250x250 LFW images are resized to "
                            "(Disguised-Nets: 32)", minimum=8)
    image_set: str = param("funneled", "torchvision's LFW alignment (its image folder under lfw-py)",
                           choices=tuple(LFW_IMAGE_FOLDERS))

    def load_raw(self, ctx: RunContext) -> Dataset:
        import torch
        paths, persons = self.pooled_people(ctx)
        ranked = most_photographed(persons, self.people, self.name)
        rank = {person: label for label, person in enumerate(ranked)}
        kept = [index for index, person in enumerate(persons) if person in rank]
        images = self.read_images([paths[index] for index in kept], ctx)
        labels = torch.tensor([rank[persons[index]] for index in kept], dtype=torch.long)
        task = LabelTask("person", self.people, f"which of the {self.people} persons with the most "
                         "images (0: the one with the most)")
        return Dataset(self.name, images, {"person": labels}, {"person": task})

    def pooled_people(self, ctx: RunContext) -> tuple[list[str], list[str]]:
        """Image paths and person names of LFW's development train then test lists."""
        root = Path(ctx.data_dir)
        reader = lfw_people_class()
        folder = root / reader.base_folder
        hint = ("torchvision no longer downloads LFW, so --download cannot fetch it; place "
                "lfw-names.txt, peopleDevTrain.txt, peopleDevTest.txt and the extracted "
                f"{LFW_IMAGE_FOLDERS[self.image_set]}/ folder (one folder of Name_0001.jpg, ... "
                "per person) there")
        paths, persons = [], []
        for split in LFW_SPLITS:
            part = open_torchvision(self.name, folder, ctx, lambda split=split: self.open_split(
                reader, root, folder, split), hint, fetchable=False)
            names = {index: person for person, index in part.class_to_idx.items()}
            paths += part.data
            persons += [names[target] for target in part.targets]
        return paths, persons

    def open_split(self, reader, root: Path, folder: Path, split: str):
        """One development split through torchvision, a malformed list file as one line."""
        try:
            return reader(root=root, split=split, image_set=self.image_set, download=False)
        except (KeyError, ValueError, IndexError) as error:
            raise PrivbenchError(
                f"dataset '{self.name}': cannot parse the LFW lists in {folder} ({type(error).__name__}: "
                f"{error}); expected lfw-names.txt lines 'Name<TAB>count' and people lists of a "
                "count line then 'Name<TAB>count' lines, every name also in lfw-names.txt") from None

    def read_images(self, paths: list[str], ctx: RunContext) -> torch.Tensor:
        """The listed JPEGs resized to image_size (LFW's are square, so the centre crop keeps the
        whole image): N x 3 x S x S in [0, 1]."""
        import torch
        images = torch.empty(len(paths), 3, self.image_size, self.image_size)
        with ctx.progress.task("reading LFW faces", total=len(paths)) as advance:
            for index, path in enumerate(paths):
                images[index] = square_face(Path(path), self.image_size, self.name)
                advance()
        return images


def most_photographed(persons: list[str], count: int, dataset: str) -> list[str]:
    """The ``count`` names occurring most often in ``persons``, most first, ties by name."""
    from collections import Counter
    images = Counter(persons)
    if len(images) < count:
        raise PrivbenchError(f"dataset '{dataset}': people={count} but the LFW lists hold only "
                             f"{len(images)} persons; accepted: people <= {len(images)}")
    return sorted(images, key=lambda person: (-images[person], person))[:count]
