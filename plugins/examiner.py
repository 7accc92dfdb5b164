"""Attack ``examiner``: visual re-identification by a DNN examiner (Sharma & Chen, Disguised-Nets,
Sec. 4.1) and DAPter's auto-recognition attack (Wu et al., WWW 2021).

Threat model: query-free. The attacker holds protected test images (it is the untrusted party)
and its own raw auxiliary images with labels; it has neither the key nor queries. It trains a
classifier on its *raw* images (the "DNN examiner"; a shared artifact, trained once per dataset,
task, seed and architecture) and lets it label the protected images directly. It needs protected
data that is image-shaped (``image-like``).

The examiner labels the protected images for two tasks in one cell, and the harness scores both:
- the private task (DAPter's case 1, a task other than the service's): ``attack.accuracy``,
  ``attack.chance`` (always answering the attacker's majority aux class), ``attack.p_value``, and
  privacy.score = clip((1 - accuracy) / (1 - chance), 0, 1): what must stay private;
- the scenario's target task, when it differs: ``attack.target_accuracy`` and
  ``attack.visual_privacy`` = 1 - that accuracy (Sharma & Chen's visual privacy, where target and
  private task are the same; DAPter's case 2, a task correlated with the service's). A defense
  that keeps the service's task readable is not punished in privacy.score for doing its job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from privbench.api import (
    Attack,
    AttackOutput,
    apply,
    hookimpl,
    param,
)


@dataclass
class Examiner(Attack):
    """A classifier trained on raw images labels the protected test images."""

    name: ClassVar[str] = "examiner"
    summary: ClassVar[str] = ("query-free: a classifier trained on raw images labels the protected "
                              "images (Disguised-Nets examiner, DAPter auto-recognition)")
    threat_model: ClassVar[str] = "query-free"
    requires: ClassVar[frozenset[str]] = frozenset({"image-like"})
    produces: ClassVar[str] = "labels"
    cost_hint: ClassVar[float] = 1  # relative run time, for parallel scheduling

    epochs: int = param(30, "examiner training epochs on the raw aux images", minimum=1)

    def run(self, view) -> AttackOutput:
        if tuple(view.observed.shape[1:]) != tuple(view.image_shape):
            raise ValueError(f"the protected images have shape {tuple(view.observed.shape[1:])}, not "
                             f"the input's {tuple(view.image_shape)}: the examiner cannot read them")
        tasks = dict.fromkeys([view.private_task, view.target_task])
        return AttackOutput(predictions={task: self._examine(view, task) for task in tasks})

    def _examine(self, view, task: str):
        """Label the observed images with the raw-image examiner for ``task``."""
        examiner = view.raw_classifier(task, self.epochs)
        return apply(examiner, view.observed, view).argmax(1)


@hookimpl
def register_attacks(register):
    register(Examiner)
