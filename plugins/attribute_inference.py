"""Attack ``attribute-inference``: learn the private task from the protected data.

The threat of privacy-enhancing fine tuning (Prodomo) and DAPter's auto-recognition: the untrusted
party wants a label the service was never meant to compute (e.g. the digit, when the service only
needs its parity). Threat model: black-box. The attacker queries the encoder with its labelled
auxiliary images, trains a classifier for the private task on encoder(aux) (a small CNN on feature
maps, an MLP on vectors; Adam lr 1e-3, batch 32), and labels the protected test images.

Reports ``attack.accuracy``, ``attack.chance`` (accuracy of always answering the aux majority
class), ``attack.p_value`` (one-sided binomial test against chance) and
privacy.score = clip((1 - accuracy) / (1 - chance), 0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from privbench import hookimpl
from privbench.core import Attack, AttackResult
from privbench.metrics import inference_metrics
from privbench.models import feature_classifier
from privbench.params import param
from privbench.training import apply, seed_everything, train_classifier


@dataclass
class AttributeInference(Attack):
    """Train a private-task classifier on encoder(aux) and measure it on encoder(test)."""

    name: ClassVar[str] = "attribute-inference"
    summary: ClassVar[str] = "black-box: train a private-task classifier on the protected aux data"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})
    privacy_mapping: ClassVar[str] = "clip((1 - attack.accuracy) / (1 - attack.chance), 0, 1)"
    cost_hint: ClassVar[float] = 4  # relative run time, for parallel scheduling

    epochs: int = param(30, "classifier training epochs", minimum=1)
    lr: float = param(1e-3, "Adam learning rate", minimum=0.0)

    def run(self, scenario, protection, ctx) -> AttackResult:
        seed_everything(ctx.seed)
        task = scenario.private_task
        queried = apply(protection.encoder, scenario.images("aux"), ctx)
        aux_labels = scenario.labels("aux", task)
        model = feature_classifier(tuple(queried.shape[1:]), scenario.classes(task))
        train_classifier(model, queried, aux_labels, ctx, epochs=self.epochs, lr=self.lr,
                         description=f"attribute-inference: {task} classifier")
        predicted = apply(model, apply(protection.encoder, scenario.images("test"), ctx), ctx).argmax(1)
        majority = int(aux_labels.bincount().argmax())
        return AttackResult(inference_metrics(predicted, scenario.labels("test", task), majority))


@hookimpl
def register_attacks(register):
    register(AttributeInference)
