"""A deep image prior (Ulyanov, Vedaldi, Lempitsky, CVPR 2018) and DISCO's likelihood-maximisation
attack on top of it (Singh et al., CVPR 2021, the "LM" attack; run by InferenceBenchmark's
``input_model_optimization`` and by GLASS, NeurIPS 2023, as "LM [DISCO]").

The attack does not search the image's pixels (He et al.'s rMLE) but the weights phi of a generator
fed a fixed noise input u, so that the client maps the generator's image onto the observation z:

    phi* = argmin_phi  || f1(G_phi(u)) - z ||^2 / n          (mean squared feature error)
    x*   = G_phi*(u)

The generator's architecture is the prior: a convolutional network fits natural image structure long
before it fits noise, so the search prefers plausible images without a hand-tuned TV term.

Generator (``ImagePrior``): the ``skip`` encoder-decoder of the deep-image-prior paper. At each level
the input goes down (a convolution, 2 x 2 average pooling, BN, LeakyReLU(0.2), a second convolution,
BN, LeakyReLU) into the next level, comes back up by nearest-neighbour upsampling to the level's own
size, is concatenated with a 4-channel 1 x 1 skip branch of the level's input, normalised, and mixed
by a convolution and a 1 x 1 convolution (each with BN and LeakyReLU); a final 1 x 1 convolution and
a sigmoid give the image. Zero padding. The authors' settings, both fixed by the side s of each
level's input (they agree between the two releases):

    release                      image    levels  widths                    kernels
    IB input_model_optimization  128 px   6       16 32 64 128 128 128     7 7 5 5 3 3
    GLASS optimize_onlyM         64 px    5       32 64 128 128 128        7 5 5 3 3

so width = min(128, 2048 / s) and kernel = 7 at s >= 64, 5 at 16 <= s < 64, 3 below; and in both the
deepest level works on a 2 x 2 map (128 / 2^6 = 64 / 2^5 = 2). privbench keeps these rules and
derives the depth from the image the same way: as many levels as halve the side down to 2 (or 3,
for a side that is not a power of 2): ``prior_levels(side) = floor(log2(side)) - 1``. An 8 x 8
digit gets 2 levels (8 -> 4 -> 2); the authors' 5 or 6 levels cannot halve it that often, and a
deeper level would normalise a 1 x 1 map, whose batch norm of one value is constant. 28 x 28 MNIST
gets 3 levels (28 -> 14 -> 7 -> 3), 32 x 32 CIFAR 4. Upsampling goes to the exact size of the level
above (the authors crop or resize the output instead), so odd sides need nothing else. ``width`` 0
follows the authors' width rule (128 channels at every level of an 8 x 8 image); a positive value
sets every level's width, a cheaper generator for the default matrix. The input u has the authors'
3 channels, whatever the image's channel count, and the image's sides.

Batch norm here always normalises with the current batch's statistics (no running averages): the
authors' generator never leaves training mode, and it sees one image (one u) at a time, so each
channel is normalised over its spatial positions.

Optimisation (``likelihood_maximisation``): Adam at lr 0.01 on phi, 25,000 iterations in the
authors' configuration, u drawn uniform in [0, 1] once; at each step the generator sees u + sigma N
with fresh standard normal N and sigma = 10 during the first 40 % of the iterations, 2 until 60 %,
0.5 until 80 %, then 0 (the authors' 10k / 15k / 20k of 25k, as fractions of ``iterations``). Their
loop also "perturbs" the weights, but it rebinds a local variable and changes nothing, so privbench
leaves it out. The result is the generator's image of the clean u after the last step, never an
image chosen by comparing with the truth (IB keeps the iterate with the best SSIM against the ground
truth, an oracle).

Each target gets its own freshly initialised generator and its own u and noise, drawn from a seed
of its own (never shared between targets, unlike IB, which fits one generator to a whole batch).
The targets are optimised side by side with the generators' weights stacked and run with
``torch.func.vmap``: the loss is the sum of the per-target losses, so each generator gets exactly
its own gradient, and Adam acts elementwise, so this equals fitting them one at a time.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

SKIP_CHANNELS = 4  # the authors' num_channels_skip at every level
INPUT_CHANNELS = 3  # the authors' noise input depth
LEAKY_SLOPE = 0.2
DEEPEST_SIDE = 2  # the side of the deepest level in both authors' configurations
# (fraction of the iterations before which, noise scale): the authors' 10k, 15k, 20k of 25k
NOISE_SCHEDULE = ((0.4, 10.0), (0.6, 2.0), (0.8, 0.5))


def prior_levels(side: int) -> int:
    """How many levels halve a side down to 2 (or 3): the authors' depth at 128 px (6) and 64 px
    (5), 2 for an 8 x 8 digit; at least 1."""
    return max(1, int(math.floor(math.log2(side))) - 1)


def deepest_side(side: int, levels: int) -> int:
    """The side of the map the deepest level computes on (2 x 2 average pooling floors odd sides)."""
    for _ in range(levels):
        side //= 2
    return side


def authors_width(side: int) -> int:
    """The authors' width for a level whose input has side ``side``: min(128, 2048 / side)."""
    return max(1, min(128, 2048 // side))


def authors_kernel(side: int) -> int:
    """The authors' convolution size for a level whose input has side ``side``: 7, 5 or 3."""
    return 7 if side >= 64 else 5 if side >= 16 else 3


def normalised(channels: int) -> nn.BatchNorm2d:
    """Batch norm on the current batch's statistics only (the generator never leaves training mode)."""
    return nn.BatchNorm2d(channels, track_running_stats=False)


def conv_unit(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
    """Convolution (zero padding keeps the size), batch norm, LeakyReLU(0.2)."""
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2), normalised(out_channels),
            nn.LeakyReLU(LEAKY_SLOPE)]


class PriorLevel(nn.Module):
    """One level of the skip U-Net: down into ``inner`` (the next level, or nothing at the bottom),
    back up to this level's size, joined with a 1 x 1 skip branch, then mixed."""

    def __init__(self, in_channels: int, width: int, kernel: int, inner: PriorLevel | None) -> None:
        super().__init__()
        self.skip = nn.Sequential(*conv_unit(in_channels, SKIP_CHANNELS, 1))
        self.down = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel, padding=kernel // 2), nn.AvgPool2d(2),
            normalised(width), nn.LeakyReLU(LEAKY_SLOPE), *conv_unit(width, width, kernel))
        self.inner = inner
        from_below = inner.width if inner is not None else width
        self.join = normalised(SKIP_CHANNELS + from_below)
        self.up = nn.Sequential(*conv_unit(SKIP_CHANNELS + from_below, width, kernel),
                                *conv_unit(width, width, 1))
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        below = self.down(x)
        if self.inner is not None:
            below = self.inner(below)
        below = F.interpolate(below, size=x.shape[-2:], mode="nearest")
        return self.up(self.join(torch.cat([self.skip(x), below], dim=1)))


class ImagePrior(nn.Module):
    """The deep-image-prior ``skip`` generator for images of ``image_shape`` (module docstring):
    ``levels`` (0: ``prior_levels`` of the shorter side), ``width`` channels at every level (0: the
    authors' min(128, 2048 / side)), the authors' kernel per level side, sigmoid output."""

    def __init__(self, image_shape: tuple[int, int, int], *, levels: int = 0, width: int = 0) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        side = min(height, width_px)
        if levels and deepest_side(side, levels) < DEEPEST_SIDE:
            raise ValueError(f"{levels} levels would halve a {height} x {width_px} image below "
                             f"{DEEPEST_SIDE} x {DEEPEST_SIDE}; at most {prior_levels(side)}")
        levels = levels or prior_levels(side)
        sides = [side >> level for level in range(levels)]  # each level's input side
        in_channels = [INPUT_CHANNELS] + [width or authors_width(s) for s in sides[:-1]]
        inner = None
        for level in reversed(range(levels)):
            inner = PriorLevel(in_channels[level], width or authors_width(sides[level]),
                               authors_kernel(sides[level]), inner)
        self.levels = levels
        self.body = inner
        self.to_image = nn.Conv2d(self.body.width, channels, 1)
        self.input_shape = (INPUT_CHANNELS, height, width_px)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.to_image(self.body(u)))


def noise_scale(step: int, iterations: int) -> float:
    """sigma of the input noise at ``step``: 10, 2, 0.5 before 40 %, 60 %, 80 % of the iterations,
    then 0 (the authors' schedule, iterations 10k, 15k, 20k of 25k)."""
    for fraction, scale in NOISE_SCHEDULE:
        if step < fraction * iterations:
            return scale
    return 0.0


def fresh_generator(image_shape: tuple[int, int, int], seed: int, *, levels: int,
                    width: int) -> tuple[ImagePrior, torch.Tensor, torch.Generator]:
    """A target's own generator, initialised by torch's default rule from ``seed`` (the global
    random state is left as it was), its fixed input u ~ U[0, 1], and the stream its input noise
    is drawn from."""
    stream = torch.Generator().manual_seed(seed)
    init_seed = int(torch.randint(2 ** 62, (), generator=stream))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(init_seed)  # built on the CPU: a GPU's stream is left alone
        prior = ImagePrior(image_shape, levels=levels, width=width)
    u = torch.rand(prior.input_shape, generator=stream)
    return prior, u, stream


def likelihood_maximisation(encoder: nn.Module, targets: torch.Tensor, image_shape: tuple[int, int, int],
                            ctx, *, seeds: list[int], iterations: int, lr: float = 0.01,
                            levels: int = 0, width: int = 0, description: str) -> torch.Tensor:
    """x*_i = G_phi*_i(u_i) with phi*_i = argmin ||encoder(G_phi_i(u_i + sigma_t N)) - z_i||^2 / n
    for each target z_i = ``targets[i]``, its generator, u_i and noise drawn from ``seeds[i]``
    (module docstring). Adam at ``lr``; the input-noise schedule of ``noise_scale``. Returns the
    last images G_phi_i(u_i), clipped to [0, 1], on the CPU."""
    from torch.func import functional_call, stack_module_state, vmap
    if len(seeds) != len(targets):
        raise ValueError(f"one seed per target: {len(seeds)} seeds for {len(targets)} targets")
    encoder = copy.deepcopy(encoder).to(ctx.device).eval()  # the caller's module stays as it was
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    targets = targets.to(ctx.device)
    priors, inputs, streams = zip(*(fresh_generator(image_shape, seed, levels=levels, width=width)
                                    for seed in seeds), strict=True)
    weights, _ = stack_module_state([prior.to(ctx.device) for prior in priors])
    weights = {name: value.detach().requires_grad_(True) for name, value in weights.items()}
    base = copy.deepcopy(priors[0]).to("meta")
    u = torch.stack(inputs).to(ctx.device)

    def generate_one(params: dict, noise_input: torch.Tensor) -> torch.Tensor:
        return functional_call(base, params, (noise_input.unsqueeze(0),)).squeeze(0)

    generate = vmap(generate_one)
    optimizer = torch.optim.Adam(list(weights.values()), lr=lr, foreach=True)
    with ctx.progress.task(description, total=iterations) as advance:
        for step in range(iterations):
            sigma = noise_scale(step, iterations)
            if sigma:  # each target's noise from its own stream: side by side = one at a time
                noise = torch.stack([torch.randn(u.shape[1:], generator=s) for s in streams])
                noisy = u + sigma * noise.to(ctx.device)
            else:
                noisy = u
            images = generate(weights, noisy)
            # DISCO's likelihood term, one mean squared feature error per target, summed
            loss = (encoder(images) - targets).pow(2).flatten(1).mean(1).sum()
            gradients = torch.autograd.grad(loss, list(weights.values()))
            for weight, gradient in zip(weights.values(), gradients, strict=True):
                weight.grad = gradient
            optimizer.step()
            advance()
    with torch.no_grad():
        return generate(weights, u).clamp(0, 1).cpu()
