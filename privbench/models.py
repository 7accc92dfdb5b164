"""Model architectures that adapt to the image size instead of assuming 28 x 28.

``lenet`` follows He et al.'s MNIST LeNet (conv1 1->8 5x5, pool, conv2 8->16 5x5, pool, fc 120,
fc 84, fc classes) with named layers so a split defense can cut it by name. Images smaller than
20 pixels get "same" padding (8 x 8 digits would otherwise vanish after two 5 x 5 convolutions);
the first fully connected layer is sized by a dry run. ``he_cifar`` is He et al.'s CIFAR-10 CNN
(three blocks of two 3 x 3 convolutions, fc 512 with a sigmoid, fc classes), its layers named as the
paper names its split points (conv11, relu22, relu32). ``resnet18`` is torchvision's, with the
CIFAR-style stem (3 x 3 stride-1 convolution, no max-pool) that small images need. ``lenet5`` is
LeNet-5 at 32 x 32 as Shredder's and Cloak's MNIST code builds it. ``titcombe`` is the MNIST split
network of Titcombe et al. 2021 (NoPeek's MNIST evaluation), cut after its ``tanh``.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

import torch
from torch import nn

SMALL_IMAGE = 20


class Normalize(nn.Module):
    """Map [0, 1] inputs to [-1, 1] (He et al.'s mean 0.5 / std 0.5 normalisation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.5


class ChannelNormalize(nn.Module):
    """Map [0, 1] inputs to (x - mean) / std per channel (He et al.'s CIFAR-10 preprocessing)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def module_device(module: nn.Module) -> torch.device:
    """Where ``module``'s state lives: the device of its first parameter, else of its first buffer
    (a parameter-free client such as a per-channel normalisation), else the CPU."""
    state = next(itertools.chain(module.parameters(), module.buffers()), None)
    return state.device if state is not None else torch.device("cpu")


def flat_size(layers: nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(layers(torch.zeros(1, *shape)).flatten(1).shape[1])


def lenet(shape: tuple[int, int, int], classes: int) -> nn.Sequential:
    """He et al.'s LeNet for an input of ``shape`` = (C, H, W), layers named for splitting.

    On 1 x 28 x 28 MNIST it is the authors' ``LeNet`` layer for layer (no padding, fc1 takes
    16 x 4 x 4 = 256 values, 45,278 parameters); their split points conv1 and ReLU2 are ``conv1``
    and ``relu2``, their ``fc1act`` / ``fc2act`` are ``relu3`` / ``relu4``.
    """
    channels, height, width = shape
    padding = 2 if min(height, width) < SMALL_IMAGE else 0
    features = nn.Sequential(OrderedDict([
        ("normalize", Normalize()),
        ("conv1", nn.Conv2d(channels, 8, 5, padding=padding)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 16, 5, padding=padding)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
    ]))
    flat = flat_size(features, shape)
    return nn.Sequential(OrderedDict([
        *features.named_children(),
        ("fc1", nn.Linear(flat, 120)),
        ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)),
        ("relu4", nn.ReLU()),
        ("fc3", nn.Linear(84, classes)),
    ]))


HE_CIFAR_MEAN = (0.485, 0.456, 0.406)  # the authors' CIFAR-10 Normalize (their inverse_*_CIFAR.py)
HE_CIFAR_STD = (0.229, 0.224, 0.225)


def he_cifar_normalize(channels: int) -> nn.Module:
    """He et al.'s per-channel CIFAR-10 normalisation on 3 channels; mean 0.5 / std 0.5 otherwise."""
    return ChannelNormalize(HE_CIFAR_MEAN, HE_CIFAR_STD) if channels == 3 else Normalize()


def he_cifar_block(index: int, in_channels: int, out_channels: int) -> list[tuple[str, nn.Module]]:
    """Block ``index`` of He et al.'s CIFAR-10 CNN: conv{i}1 -> ReLU{i}1 -> conv{i}2 -> ReLU{i}2 ->
    pool{i}, 3 x 3 convolutions with padding 1. The 2 x 2 max-pool rounds up (ceil mode): the same
    as the paper's on 32 x 32, and an odd side keeps its last row instead of losing it."""
    return [(f"conv{index}1", nn.Conv2d(in_channels, out_channels, 3, padding=1)),
            (f"relu{index}1", nn.ReLU()),
            (f"conv{index}2", nn.Conv2d(out_channels, out_channels, 3, padding=1)),
            (f"relu{index}2", nn.ReLU()),
            (f"pool{index}", nn.MaxPool2d(2, ceil_mode=True))]


def he_cifar(shape: tuple[int, int, int], classes: int) -> nn.Sequential:
    """He et al.'s CIFAR-10 target model (ACSAC 2019; the authors' ``CIFAR10CNN``) for ``shape``.

    conv11 (C -> 64) ... pool1, conv21 (64 -> 128) ... pool2, conv31 (128 -> 128) ... pool3, fc1
    (-> 512), sigmoid (named ``fc1act`` as in the authors' code), fc2 (-> classes). On 3 x 32 x 32
    fc1 takes 128 x 4 x 4 = 2048 values as in the paper; other sizes get fc1 sized by a dry run.
    Split points of the paper: conv11, relu22, relu32.
    """
    channels = shape[0]
    features = nn.Sequential(OrderedDict([
        ("normalize", he_cifar_normalize(channels)),
        *he_cifar_block(1, channels, 64),
        *he_cifar_block(2, 64, 128),
        *he_cifar_block(3, 128, 128),
        ("flatten", nn.Flatten()),
    ]))
    flat = flat_size(features, shape)
    return nn.Sequential(OrderedDict([
        *features.named_children(),
        ("fc1", nn.Linear(flat, 512)),
        ("fc1act", nn.Sigmoid()),
        ("fc2", nn.Linear(512, classes)),
    ]))


def resnet18(shape: tuple[int, int, int], classes: int) -> nn.Module:
    """torchvision's ResNet-18 with a stem for small images and ``shape[0]`` input channels."""
    from torchvision.models import resnet18 as tv_resnet18
    model = tv_resnet18(weights=None, num_classes=classes)
    model.conv1 = nn.Conv2d(shape[0], 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return nn.Sequential(OrderedDict([("normalize", Normalize()), ("resnet", model)]))


def mlp(shape: tuple[int, ...], classes: int, hidden: int = 256) -> nn.Sequential:
    """A two-layer perceptron on flattened inputs, for feature vectors and tiny feature maps."""
    size = 1
    for dim in shape:
        size *= dim
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(size, hidden)),
        ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(hidden, classes)),
    ]))


def lenet5(shape: tuple[int, int, int], classes: int) -> nn.Sequential:
    """LeCun's LeNet-5 as Mireshghallah et al.'s Shredder (v2) and Cloak MNIST code builds it, for
    1 x 32 x 32 inputs: c1 6@5x5, ReLU, s2 max-pool, c3 16@5x5, ReLU, s4 max-pool, c5 120@5x5, ReLU,
    f6 84, ReLU, f7 classes (their ``LeNet5`` classes; Shredder's noise sits on c5's 120 outputs).
    Layers are named as theirs, after the same [0, 1] -> [-1, 1] ``normalize`` as ``lenet``. On
    images smaller than 32 x 32 the convolutions get "same" padding and f6 is sized by a dry run."""
    channels, height, width = shape
    padding = 2 if min(height, width) < 32 else 0
    features = nn.Sequential(OrderedDict([
        ("normalize", Normalize()),
        ("c1", nn.Conv2d(channels, 6, 5, padding=padding)),
        ("relu1", nn.ReLU()),
        ("s2", nn.MaxPool2d(2)),
        ("c3", nn.Conv2d(6, 16, 5, padding=padding)),
        ("relu3", nn.ReLU()),
        ("s4", nn.MaxPool2d(2)),
        ("c5", nn.Conv2d(16, 120, 5, padding=padding)),
        ("relu5", nn.ReLU()),
        ("flatten", nn.Flatten()),
    ]))
    flat = flat_size(features, shape)
    return nn.Sequential(OrderedDict([
        *features.named_children(),
        ("f6", nn.Linear(flat, 84)),
        ("relu6", nn.ReLU()),
        ("f7", nn.Linear(84, classes)),
    ]))


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the PyTorch MNIST example's normalisation, Titcombe et al.'s


def titcombe(shape: tuple[int, int, int], classes: int) -> nn.Sequential:
    """Titcombe et al.'s MNIST split network ("Practical defences against model inversion attacks
    for split neural networks", 2021; their repository's ``SplitNN``, src/dpsnn/models.py): client
    conv1 (C -> 32, 3 x 3), ReLU, conv2 (32 -> 64, 3 x 3), ReLU, 2 x 2 max-pool, flatten, fc1 (-> 500),
    tanh (they bound what the client sends, for their noise defence); server fc2 (500 -> 128), ReLU,
    fc3 (-> classes). Cutting after ``tanh`` gives their 500-value intermediate.

    Their pipeline normalises pixels with ToTensor() then Normalize((0.1307,), (0.3081,)); privbench
    models take [0, 1] pixels, so ``normalize`` does (x - 0.1307) / 0.3081 inside, on every channel.
    Their server ends in a softmax that their cross-entropy is then applied to (a double softmax);
    here fc3 returns logits, as every privbench model. On 1 x 28 x 28 fc1 takes 64 x 12 x 12 = 9,216
    values, as theirs; images smaller than 20 pixels get "same" padding, and fc1 is sized by a dry run.
    """
    channels, height, width = shape
    padding = 1 if min(height, width) < SMALL_IMAGE else 0
    features = nn.Sequential(OrderedDict([
        ("normalize", ChannelNormalize((MNIST_MEAN,) * channels, (MNIST_STD,) * channels)),
        ("conv1", nn.Conv2d(channels, 32, 3, padding=padding)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(32, 64, 3, padding=padding)),
        ("relu2", nn.ReLU()),
        ("pool", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
    ]))
    flat = flat_size(features, shape)
    return nn.Sequential(OrderedDict([
        *features.named_children(),
        ("fc1", nn.Linear(flat, 500)),
        ("tanh", nn.Tanh()),
        ("fc2", nn.Linear(500, 128)),
        ("relu3", nn.ReLU()),
        ("fc3", nn.Linear(128, classes)),
    ]))


ARCHITECTURES = {"lenet": lenet, "lenet5": lenet5, "he-cifar": he_cifar, "resnet18": resnet18,
                 "titcombe": titcombe}


def classifier(arch: str, shape: tuple[int, ...], classes: int) -> nn.Module:
    """A classifier for inputs of ``shape``: ``arch`` for images, an MLP for vectors."""
    if len(shape) == 3 and min(shape[1:]) >= 4:
        return ARCHITECTURES[arch](shape, classes)
    return mlp(shape, classes)


def feature_classifier(shape: tuple[int, ...], classes: int) -> nn.Module:
    """An attacker's classifier on protected data: a small CNN on maps, an MLP otherwise."""
    if len(shape) == 3 and min(shape[1:]) >= 4:
        channels, height, width = shape
        convs = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(channels, 32, 3, padding=1)), ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(32, 64, 3, padding=1)), ("relu2", nn.ReLU()),
            ("pool", nn.AdaptiveAvgPool2d((min(height, 4), min(width, 4)))), ("flatten", nn.Flatten()),
        ]))
        flat = flat_size(convs, shape)
        return nn.Sequential(OrderedDict([*convs.named_children(), ("fc1", nn.Linear(flat, 128)),
                                          ("relu3", nn.ReLU()), ("fc2", nn.Linear(128, classes))]))
    return mlp(shape, classes)


class Decoder(nn.Module):
    """Maps protected data z back to an image of ``image_shape`` (an inverse network).

    Feature maps go through 3 x 3 convolutions and stride-2 transposed convolutions until they
    reach the image size (He et al.: transposed-convolution layers mirroring the client part);
    vectors first go through a linear layer onto a coarse map. A sigmoid keeps pixels in [0, 1].
    """

    def __init__(self, z_shape: tuple[int, ...], image_shape: tuple[int, int, int],
                 width: int = 64) -> None:
        super().__init__()
        channels, height, image_width = image_shape
        self.image_size = (height, image_width)
        if len(z_shape) == 3:
            self.stem = nn.Identity()
            in_channels, z_height = z_shape[0], z_shape[1]
        else:
            z_height = max(1, height // 4)
            size = 1
            for dim in z_shape:
                size *= dim
            self.stem = nn.Sequential(nn.Flatten(), nn.Linear(size, width * z_height * z_height),
                                      nn.ReLU(), nn.Unflatten(1, (width, z_height, z_height)))
            in_channels = width
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU()]
        while z_height < height:
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU()]
            z_height *= 2
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                   nn.Conv2d(width, channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.body(self.stem(z))
        if tuple(out.shape[-2:]) != self.image_size:
            out = nn.functional.interpolate(out, size=self.image_size, mode="bilinear",
                                            align_corners=False)
        return torch.sigmoid(out)
