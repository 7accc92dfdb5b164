"""Attack ``attribute-inference``: learn the private task from the protected data.

The threat of privacy-enhancing fine tuning (Prodomo) and DAPter's auto-recognition: the untrusted
party wants a label the service was never meant to compute (e.g. the digit, when the service only
needs its parity). Threat model: black-box. The attacker queries the encoder with its labelled
auxiliary images, trains a classifier for the private task on encoder(aux) (a small CNN on feature
maps, an MLP on vectors; Adam lr 1e-3, batch 32), and labels the protected test images.

Returns the predicted private-task labels; the harness scores them: ``attack.accuracy``,
``attack.chance`` (accuracy of always answering the aux majority class), ``attack.p_value``
(one-sided binomial test against chance) and privacy.score = clip((1 - accuracy) / (1 - chance), 0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from privbench.api import (
    Attack,
    AttackOutput,
    apply,
    feature_classifier,
    hookimpl,
    param,
    train_classifier,
)


@dataclass
class AttributeInference(Attack):
    """Train a private-task classifier on encoder(aux) and measure it on encoder(test)."""

    name: ClassVar[str] = "attribute-inference"
    summary: ClassVar[str] = "black-box: train a private-task classifier on the protected aux data"
    threat_model: ClassVar[str] = "black-box"
    requires: ClassVar[frozenset[str]] = frozenset({"query"})
    produces: ClassVar[str] = "labels"
    cost_hint: ClassVar[float] = 4  # relative run time, for parallel scheduling

    epochs: int = param(30, "classifier training epochs", minimum=1)
    lr: float = param(1e-3, "Adam learning rate", minimum=0.0)

    def run(self, view) -> AttackOutput:
        task = view.private_task
        queried = view.query(view.aux_images)
        model = feature_classifier(tuple(queried.shape[1:]), view.classes(task))
        train_classifier(model, queried, view.aux_labels(task), view, epochs=self.epochs, lr=self.lr,
                         description=f"attribute-inference: {task} classifier")
        predicted = apply(model, view.observed, view).argmax(1)
        return AttackOutput(predictions={task: predicted})


@hookimpl
def register_attacks(register):
    register(AttributeInference)
