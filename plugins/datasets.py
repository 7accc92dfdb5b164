"""The built-in datasets: the offline ``digits`` and ``lfw-subset``, and torchvision's big ones."""

from __future__ import annotations

from privbench import hookimpl
from privbench.datasets import Digits, LfwSubset
from privbench.torchvision_datasets import CelebA, Cifar10, FashionMnist, LfwPeople, Mnist


@hookimpl
def register_datasets(register):
    for source in (Digits, LfwSubset, Mnist, FashionMnist, Cifar10, CelebA, LfwPeople):
        register(source)
