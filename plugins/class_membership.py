"""Attack ``class-membership`` (Sharma & Chen, Disguised-Nets, Sec. 4.2 and 5).

Question: was a class of images part of the owner's training data? Threat model: black-box in
DESIGN.md's words, with respect to the server model: the attacker holds the server model (or its
outputs) trained on protected data, but not the protection's key, so it feeds *raw* images.

Procedure (paper Sec. 4.2): the harness fits the defense on a variant of the scenario whose owner
split lacks ``held_out`` target-task classes (the harness chooses them from the evaluation stream
and caches the variant; the attacker never learns which). The view's server is that variant's. The
attack feeds it the attacker's raw aux images one class at a time; each class's predicted labels
form a histogram over the model's k output classes with counts n_j, mean mu = sum(n_j)/k and
variance sigma^2 = sum((n_j - mu)^2)/k; its Fano factor is sigma^2 / mu. In-training classes should
give pointy histograms (high Fano factor), out-training ones flatter histograms. The attack returns
each class's Fano factor; the harness, which knows the held-out classes, compares the two groups
with a Welch t-test (unequal variances); the paper reports p <= 0.001 for unprotected models and p >
0.5 for disguised ones. The one-sided alternative is "in-training Fano factors are higher" (the
paper's hypothesis).

The harness reports ``attack.statistic_in`` and ``attack.statistic_out`` (the two groups' mean Fano
factors), ``attack.p_value`` and privacy.score = clip(1 + log10(p) / 3, 0, 1): 0 at p <= 0.001 (the
paper's unprotected result), 1 at p = 1. Needs a target task with at least 4 classes (e.g. digits
with target=digit), and a server model that takes images shaped like the input (``image-like``): raw
images are no valid input to the server half of a split model, which expects intermediate features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from privbench.api import (
    Attack,
    AttackOutput,
    apply,
    hookimpl,
    param,
)

MIN_CLASSES = 4


def fano_factor(predicted: torch.Tensor, classes: int) -> float:
    """sigma^2 / mu of the histogram of ``predicted`` labels over ``classes`` bins (paper Sec. 4.2)."""
    counts = torch.bincount(predicted, minlength=classes).double()
    mean = counts.mean()
    variance = ((counts - mean) ** 2).mean()  # the paper divides by k, not k - 1
    return float(variance / mean) if mean > 0 else 0.0


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

    held_out: int = param(3, "target-task classes left out of the owner's training data", minimum=1)

    def unsupported(self, facts) -> str | None:
        classes = facts.classes()
        if classes < MIN_CLASSES or classes - self.held_out < 2:
            return (f"class-membership needs a target task with at least {MIN_CLASSES} classes and "
                    f"2 left in training; '{facts.target_task}' has {classes} (held_out="
                    f"{self.held_out}): choose a finer target, e.g. digits:target=digit")
        return None

    def held_out_classes(self) -> int:
        return self.held_out

    def run(self, view) -> AttackOutput:
        classes = view.classes()
        labels = view.aux_labels()
        predicted = apply(view.server, view.aux_images, view).argmax(1)
        fano = {c: fano_factor(predicted[labels == c], classes) for c in range(classes)
                if bool((labels == c).any())}
        return AttackOutput(class_statistic=fano)


@hookimpl
def register_attacks(register):
    register(ClassMembership)
