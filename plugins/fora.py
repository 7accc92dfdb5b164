"""Attack ``fora``: feature-oriented reconstruction (Xu, Chen, Yu, Liu, Wang, Wang, "A Stealthy Wolf in
Sheep's Clothing: Feature-Oriented Reconstruction Attack against Split Learning", CVPR 2024).

Threat model: query-free, and without the client's architecture. The attacker (the server of a
split model) observes the protected data z of the victims' images and holds unlabelled auxiliary
images from the same distribution; it has no client weights, no queries, no server access it
needs and no knowledge of the client's layers beyond the shape of what arrives. It builds a
substitute client F^ of its own architecture with z's shape, trains it so that the distribution
of F^(x_aux) matches the distribution of the observed z (no pairs: the aux images are not the
victims'), trains a decoder f^-1 on the pairs (F^(x_aux), x_aux), and reconstructs x^ = f^-1(z).

Each iteration (the authors' ``pseudo_training``, in their order; x an aux batch, z a batch of
observed rows, both of ``batch_size``) takes three steps:

1. substitute F^ (Adam, ``lr``):  L_F = (1 - a) * (-mean D(F^(x))) + a * MK-MMD(F^(x), z)
   (paper Sec. 4, the adversarial feature-matching term plus the distribution distance);
2. decoder f^-1 (Adam, ``decoder_lr``), F^ frozen:  L_inv = MSE(f^-1(F^(x)), x)  on images normalised to
   [-1, 1] (their inputs), the decoder ending in a tanh;
3. critic D (Adam, ``critic_lr``), WGAN-GP:  L_D = mean D(F^(x)) - mean D(z) + lambda_GP * GP
   with GP = mean (||grad D(x^)||_2 - 1)^2 on random interpolates x^ of z and F^(x).

Sign convention: privbench's critic scores the observed z high, so the substitute's adversarial term
is -mean D(F^(x)). The authors' code flips the critic (it minimises mean D(z) - mean D(F^(x)) and
the substitute minimises +mean D(F^(x))); both ask D to tell the two samples apart and F^ to be
scored like z, so the training is the same. MK-MMD and the gradient penalty live in
``privbench.feature_matching``: five Gaussian kernels, alpha = 2^k for k = -3 .. 1, bandwidth
alpha times the mean pairwise squared distance of the pooled batch, the unbiased estimator.

Authors' settings (their run.sh for CIFAR-10, layer 2): 40,000 iterations, batch 64, a = 0.8,
lambda_GP = 1000, Adam at lr 1e-4 for substitute and decoder and 3e-4 for the critic (torch's
defaults otherwise), 5,000 aux images. The defaults keep batch, a and lambda_GP, and change four
settings to fit the default matrix's budget (about 2 s per cell on 8 x 8 digits, 2 CPU cores):
``iterations`` 100 (the MNIST reproduce config runs 1,000), both learning rates of the adversarial
game ten times the authors', ``lr`` 1e-3 and ``critic_lr`` 3e-3, which keeps their
critic-to-substitute ratio of 3, and the decoder's ``decoder_lr`` 1e-2, a hundred times theirs.

The critic ratio matters: measured on digits split at conv1 (1,000 iterations), lr 1e-3 with the
authors' critic rate 3e-4 lets the substitute outrun the critic, its features drift off (mean row
norm 84 against the observed 12), the MK-MMD rises from 0.7 to 3.8 and SSIM falls from 0.83 to
0.04; with critic_lr 3e-3 SSIM stays near 0.9 throughout.

The decoder's rate matters on real MNIST. Its loss is a plain regression on the attacker's own pairs
(F^(x_aux), x_aux): it feeds nothing back into the substitute or the critic, so its rate leaves the
adversarial game as it is, and how far it has converged the attacker reads off its own training
loss. The paper's output layer (Conv + BN + tanh) must be driven far into the tanh's saturation to
give MNIST's black background (about 80% of the pixels), and Adam moves a weight by about the
learning rate per step: the authors' decoder gets 40,000 steps of 1e-4, lr 1e-3 for 1,000 steps is
a quarter of that. Measured on 10,000 real MNIST digits, LeNet split at relu1 (z 8 x 24 x 24),
1,000 iterations, scored on 500 test images (``attack.ssim_skimage`` / ``attack.ssim``): the
decoder trained at 1e-3 on the *real* client's features (a diagnostic the attack cannot run)
reaches only 0.67 / 0.41 with the background at 0.09 instead of 0, at 1e-3 for 3,000 steps 0.75 /
0.52, at 1e-2 for 1,000 steps 0.82 / 0.66 (background 0.016). FORA itself goes from 0.61 / 0.36
(decoder at 1e-3, background 0.09 gray: ``attack.ssim`` at the mean image's level) to 0.72 / 0.58
with ``decoder_lr`` 1e-2, the substitute's training unchanged. The authors' own code trains the same
decoder at 1e-3, ten times their ``lr``, where it is their oracle (``target_invmodel``).
Through the harness (all 2,000 test images, ``fora:iterations=1000``, one store) FORA at relu1
went from 0.586 / 0.357 (PSNR 17.3 dB) to 0.671 / 0.529 (18.1 dB); in the same store the query-free
shadow (``shadow:data=aux,shadow_arch=different,images=10``) scores 0.475 / 0.411 and the inverse
network with queries (``inverse-network:data=aux``) 0.904 / 0.847. In a second store (another run
secret, so another split and target): FORA 0.700 / 0.536, shadow 0.324 / 0.172, inverse network
0.915 / 0.869.

With the defaults (digits, seed 0, the harness's scoring, ``attack.ssim``) FORA recovers a shallow
split (conv1: 0.85, 0.81 with the decoder at 1e-3, against 0.55 for the mean aux image) but not yet
a deeper one (relu2: 0.55; relu3: 0.44); at relu2 it needs about 1,000 iterations to reach 0.7
(measured 0.71 on a LeNet of our own, before ``decoder_lr``).

Networks. The paper's substitute is a VGG16-BN front end against a MobileNet victim, its critic a
ResNet of 256 channels and its decoder ConvTranspose + BN + LeakyReLU ending in Conv + BN + tanh,
all sized for 32 x 32 CIFAR at fixed split levels. privbench sizes them from the shapes alone (the
attacker sees nothing else), never from the defense's architecture:

- substitute (``substitute=conv``, default): 3 x 3 convolutions + BN + ReLU (``width`` channels),
  stride 2 while the side still halves to at least z's side, then unpadded (side - 2) while it is
  still 2 or more above z's side (MNIST conv1: 28 -> 26 -> 24, aligned as the client's unpadded
  5 x 5 convolution is), at least ``depth`` of them, resized to z's side if it does not fall on it,
  then a 3 x 3 convolution to z's channels; a vector z
  (a flattened split or a projection) gets two stride-2 blocks, a flatten and a linear layer.
  ``substitute=mlp``: a perceptron with one hidden layer of 256. The output ends in a ReLU when
  ``output=relu``, or under ``output=auto`` (default) when no observed value is negative (what the
  attacker sees of a split after a ReLU); else it is linear.
- critic: a perceptron on the flattened z, two hidden layers of ``critic_width`` with
  LeakyReLU(0.2), no normalisation (WGAN-GP). A convolutional critic's step cost about 1.6 times as
  much on CPU (the gradient penalty differentiates it twice), and z is small here.
- decoder: the paper's: stride-2 ConvTranspose + BN + LeakyReLU(0.2) while doubling the side stays
  within the image's (else stride-1 blocks, unpadded ones growing the side by 2 where z is smaller
  than the image, MNIST conv1 24 -> 26 -> 28; a vector z first goes through a linear layer onto a
  quarter-side map), resized to the image's side if it does not fall on it, then Conv + BN + tanh.

Every observed row is both the distribution sample and a victim: the attack reconstructs all of
them (the harness's observed test images). Randomness: the networks' initial weights come from the
attacker's seeded global state, the batches and interpolation weights from ``view.generator``.

Returns f^-1(z) mapped back to [0, 1] pixels and clipped, scored by the harness like every
reconstruction, and the diagnostic ``attack.feature_mmd``: MK-MMD between F^ on the aux images and
the observed z at the end, up to 1,024 rows of each (how far the substitute's feature distribution
is from the victim's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench.api import (
    Attack,
    AttackOutput,
    MetricSpec,
    NotApplicable,
    apply,
    batches,
    critic_step,
    from_normalised,
    hookimpl,
    mk_mmd,
    param,
    resident,
    to_normalised,
)

OUTPUTS = ("auto", "relu", "linear")
FEATURE_MMD_ROWS = 1024  # rows of each sample the final attack.feature_mmd diagnostic uses at most


# -- the three networks, sized from the shapes the attacker sees ------------------------------------------

def halvings(side: int, target: int) -> int:
    """How many stride-2 3 x 3 convolutions (side -> ceil(side / 2)) keep the side >= target."""
    count = 0
    while (side + 1) // 2 >= target and side > 1:
        side, count = (side + 1) // 2, count + 1
    return count


def conv_block(in_channels: int, out_channels: int, stride: int, padding: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding),
            nn.BatchNorm2d(out_channels), nn.ReLU()]


def conv_stack(channels: int, width: int, strides: list[int], paddings: list[int] | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for stride, padding in zip(strides, paddings or [1] * len(strides), strict=True):
        layers += conv_block(channels, width, stride, padding)
        channels = width
    return nn.Sequential(*layers)


def spatial_side(size: int, strides: list[int], paddings: list[int] | None = None) -> int:
    for stride, padding in zip(strides, paddings or [1] * len(strides), strict=True):
        size = (size + 2 * padding - 3) // stride + 1
    return size


def stride_one_paddings(side: int, target: int, blocks: int) -> list[int]:
    """Paddings of the stride-1 blocks: unpadded (side - 2) while the side is still 2 or more above
    the target, as an unpadded client convolution shrinks it (MNIST conv1: 28 -> 24); more blocks are
    added when ``blocks`` are not enough."""
    paddings = []
    while side - target >= 2 or len(paddings) < blocks:
        padding = 0 if side - target >= 2 else 1
        paddings.append(padding)
        side -= 2 * (1 - padding)
    return paddings


def substitute_client(image_shape: tuple[int, ...], z_shape: tuple[int, ...], *, kind: str,
                      width: int, depth: int, relu_output: bool) -> nn.Module:
    """F^: a network of the attacker's own design with output shape ``z_shape`` (module docstring)."""
    channels, height, image_width = image_shape
    size = math.prod(z_shape)
    if kind == "mlp":
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(math.prod(image_shape), 256), nn.ReLU(),
                                   nn.Linear(256, size), nn.Unflatten(1, tuple(z_shape))]
    elif len(z_shape) == 3:
        out_channels, out_height, out_width = z_shape
        downs = min(halvings(height, out_height), halvings(image_width, out_width))
        after_downs = spatial_side(min(height, image_width), [2] * downs)
        tail = stride_one_paddings(after_downs, min(out_height, out_width), max(0, depth - downs))
        strides, paddings = [2] * downs + [1] * len(tail), [1] * downs + tail
        layers = list(conv_stack(channels, width, strides, paddings))
        reached = (spatial_side(height, strides, paddings), spatial_side(image_width, strides, paddings))
        if reached != (out_height, out_width):
            layers.append(nn.Upsample(size=(out_height, out_width), mode="bilinear", align_corners=False))
        layers.append(nn.Conv2d(width, out_channels, 3, padding=1))
    else:
        strides = [2 if i < 2 else 1 for i in range(max(depth, 2))]
        flat = width * spatial_side(height, strides) * spatial_side(image_width, strides)
        layers = [*conv_stack(channels, width, strides), nn.Flatten(), nn.Linear(flat, size),
                  nn.Unflatten(1, tuple(z_shape))]
    if relu_output:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def feature_critic(z_shape: tuple[int, ...], width: int) -> nn.Module:
    """D: a perceptron on the flattened z (two hidden layers of ``width``, LeakyReLU(0.2)), no
    normalisation layers (WGAN-GP)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(z_shape), width), nn.LeakyReLU(0.2),
                         nn.Linear(width, width), nn.LeakyReLU(0.2), nn.Linear(width, 1))


def upsampling_block(in_channels: int, out_channels: int, stride: int, padding: int = 1) -> list[nn.Module]:
    return [nn.ConvTranspose2d(in_channels, out_channels, 3, stride=stride, padding=padding,
                               output_padding=stride - 1),
            nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2)]


def feature_decoder(z_shape: tuple[int, ...], image_shape: tuple[int, ...], width: int) -> nn.Module:
    """f^-1: the paper's decoder shape (ConvTranspose + BN + LeakyReLU blocks, then Conv + BN + tanh),
    from z's shape to the image's; its output is the normalised image in [-1, 1]."""
    channels, height, image_width = image_shape
    layers: list[nn.Module] = []
    if len(z_shape) == 3:
        in_channels, side_h, side_w = z_shape
    else:
        in_channels, side_h, side_w = width, max(1, height // 4), max(1, image_width // 4)
        layers += [nn.Flatten(), nn.Linear(math.prod(z_shape), width * side_h * side_w),
                   nn.LeakyReLU(0.2), nn.Unflatten(1, (width, side_h, side_w))]
    doublings = 0
    while 2 * side_h <= height and 2 * side_w <= image_width:
        layers += upsampling_block(in_channels, width, 2)
        in_channels, side_h, side_w, doublings = width, 2 * side_h, 2 * side_w, doublings + 1
    if doublings == 0 and len(z_shape) == 3:  # no room to double: stride-1 blocks, +2 unpadded
        for padding in stride_one_paddings(height, side_h, 1):
            layers += upsampling_block(in_channels, width, 1, padding)
            in_channels, side_h, side_w = width, side_h + 2 * (1 - padding), side_w + 2 * (1 - padding)
    if (side_h, side_w) != (height, image_width):
        layers.append(nn.Upsample(size=(height, image_width), mode="bilinear", align_corners=False))
    layers += [nn.Conv2d(width, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.Tanh()]
    return nn.Sequential(*layers)


# -- training -------------------------------------------------------------------------------------------

def endless_batches(count: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """Index batches of exactly ``batch_size`` from shuffled passes over 0 .. count - 1, forever (the
    last partial batch of a pass is dropped, as the authors' loaders restart). Each pass is one of
    ``batches``: drawn on the CPU and moved to ``device`` once."""
    while True:
        yield from (index for index in batches(count, batch_size, True, generator, device)
                    if len(index) == batch_size)


@dataclass
class ForaNetworks:
    substitute: nn.Module
    critic: nn.Module
    decoder: nn.Module


def substitute_step(nets: ForaNetworks, optimizer, aux: torch.Tensor, observed: torch.Tensor,
                    a: float) -> torch.Tensor:
    """L_F = (1 - a) * (-mean D(F^(x))) + a * MK-MMD(F^(x), z); returns F^(x), detached."""
    features = nets.substitute(aux)
    adversarial = -nets.critic(features).mean()
    loss = (1 - a) * adversarial + a * mk_mmd(features.flatten(1), observed.flatten(1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return features.detach()


def decoder_step(nets: ForaNetworks, optimizer, aux: torch.Tensor) -> None:
    """L_inv = MSE(f^-1(F^(x)), x) on [-1, 1] images, with the (just updated) F^ frozen."""
    with torch.no_grad():
        features = nets.substitute(aux)
    loss = nn.functional.mse_loss(nets.decoder(features), to_normalised(aux))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@dataclass
class Fora(Attack):
    """Match a substitute client's features to the observed ones, learn its inverse, decode z."""

    name: ClassVar[str] = "fora"
    summary: ClassVar[str] = ("query-free, no architecture: a substitute client matched to the observed "
                              "feature distribution (MK-MMD + WGAN-GP), its decoder applied to z "
                              "(Xu et al., FORA)")
    threat_model: ClassVar[str] = "query-free"
    requires: ClassVar[frozenset[str]] = frozenset()  # aux images and the observed z: always there
    cost_hint: ClassVar[float] = 4

    iterations: int = param(100, "training iterations, each a substitute, decoder and critic step "
                                 "(authors: 40000)", minimum=1)
    lr: float = param(1e-3, "Adam learning rate of the substitute client (authors: 1e-4, with 40000 "
                            "iterations)", minimum=0.0)
    decoder_lr: float = param(1e-2, "Adam learning rate of the decoder (authors: their lr, 1e-4, with "
                                    "40000 iterations; their oracle decoder: 1e-3)", minimum=0.0)
    critic_lr: float = param(3e-3, "Adam learning rate of the critic (authors' dlr: 3e-4, with lr "
                                   "1e-4)", minimum=0.0)
    a: float = param(0.8, "weight of MK-MMD against the adversarial term, (1 - a) * adv + a * MMD "
                          "(authors: 0.8)", minimum=0.0, maximum=1.0)
    gp_weight: float = param(1000.0, "lambda_GP of the critic's gradient penalty (authors: 1000)",
                             minimum=0.0)
    batch_size: int = param(64, "aux images and observed rows per iteration (authors: 64)", minimum=2)
    substitute: str = param("conv", "substitute client: conv (3 x 3 conv + BN + ReLU stack of z's "
                                    "shape) or mlp (one hidden layer)", choices=("conv", "mlp"))
    width: int = param(16, "channels of the substitute's convolutions", minimum=1)
    critic_width: int = param(128, "units of the critic's two hidden layers", minimum=1)
    depth: int = param(2, "least number of conv blocks in the substitute", minimum=1)
    decoder_width: int = param(32, "channels of the decoder's blocks", minimum=1)
    output: str = param("auto", "substitute output activation: relu, linear, or auto (relu when no "
                                "observed value is negative)", choices=OUTPUTS)

    def run(self, view) -> AttackOutput:
        observed = view.observed.float()
        aux = view.aux_images.float()
        batch = min(self.batch_size, len(observed), len(aux))
        if batch < 2:
            raise NotApplicable(f"attack 'fora' matches feature distributions and needs at least 2 "
                                f"observed rows and 2 aux images; it has {len(observed)} and {len(aux)}")
        nets = self.networks(tuple(view.image_shape), observed)
        self.fit_networks(nets, aux, observed, batch, view)
        reconstruction = from_normalised(apply(nets.decoder, observed, view)).clamp(0, 1)
        return AttackOutput(reconstruction=reconstruction,
                            diagnostics={"attack.feature_mmd": self.final_mmd(nets, aux, observed, view)})

    def networks(self, image_shape: tuple[int, ...], observed: torch.Tensor) -> ForaNetworks:
        z_shape = tuple(observed.shape[1:])
        relu_output = self.output == "relu" or (self.output == "auto" and bool((observed >= 0).all()))
        return ForaNetworks(
            substitute=substitute_client(image_shape, z_shape, kind=self.substitute, width=self.width,
                                         depth=self.depth, relu_output=relu_output),
            critic=feature_critic(z_shape, self.critic_width),
            decoder=feature_decoder(z_shape, image_shape, self.decoder_width))

    def fit_networks(self, nets: ForaNetworks, aux: torch.Tensor, observed: torch.Tensor, batch: int,
              view) -> None:
        device = view.device
        for net in (nets.substitute, nets.critic, nets.decoder):
            net.to(device).train()
        optimisers = self.optimisers(nets)
        aux, observed = resident(device, aux, observed)
        aux_batches = endless_batches(len(aux), batch, view.generator, device)
        observed_batches = endless_batches(len(observed), batch, view.generator, device)
        description = f"fora: {self.iterations} iterations on {len(observed)} observed rows"
        with view.progress.task(description, total=self.iterations) as advance:
            for _ in range(self.iterations):
                x = aux[next(aux_batches)]
                z = observed[next(observed_batches)]
                fake = substitute_step(nets, optimisers[0], x, z, self.a)
                decoder_step(nets, optimisers[1], x)
                critic_step(nets.critic, optimisers[2], z, fake, self.gp_weight, view.generator)
                advance()
        for net in (nets.substitute, nets.critic, nets.decoder):
            net.eval()

    def optimisers(self, nets: ForaNetworks) -> tuple[torch.optim.Adam, torch.optim.Adam, torch.optim.Adam]:
        """Adam for the substitute (``lr``), the decoder (``decoder_lr``) and the critic (``critic_lr``)."""
        return (torch.optim.Adam(nets.substitute.parameters(), lr=self.lr),
                torch.optim.Adam(nets.decoder.parameters(), lr=self.decoder_lr),
                torch.optim.Adam(nets.critic.parameters(), lr=self.critic_lr))

    @staticmethod
    def final_mmd(nets: ForaNetworks, aux: torch.Tensor, observed: torch.Tensor, view) -> float:
        """MK-MMD between F^ on the aux images and the observed z (at most FEATURE_MMD_ROWS each)."""
        features = apply(nets.substitute, aux[:FEATURE_MMD_ROWS], view)
        return float(mk_mmd(features.flatten(1), observed[:FEATURE_MMD_ROWS].flatten(1)))


@hookimpl
def register_metrics(register):
    register(MetricSpec("attack.feature_mmd", "MMD^2", "none", "how far FORA's substitute client's "
                        "features on the aux images are from the observed protected data",
                        "unbiased MK-MMD^2 (5 Gaussian kernels, alpha = 2^-3 .. 2) between the "
                        "substitute on up to 1,024 aux images and up to 1,024 observed rows",
                        None, None))


@hookimpl
def register_attacks(register):
    register(Fora)
