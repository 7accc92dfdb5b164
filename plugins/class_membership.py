"""Attack ``class-membership`` (Sharma & Chen, Disguised-Nets, Sec. 4.2 and 5).

Question: was a class of images part of the owner's training data? Threat model: black-box in
DESIGN.md's words, with respect to the server model: the attacker holds the server model (or its
outputs) trained on protected data, but not the protection's key, so it feeds *raw* images.

Procedure (paper Sec. 4.2 and 5): the attacker feeds the server *raw* images one probe class at a
time; each class's predicted labels form a histogram over the model's k output classes with counts
n_j, mean mu = sum(n_j)/k and variance sigma^2 = sum((n_j - mu)^2)/k; its Fano factor is sigma^2 /
mu. In-training classes should give pointy histograms (high Fano factor), out-training ones flatter
histograms. The attack returns each probe class's Fano factor; the harness, which knows which probe
classes were out of training, compares the two groups with a Welch t-test (unequal variances); the
paper reports p <= 0.001 for unprotected models and p > 0.5 for disguised ones. The one-sided
alternative is "in-training Fano factors are higher" (the paper's hypothesis).

Where the out-of-training classes come from (``out``):
- a dataset name (e.g. ``out=fashion-mnist``): the paper's setting, "out-training" classes from
  another dataset (Sec. 5 feeds the MNIST model Fashion-MNIST images). The harness adds that
  dataset's classes (its finest task, images resized and converted to the scenario's shape, as many
  per class as the attacker has aux images per class) to the attacker's aux classes, under
  shuffled probe ids; the defense is fitted once, on all of the owner's classes;
- ``held-out``: within the dataset: the harness fits the defense on a variant of the scenario whose
  owner split lacks ``held_out`` target-task classes (chosen by the evaluation stream and cached;
  the attacker never learns which) and the probe classes are the target task's;
- ``auto`` (default): the paper's pair where privbench has it, mnist -> fashion-mnist, and offline
  digits -> lfw-subset (scikit-image's 25 x 25 face / non-face crops: 2 out classes, so the t-test
  has less power than with Fashion-MNIST's 10); ``held-out`` for every other dataset.

The harness reports ``attack.statistic_in`` and ``attack.statistic_out`` (the two groups' mean Fano
factors), ``attack.p_value`` and privacy.score = clip(1 + log10(p) / 3, 0, 1): 0 at p <= 0.001 (the
paper's unprotected result), 1 at p = 1. Needs a target task with at least 2 classes when the
out-of-training probes come from another dataset (each target class is an in-training probe class:
digits' default parity target gives 2 in against lfw-subset's 2 out, a test of little power), at
least 4 with ``held-out`` (e.g. digits with target=digit), and a server model that takes images
shaped like the input (``image-like``): raw images are no valid input to the server half of a split
model, which expects intermediate features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from privbench.api import (
    Attack,
    AttackOutput,
    apply,
    hookimpl,
    param,
)

MIN_CLASSES = 4
# out=auto: the paper's MNIST / Fashion-MNIST pair, and an offline pair for the bundled digits.
PAPER_PROBES = {"mnist": "fashion-mnist", "digits": "lfw-subset"}


def fano_factor(predicted: torch.Tensor, classes: int) -> float:
    """sigma^2 / mu of the histogram of ``predicted`` labels over ``classes`` bins (paper Sec. 4.2)."""
    counts = torch.bincount(predicted, minlength=classes).double()
    mean = counts.mean()
    variance = ((counts - mean) ** 2).mean()  # the paper divides by k, not k - 1
    return float(variance / mean) if mean > 0 else 0.0


def shaped_for_server(images: torch.Tensor, served: tuple[int, ...]) -> torch.Tensor:
    """Raw images in the shape the server takes (that of the protected data it was trained on):
    zero-padded at the bottom and right when that is larger (a block transform pads its images up
    to a whole number of blocks), bilinearly resized when it is smaller (a dimension-reducing
    projection narrows them)."""
    height, width = served[-2:]
    if tuple(images.shape[-2:]) == (height, width):
        return images
    if height >= images.shape[-2] and width >= images.shape[-1]:
        return F.pad(images, (0, width - images.shape[-1], 0, height - images.shape[-2]))
    return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False,
                         antialias=True)


@dataclass
class ClassMembership(Attack):
    """Tell in-training from out-training classes by the Fano factor of the server's predictions."""

    name: ClassVar[str] = "class-membership"
    summary: ClassVar[str] = ("black-box: Fano factors of the server's predictions on raw images, "
                              "in- vs out-of-training classes (Disguised-Nets)")
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"server", "image-like"})
    produces: ClassVar[str] = "class-statistic"
    cost_hint: ClassVar[float] = 3  # relative run time, for parallel scheduling

    out: str = param("auto", "where the out-of-training classes come from: a dataset name (the "
                             "paper's Fashion-MNIST for MNIST), held-out (classes left out of the "
                             "owner's data) or auto (mnist: fashion-mnist, digits: lfw-subset, "
                             "else held-out)")
    held_out: int = param(3, "with out=held-out: target-task classes left out of the owner's "
                             "training data", minimum=1)

    def probe_dataset(self, dataset: str) -> str | None:
        if self.out == "auto":
            return PAPER_PROBES.get(dataset)
        return None if self.out == "held-out" else self.out

    def unsupported(self, facts) -> str | None:
        """Out-of-training probes from another dataset: every target class is an in-training probe
        class, so 2 suffice for the t-test's two-sample variance; held out of the target task: at
        least MIN_CLASSES, 2 of them left in training."""
        classes = facts.classes()
        if self.probe_dataset(facts.dataset) is not None:
            if classes < 2:
                return (f"class-membership needs a target task with at least 2 classes; "
                        f"'{facts.target_task}' has {classes}")
            return None
        if classes < MIN_CLASSES or classes - self.held_out < 2:
            return (f"class-membership needs a target task with at least {MIN_CLASSES} classes and "
                    f"2 left in training; '{facts.target_task}' has {classes} (held_out="
                    f"{self.held_out}): choose a finer target, e.g. digits:target=digit")
        return None

    def held_out_classes(self) -> int:
        return self.held_out

    def run(self, view) -> AttackOutput:
        images, probe_ids = view.probes()
        images = shaped_for_server(images, tuple(view.observed.shape[1:]))
        predicted = apply(view.server, images, view).argmax(1)
        fano = {int(c): fano_factor(predicted[probe_ids == c], view.classes())
                for c in probe_ids.unique()}
        return AttackOutput(class_statistic=fano)


@hookimpl
def register_attacks(register):
    register(ClassMembership)
