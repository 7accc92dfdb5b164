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

import copy
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from torch import nn

from privbench import hookimpl
from privbench.core import Defense, Protection
from privbench.errors import PrivbenchError
from privbench.models import classifier
from privbench.params import param
from privbench.training import seed_everything, train_classifier

LENET_LAYERS = ("normalize", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1",
                "relu3", "fc2", "relu4", "fc3")
RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
RESNET18_LAYERS = ("normalize", "conv1", "bn1", "relu", "layer1", "layer2", "layer3", "layer4",
                   "avgpool", "flatten", "fc")
NOISES = ("none", "gaussian", "laplace")


# --- cutting a model into named stages ------------------------------------------------------------

def resnet_stages(resnet: nn.Module) -> list[tuple[str, nn.Module]]:
    """torchvision ResNet's forward as named stages, with the flatten it does inline made explicit.

    privbench's small-image stem replaces ``maxpool`` by an identity; an identity stage is left out.
    """
    stages = [(name, getattr(resnet, name)) for name in RESNET_STAGES
              if not isinstance(getattr(resnet, name), nn.Identity)]
    return [*stages, ("flatten", nn.Flatten(1)), ("fc", resnet.fc)]


def model_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The target model as an ordered list of (name, module) whose composition is the model.

    lenet (and the MLP privbench uses on vectors) is a flat ``nn.Sequential``: its named children.
    resnet18 is ``nn.Sequential(normalize, torchvision ResNet)``: the ResNet is expanded into its
    stages (conv1, bn1, relu, layer1-4, avgpool, flatten, fc). The modules are the model's own (not
    copies): copy the model first when the stages will be changed.
    """
    from torchvision.models import ResNet
    if not isinstance(model, nn.Sequential):
        raise PrivbenchError(f"cannot split a {type(model).__name__}: split needs an nn.Sequential "
                             "target model (privbench's lenet or resnet18)")
    stages: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        stages += resnet_stages(child) if isinstance(child, ResNet) else [(name, child)]
    return stages


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model_stages(model)]


def check_known_layer(owner: str, layer: str) -> None:
    """Fail early (before any training) on a layer that no built-in architecture has."""
    if layer not in LENET_LAYERS and layer not in RESNET18_LAYERS:
        raise PrivbenchError(f"defense '{owner}': unknown layer '{layer}'; accepted: lenet: "
                             f"{', '.join(LENET_LAYERS)}; resnet18: {', '.join(RESNET18_LAYERS)}")


def split_model(model: nn.Module, layer: str, arch: str = "the target model",
                owner: str = "split") -> tuple[nn.Sequential, nn.Sequential]:
    """Deep copies of (f_theta1, f_theta2): the stages up to and including ``layer``, and the rest.

    An unknown layer is a one-line error listing the layers ``arch`` accepts, in model order.
    """
    stages = model_stages(copy.deepcopy(model))
    names = [name for name, _ in stages]
    if layer not in names:
        raise PrivbenchError(f"defense '{owner}': unknown layer '{layer}' for {arch}; "
                             f"accepted: {', '.join(names)}")
    for _, module in stages:  # a server whose first stage is an in-place ReLU would overwrite v
        if getattr(module, "inplace", False):
            module.inplace = False
    cut = names.index(layer) + 1
    return nn.Sequential(OrderedDict(stages[:cut])), nn.Sequential(OrderedDict(stages[cut:]))


# --- the perturbed client part --------------------------------------------------------------------

def laplace_like(z: torch.Tensor, scale: float) -> torch.Tensor:
    """Laplace(0, b = scale) noise shaped like ``z``, by the inverse CDF of a uniform draw."""
    u = torch.rand_like(z).clamp(1e-7, 1 - 1e-7) - 0.5
    return -scale * u.sign() * torch.log1p(-2 * u.abs())


class FeaturePerturbation(nn.Module):
    """v -> (v + eps) (*) M: He et al.'s feature noise and feature dropout, fresh on every call.

    eps ~ N(0, sigma^2) or Laplace(0, b) i.i.d. per feature (``noise`` = gaussian / laplace,
    ``scale`` = sigma / b); M ~ Bernoulli(1 - r) per feature with r = ``dropout``, no 1 / (1 - r)
    rescaling (the paper's f(x) (*) M).
    """

    def __init__(self, noise: str = "none", scale: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.noise = noise
        self.scale = scale
        self.dropout = dropout

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.noise == "gaussian" and self.scale > 0:
            v = v + self.scale * torch.randn_like(v)  # f(x) + eps, eps ~ N(0, sigma^2)
        elif self.noise == "laplace" and self.scale > 0:
            v = v + laplace_like(v, self.scale)  # f(x) + eps, eps ~ Laplace(0, b)
        if self.dropout > 0:
            keep = (torch.rand_like(v) >= self.dropout).to(v.dtype)  # M ~ Bernoulli(1 - r)
            v = v * keep
        return v

    def extra_repr(self) -> str:
        return f"noise={self.noise}, scale={self.scale}, dropout={self.dropout}"


class SplitEncoder(nn.Module):
    """The client part f_theta1 followed by its perturbation: x -> perturb(f_theta1(x))."""

    def __init__(self, client: nn.Module, perturbation: nn.Module | None = None) -> None:
        super().__init__()
        self.client = client
        self.perturbation = perturbation if perturbation is not None else FeaturePerturbation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.perturbation(self.client(x))


def untrained_encoder(arch: str, image_shape: tuple[int, int, int], classes: int, layer: str,
                      noise: str = "none", scale: float = 0.0, dropout: float = 0.0) -> SplitEncoder:
    """A freshly initialised client part of the same architecture (for query-free shadow attacks)."""
    client, _ = split_model(classifier(arch, image_shape, classes), layer, arch)
    return SplitEncoder(client, FeaturePerturbation(noise, scale, dropout))


def feature_size(encoder: nn.Module, image_shape: tuple[int, ...]) -> int:
    """How many values per image the client sends to the server (a dry run on one blank image)."""
    parameter = next(encoder.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    with torch.no_grad():
        return int(encoder.eval()(torch.zeros(1, *image_shape, device=device)).numel())


# --- the defense ----------------------------------------------------------------------------------

@dataclass
class Split(Defense):
    """Cut the target model at ``layer``; perturb the features the client sends (He et al.)."""

    name: ClassVar[str] = "split"
    summary: ClassVar[str] = ("split inference: the client runs the target model up to `layer` "
                              "(lenet: " + ", ".join(LENET_LAYERS) + "; resnet18: "
                              + ", ".join(RESNET18_LAYERS) + "), optional noise or dropout on "
                              "the features (He et al.)")
    gives: ClassVar[frozenset[str]] = frozenset({"query", "white-box", "architecture", "server"})
    withheld_reasons: ClassVar[dict[str, str]] = {
        "image-like": "defense 'split' sends intermediate features f1(x), not images shaped like "
                      "the input"}

    layer: str = param("relu2", "last layer on the client (He et al.'s MNIST split points: conv1, "
                       "relu2); lenet layers: " + ", ".join(LENET_LAYERS) + "; resnet18 layers: "
                       + ", ".join(RESNET18_LAYERS))
    feature_noise: str = param("none", "noise eps on the features, v = f1(x) + eps", choices=NOISES)
    noise_scale: float = param(0.5, "sigma (Gaussian std) or b (Laplace scale) of eps, in feature "
                               "units (He et al.: MNIST accuracy > 95% needs sigma < 0.8)",
                               minimum=0.0)
    dropout: float = param(0.0, "r: drop probability of the feature mask M ~ Bernoulli(1 - r), "
                           "no 1/(1 - r) rescaling", minimum=0.0, maximum=1.0)
    finetune_server: bool = param(False, "fine-tune a copy of the server part on perturbed features")
    finetune_epochs: int = param(10, "epochs of the server fine-tuning (Adam, lr 1e-3)", minimum=1)

    @classmethod
    def from_params(cls, raw=None):
        defense = super().from_params(raw)
        check_known_layer(cls.name, defense.layer)
        return defense

    def perturbation(self) -> FeaturePerturbation:
        return FeaturePerturbation(self.feature_noise, self.noise_scale, self.dropout)

    def fit(self, scenario, ctx) -> Protection:
        arch = scenario.source.arch
        client, server = split_model(ctx.target_model(scenario), self.layer, arch)
        encoder = SplitEncoder(client, self.perturbation()).eval()
        if self.finetune_server:
            server = self.finetuned(server, encoder, scenario, ctx)
        build = partial(untrained_encoder, arch, scenario.image_shape, scenario.classes(),
                        self.layer, self.feature_noise, self.noise_scale, self.dropout)
        metrics = {"defense.feature_size": float(feature_size(encoder, scenario.image_shape))}
        return Protection(encoder=encoder.cpu(), server=server.eval().cpu(), build_encoder=build,
                          metrics=metrics)

    def finetuned(self, server: nn.Module, encoder: nn.Module, scenario, ctx) -> nn.Module:
        """f_theta2 fine-tuned with cross-entropy on perturbed owner features, fresh each batch."""
        seed_everything(ctx.seed)
        return train_classifier(server, scenario.images("owner"), scenario.labels("owner"), ctx,
                                epochs=self.finetune_epochs, transform=encoder,
                                description=f"split: server fine-tuning after {self.layer}")


@hookimpl
def register_defenses(register):
    register(Split)
