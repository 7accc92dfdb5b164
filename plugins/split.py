"""Defense ``split``: collaborative (split) inference with He et al.'s feature defenses.

Source: Zecheng He, Tianwei Zhang, Ruby B. Lee, "Model inversion attacks against collaborative
inference", ACSAC 2019, Sec. 7.4 (Defenses), and its journal follow-up for the noise and dropout
measurements (REFERENCE.md).

The service's target model f is cut at a named layer into f = f2 . f1: the client part f1 (every
stage up to and including ``layer``) runs on the user's device and sends the intermediate features
v = f1(x); the untrusted server runs the rest, f2, unchanged. Without perturbation
``server(encoder(x)) == f(x)`` exactly. The paper's defenses are options:

- "run a fully-connected layer on the client" and "make the client network deeper" are simply a
  later ``layer`` (``fc1`` / ``relu3`` put LeNet's first FC layer on the client);
- noise on the features, v = f1(x) + eps (Sec. 7.4, "differential privacy"): ``feature_noise``
  gaussian (eps ~ N(0, sigma^2)) or laplace (eps ~ Laplace(0, b)), ``noise_scale`` = sigma or b,
  in the units of the features themselves;
- dropout on the features, v = f1(x) (*) M with M ~ Bernoulli(1 - r) per feature (journal
  follow-up): ``dropout`` = r. As the paper writes it, the kept features are NOT rescaled by
  1 / (1 - r) (unlike ``nn.Dropout``), so the server sees features shrunk by (1 - r) on average.
  With both options on, noise is added first: v = (f1(x) + eps) (*) M.

The perturbation lives inside the encoder module and draws fresh randomness on every call (every
query gets new noise and a new mask), in training and evaluation mode alike. By default the server
is the target model's second half as it is; with ``finetune_server`` a copy of it is fine-tuned on
the perturbed features of the owner's data (Adam, He et al.'s settings, ``finetune_epochs``), so the
service adapts to the perturbation. The shared target model is never changed: both halves are deep
copies.

Threat model: white-box. The client part runs on the user's device, so an attacker (the server, or
anyone holding the app) can have its parameters, query it, and knows its architecture; the server
half is the attacker's own. The features are not image-shaped, so attacks that need image-like
protected data do not apply.

Parameters and the paper's symbols:
  layer            the split point: the last layer of f_theta1 (paper's MNIST split points: conv1,
                   ReLU2 = ``relu2``, the default; CIFAR: conv11, ReLU22, ReLU32)
  feature_noise    distribution of eps in v = f_theta1(x) + eps: none, gaussian, laplace
  noise_scale      sigma (Gaussian std) or b (Laplace scale) of eps
  dropout          r, the drop probability of M ~ Bernoulli(1 - r)
  finetune_server  not in the paper (left open): retrain f_theta2 on perturbed features
  finetune_epochs  epochs of that fine-tuning
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from privbench.api import (
    HE_CIFAR_LAYERS,
    LENET_LAYERS,
    NOISES,
    RESNET18_LAYERS,
    FeaturePerturbation,
    Protection,
    SplitEncoder,
    SplitFeatureDefense,
    feature_size,
    hookimpl,
    param,
    split_model,
    train_classifier,
)


@dataclass
class Split(SplitFeatureDefense):
    """Cut the target model at ``layer``; perturb the features the client sends (He et al.)."""

    name: ClassVar[str] = "split"
    summary: ClassVar[str] = ("split inference: the client runs the target model up to `layer` "
                              "(lenet: " + ", ".join(LENET_LAYERS) + "; resnet18: "
                              + ", ".join(RESNET18_LAYERS) + "; he-cifar: "
                              + ", ".join(HE_CIFAR_LAYERS) + "), optional noise or dropout on "
                              "the features (He et al.)")
    claims: ClassVar[frozenset[str]] = frozenset({"white-box", "black-box", "query-free"})  # He et al., Sec. 7.4

    layer: str = param("relu2", "last layer on the client (He et al.'s MNIST split points: conv1, "
                       "relu2); lenet layers: " + ", ".join(LENET_LAYERS) + "; resnet18 layers: "
                       + ", ".join(RESNET18_LAYERS) + "; he-cifar layers (CIFAR split points: "
                       "conv11, relu22, relu32): " + ", ".join(HE_CIFAR_LAYERS))
    feature_noise: str = param("none", "noise eps on the features, v = f1(x) + eps", choices=NOISES)
    noise_scale: float = param(0.5, "sigma (Gaussian std) or b (Laplace scale) of eps, in feature "
                               "units (He et al.: MNIST accuracy > 95% needs sigma < 0.8)",
                               minimum=0.0)
    dropout: float = param(0.0, "r: drop probability of the feature mask M ~ Bernoulli(1 - r), "
                           "no 1/(1 - r) rescaling", minimum=0.0, maximum=1.0)
    finetune_server: bool = param(False, "fine-tune a copy of the server part on perturbed features")
    finetune_epochs: int = param(10, "epochs of the server fine-tuning (Adam, lr 1e-3)", minimum=1)

    def perturbation(self) -> FeaturePerturbation:
        return FeaturePerturbation(self.feature_noise, self.noise_scale, self.dropout)

    def build(self, facts) -> Protection:
        """A freshly initialised model of the service's architecture, cut at ``layer``."""
        model = facts.service_classifier()
        client, server = split_model(model, self.layer, facts.arch)
        return Protection(encoder=SplitEncoder(client, self.perturbation()), server=server)

    def fit(self, owner) -> Protection:
        client, server = split_model(owner.target_model(), self.layer, owner.facts.arch)
        encoder = SplitEncoder(client, self.perturbation()).eval()
        if self.finetune_server:
            server = self.finetuned(server, encoder, owner)
        return Protection(encoder=encoder.cpu(), server=server.eval().cpu())

    def evaluate(self, protection, data) -> dict[str, float]:
        return {"defense.feature_size": float(feature_size(protection.encoder, data.facts.image_shape))}

    def finetuned(self, server: nn.Module, encoder: nn.Module, owner) -> nn.Module:
        """f_theta2 fine-tuned with cross-entropy on perturbed owner features, fresh each batch."""
        return train_classifier(server, owner.images, owner.labels(), owner,
                                epochs=self.finetune_epochs, transform=encoder,
                                description=f"split: server fine-tuning after {self.layer}")


@hookimpl
def register_defenses(register):
    register(Split)
