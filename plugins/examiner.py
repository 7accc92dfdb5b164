"""Attack ``examiner``: visual re-identification by a DNN examiner (Sharma & Chen, Disguised-Nets,
Sec. 4.1) and DAPter's auto-recognition attack (Wu et al., WWW 2021).

Threat model: query-free. The attacker holds protected test images (it is the untrusted party)
and its own raw auxiliary images with labels; it has neither the key nor queries. It trains a
classifier on its *raw* images (the "DNN examiner"; a shared artifact, trained once per dataset,
task, seed and architecture) and lets it label the protected images directly. It needs protected
data that is image-shaped (``image-like``).

The examiner runs for two tasks in one cell:
- the scenario's target task: Disguised-Nets' visual re-identification, and DAPter's case 2 (a task
  correlated with the service's): ``attack.accuracy``, ``attack.chance``, and
  ``attack.visual_privacy`` = 1 - accuracy (Sharma & Chen's definition);
- the private task: DAPter's case 1 (a task other than the service's):
  ``attack.private_accuracy``, ``attack.private_chance``, ``attack.private_p_value``.

privacy.score = the smaller of the two tasks' clip((1 - accuracy) / (1 - chance), 0, 1): the
protection is only as private as its weaker task. ``attack.chance`` is the accuracy of always
answering the majority class of the attacker's aux labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from privbench import hookimpl
from privbench.core import Attack, AttackResult
from privbench.metrics import inference_metrics
from privbench.params import param
from privbench.training import apply


@dataclass
class Examiner(Attack):
    """A classifier trained on raw images labels the protected test images."""

    name: ClassVar[str] = "examiner"
    summary: ClassVar[str] = ("query-free: a classifier trained on raw images labels the protected "
                              "images (Disguised-Nets examiner, DAPter auto-recognition)")
    threat_model: ClassVar[str] = "query-free"
    requires: ClassVar[frozenset[str]] = frozenset({"image-like"})
    privacy_mapping: ClassVar[str] = ("min over target and private task of "
                                      "clip((1 - accuracy) / (1 - chance), 0, 1)")
    cost_hint: ClassVar[float] = 1  # relative run time, for parallel scheduling

    epochs: int = param(30, "examiner training epochs on the raw aux images", minimum=1)

    def run(self, scenario, protection, ctx) -> AttackResult:
        protected = apply(protection.encoder, scenario.images("test"), ctx)
        if protected.shape[1:] != scenario.images("test").shape[1:]:
            raise ValueError(f"the protected images have shape {tuple(protected.shape[1:])}, not the "
                             f"input's {scenario.image_shape}: the examiner cannot read them")
        target = self._examine(scenario, protected, scenario.target_task, ctx)
        private = self._examine(scenario, protected, scenario.private_task, ctx)
        metrics = {
            "attack.accuracy": target["attack.accuracy"],
            "attack.chance": target["attack.chance"],
            "attack.p_value": target["attack.p_value"],
            "attack.visual_privacy": 1.0 - target["attack.accuracy"],
            "attack.private_accuracy": private["attack.accuracy"],
            "attack.private_chance": private["attack.chance"],
            "attack.private_p_value": private["attack.p_value"],
            "privacy.score": min(target["privacy.score"], private["privacy.score"]),
        }
        return AttackResult(metrics)

    def _examine(self, scenario, protected, task: str, ctx) -> dict[str, float]:
        """Label ``protected`` with the raw-image examiner for ``task``; score against truth."""
        examiner = ctx.raw_classifier(scenario, task, epochs=self.epochs)
        predicted = apply(examiner, protected, ctx).argmax(1)
        majority = int(scenario.labels("aux", task).bincount().argmax())
        return inference_metrics(predicted, scenario.labels("test", task), majority)


@hookimpl
def register_attacks(register):
    register(Examiner)
