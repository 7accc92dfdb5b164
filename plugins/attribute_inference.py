"""Attack ``attribute-inference``: learn the private task from the protected data.

The threat of privacy-enhancing fine tuning (Prodomo) and DAPter's auto-recognition: the untrusted
party wants a label the service was never meant to compute (e.g. the digit, when the service only
needs its parity). Threat model: black-box. The attacker queries the encoder with its labelled
auxiliary images, trains a classifier for the private task on encoder(aux) (Adam lr 1e-3, batch 32),
and labels the protected test images.

Two choices keep the attacker from looking weaker than it is (Prodomo's adversary trains "a
classifier" on the released features without saying which; these are privbench's):

- **Standardised features** (``standardise``, default on): every feature (every position of the
  observation) is shifted and scaled by the mean and standard deviation of encoder(aux), the
  attacker's own queried data, and the protected test data gets the same transform. A classifier's
  initial weights and Adam's learning rate assume inputs of about unit scale; raw split features
  are not (privacy fine-tuning squeezes them towards their class centers, so they vary by ~0.1; a
  client may send features in any units), and under a fixed epoch budget the raw-scale attacker
  underfits or diverges. A feature constant over the aux data carries nothing and becomes 0.
  ``standardise=false`` is the raw reading.
- **The classifier follows the observation's shape**: privbench's small CNN (``feature_classifier``)
  only when the observation is shaped like the image (same channels, height and width: pixels
  whose neighbours are related, e.g. noisy or converted images); a two-layer perceptron (``mlp``,
  256 hidden units) on anything else, feature vectors and intermediate feature maps alike, whose
  channels and few positions a 3 x 3 convolution tuned for images does not suit.

Returns the predicted private-task labels; the harness scores them: ``attack.accuracy``,
``attack.chance`` (accuracy of always answering the aux majority class), ``attack.p_value``
(one-sided binomial test against chance) and privacy.score = clip((1 - accuracy) / (1 - chance), 0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench.api import (
    Attack,
    AttackOutput,
    apply,
    feature_classifier,
    hookimpl,
    mlp,
    param,
    train_classifier,
)


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation over the first (sample) axis; a standard deviation
    of 0 (a constant feature) is replaced by 1, so that feature standardises to 0."""
    mean = features.mean(0, keepdim=True)
    std = features.std(0, keepdim=True) if len(features) > 1 else torch.zeros_like(mean)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def standardised(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(features - mean) / std``, feature by feature."""
    return (features - mean) / std


def attacker_classifier(shape: tuple[int, ...], image_shape: tuple[int, int, int],
                        classes: int) -> nn.Module:
    """privbench's feature CNN on image-shaped observations, a two-layer perceptron otherwise."""
    if tuple(shape) == tuple(image_shape):
        return feature_classifier(tuple(shape), classes)
    return mlp(tuple(shape), classes)


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
    standardise: bool = param(True, "standardise each feature with the mean / std of encoder(aux) "
                                    "(false: raw feature scales)")

    def run(self, view) -> AttackOutput:
        task = view.private_task
        queried, observed = view.query(view.aux_images), view.observed
        if self.standardise:
            mean, std = feature_statistics(queried)
            queried, observed = standardised(queried, mean, std), standardised(observed, mean, std)
        model = attacker_classifier(tuple(queried.shape[1:]), view.image_shape, view.classes(task))
        train_classifier(model, queried, view.aux_labels(task), view, epochs=self.epochs, lr=self.lr,
                         description=f"attribute-inference: {task} classifier")
        predicted = apply(model, observed, view).argmax(1)
        return AttackOutput(predictions={task: predicted})


@hookimpl
def register_attacks(register):
    register(AttributeInference)
