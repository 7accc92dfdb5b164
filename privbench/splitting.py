"""Splitting a model into the client part f1 and the server part f2 (He et al., ACSAC 2019), and the
feature perturbations He et al. propose as defenses: shared by the split-model defenses (``split``,
``privacy-finetune``) and any plugin that builds on a split model.

``split_model(model, layer)`` cuts privbench's lenet, he-cifar or resnet18 (an ``nn.Sequential``)
after the named ``layer`` into deep copies (f1, f2) whose composition is the model; ``ARCH_LAYERS``
lists each architecture's layer names (He et al.'s split points: lenet conv1 / relu2, he-cifar
conv11 / relu22 / relu32; Titcombe et al.'s: titcombe tanh). ``FeaturePerturbation`` is
v -> (v + eps) (*) M (Gaussian or Laplace eps, Bernoulli(1 - r) mask M without rescaling), fresh on
every call; ``SplitEncoder`` is f1 followed by its perturbation.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench.core import Defense
from privbench.errors import PrivbenchError
from privbench.models import module_device
from privbench.params import param

LENET_LAYERS = ("normalize", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1",
                "relu3", "fc2", "relu4", "fc3")
LENET5_LAYERS = ("normalize", "c1", "relu1", "s2", "c3", "relu3", "s4", "c5", "relu5", "flatten", "f6",
                 "relu6", "f7")
HE_CIFAR_LAYERS = ("normalize", "conv11", "relu11", "conv12", "relu12", "pool1", "conv21", "relu21",
                   "conv22", "relu22", "pool2", "conv31", "relu31", "conv32", "relu32", "pool3",
                   "flatten", "fc1", "fc1act", "fc2")
RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
RESNET18_LAYERS = ("normalize", "conv1", "bn1", "relu", "layer1", "layer2", "layer3", "layer4",
                   "avgpool", "flatten", "fc")
TITCOMBE_LAYERS = ("normalize", "conv1", "relu1", "conv2", "relu2", "pool", "flatten", "fc1", "tanh",
                   "fc2", "relu3", "fc3")
ARCH_LAYERS = {"lenet": LENET_LAYERS, "lenet5": LENET5_LAYERS, "he-cifar": HE_CIFAR_LAYERS, "resnet18": RESNET18_LAYERS,
               "titcombe": TITCOMBE_LAYERS}
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

    lenet, he-cifar (and the MLP privbench uses on vectors) are flat ``nn.Sequential``: their named
    children.
    resnet18 is ``nn.Sequential(normalize, torchvision ResNet)``: the ResNet is expanded into its
    stages (conv1, bn1, relu, layer1-4, avgpool, flatten, fc). The modules are the model's own (not
    copies): copy the model first when the stages will be changed.
    """
    from torchvision.models import ResNet
    if not isinstance(model, nn.Sequential):
        raise PrivbenchError(f"cannot split a {type(model).__name__}: split needs an nn.Sequential "
                             "target model (privbench's lenet, he-cifar or resnet18)")
    stages: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        stages += resnet_stages(child) if isinstance(child, ResNet) else [(name, child)]
    return stages


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model_stages(model)]


def accepted_layers(arch: str) -> tuple[str, ...]:
    """The layer names a split of built-in architecture ``arch`` accepts, in model order."""
    if arch not in ARCH_LAYERS:
        raise PrivbenchError(f"unknown architecture '{arch}'; accepted: {', '.join(ARCH_LAYERS)}")
    return ARCH_LAYERS[arch]


def check_known_layer(owner: str, layer: str) -> None:
    """Fail early (before any training) on a layer that no built-in architecture has."""
    if not any(layer in layers for layers in ARCH_LAYERS.values()):
        accepted = "; ".join(f"{arch}: {', '.join(layers)}" for arch, layers in ARCH_LAYERS.items())
        raise PrivbenchError(f"defense '{owner}': unknown layer '{layer}'; accepted: {accepted}")


def layer_problem(owner: str, layer: str, arch: str) -> str | None:
    """A split defense's ``check_data``: None when built-in architecture ``arch`` has ``layer``, else
    the one-line reason, naming the layers it accepts."""
    accepted = accepted_layers(arch)
    if layer in accepted:
        return None
    return f"defense '{owner}': unknown layer '{layer}' for {arch}; accepted: " + ", ".join(accepted)


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
    rescaling (the paper's f(x) (*) M). ``random_perturbation`` marks it for an attacker who knows
    the mechanism and inverts the clean f1 (``privbench.inversion.without_random_layers``).
    """

    random_perturbation = True

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


def sent_shape(client: nn.Module, image_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of what ``client`` sends for one image: a dry run on a blank image, made on the
    device the client's state is on (the client is left in evaluation mode)."""
    with torch.no_grad():
        return tuple(client.eval()(torch.zeros(1, *image_shape, device=module_device(client))).shape[1:])


def feature_size(encoder: nn.Module, image_shape: tuple[int, ...]) -> int:
    """How many values per image the client sends to the server."""
    return math.prod(sent_shape(encoder, image_shape))


# --- the declarations every defense that sends f1(x) shares ---------------------------------------



@dataclass
class SplitFeatureDefense(Defense):
    """The common ground of the defenses that send the features f1(x) of the service's model cut at
    ``layer`` (split, privacy-finetune, nopeek, disco, adversarial, siamese, pca, shredder).

    The client's weights exist on the user's device, so every access fact but image-like is given
    (a white-box cell shows what a leaked client costs); such defenses are built against attackers
    who only see or query what the client sends, so they claim black-box and query-free. The layer
    is checked when the spec is read (a name no architecture has) and against the scenario's
    architecture (``check_data``)."""

    gives: ClassVar[frozenset[str]] = frozenset({"query", "white-box", "architecture", "server",
                                                   "known-pairs"})
    claims: ClassVar[frozenset[str]] = frozenset({"black-box", "query-free"})
    # ``layer`` values that name no layer but a rule of the defense (shredder's ``auto``)
    layer_rules: ClassVar[tuple[str, ...]] = ()

    layer: str = param("relu2", "last layer on the client (as split's)")

    def withheld_reason(self, fact: str) -> str:
        if fact == "image-like" and fact not in self.withheld_reasons:
            return (f"defense '{self.name}' sends intermediate features f1(x), not images shaped "
                    "like the input")
        return super().withheld_reason(fact)

    @classmethod
    def from_params(cls, raw=None):
        defense = super().from_params(raw)
        if defense.layer not in cls.layer_rules:
            check_known_layer(cls.name, defense.layer)
        return defense

    def check_data(self, facts) -> str | None:
        return layer_problem(self.name, self.layer, facts.arch)
