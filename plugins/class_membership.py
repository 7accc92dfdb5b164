"""Attack ``class-membership`` (Sharma & Chen, Disguised-Nets, Sec. 4.2 and 5).

Question: was a class of images part of the owner's training data? Threat model: black-box in
DESIGN.md's words, with respect to the server model: the attacker holds the server model (or its
outputs) trained on protected data, but not the protection's key, so it feeds *raw* images.

Procedure (paper Sec. 4.2): the defense is fitted on a variant of the scenario whose owner split
lacks ``held_out`` target-task classes (chosen by the seed; the matrix fits and caches the variant).
The server model is fed the attacker's raw aux images one class at a time, in-training and
out-training classes alike; each class's predicted labels form a histogram over the model's k
output classes with counts n_j, mean mu = sum(n_j)/k and variance sigma^2 = sum((n_j - mu)^2)/k;
its Fano factor is sigma^2 / mu. In-training classes should give pointy histograms (high Fano
factor), out-training ones flatter histograms. A Welch t-test (unequal variances) compares the two
groups; the paper reports p <= 0.001 for unprotected models and p > 0.5 for disguised ones. We use
the one-sided alternative "in-training Fano factors are higher" (the paper's hypothesis).

Reports ``attack.fano_in`` and ``attack.fano_out`` (group means), ``attack.p_value`` and
privacy.score = clip(1 + log10(p) / 3, 0, 1): 0 at p <= 0.001 (the paper's unprotected result),
1 at p = 1. Needs a target task with at least 4 classes (e.g. digits with target=digit), and a
server model that takes images shaped like the input (``image-like``): raw images are no valid
input to the server half of a split model, which expects intermediate features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from privbench import hookimpl
from privbench.core import Attack, AttackResult
from privbench.params import param
from privbench.training import apply

MIN_CLASSES = 4


def fano_factor(predicted: torch.Tensor, classes: int) -> float:
    """sigma^2 / mu of the histogram of ``predicted`` labels over ``classes`` bins (paper Sec. 4.2)."""
    counts = torch.bincount(predicted, minlength=classes).double()
    mean = counts.mean()
    variance = ((counts - mean) ** 2).mean()  # the paper divides by k, not k - 1
    return float(variance / mean) if mean > 0 else 0.0


def welch_p_value(inside: list[float], outside: list[float]) -> float:
    """One-sided Welch t-test p-value for mean(inside) > mean(outside); 1.0 when undefined."""
    from scipy.stats import ttest_ind
    result = ttest_ind(inside, outside, equal_var=False, alternative="greater")
    return 1.0 if math.isnan(result.pvalue) else float(result.pvalue)


def held_out_classes(classes: int, count: int, seed: int) -> tuple[int, ...]:
    """``count`` target-task classes chosen by ``seed``, left out of the owner's training data."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(sorted(torch.randperm(classes, generator=generator)[:count].tolist()))


@dataclass
class ClassMembership(Attack):
    """Tell in-training from out-training classes by the Fano factor of the server's predictions."""

    name: ClassVar[str] = "class-membership"
    summary: ClassVar[str] = ("black-box: Fano factors of the server's predictions on raw images, "
                              "in- vs out-of-training classes (Disguised-Nets)")
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"server", "image-like"})
    privacy_mapping: ClassVar[str] = "clip(1 + log10(attack.p_value) / 3, 0, 1)"
    cost_hint: ClassVar[float] = 3  # relative run time, for parallel scheduling

    held_out: int = param(3, "target-task classes left out of the owner's training data", minimum=1)

    def unsupported(self, scenario) -> str | None:
        classes = scenario.classes()
        if classes < MIN_CLASSES or classes - self.held_out < 2:
            return (f"class-membership needs a target task with at least {MIN_CLASSES} classes and "
                    f"2 left in training; '{scenario.target_task}' has {classes} (held_out="
                    f"{self.held_out}): choose a finer target, e.g. digits:target=digit")
        return None

    def run(self, scenario, protection, ctx) -> AttackResult:
        classes = scenario.classes()
        out_classes = held_out_classes(classes, self.held_out, scenario.seed)
        variant = ctx.fit_defense(scenario.with_held_out(out_classes))
        images, labels = scenario.images("aux"), scenario.labels("aux")
        predicted = apply(variant.server, images, ctx).argmax(1)
        fano = {c: fano_factor(predicted[labels == c], classes) for c in range(classes)
                if bool((labels == c).any())}
        inside = [f for c, f in fano.items() if c not in out_classes]
        outside = [f for c, f in fano.items() if c in out_classes]
        p_value = welch_p_value(inside, outside)
        return AttackResult({
            "attack.fano_in": sum(inside) / len(inside),
            "attack.fano_out": sum(outside) / len(outside),
            "attack.p_value": p_value,
            "privacy.score": min(1.0, max(0.0, 1.0 + math.log10(max(p_value, 1e-300)) / 3)),
        })


@hookimpl
def register_attacks(register):
    register(ClassMembership)
