"""Attack algorithms several plugins share: inversion by optimisation with a total-variation prior
(He et al.'s rMLE, also the last step of their query-free shadow attack) and decoder training (their
inverse network).

``invert`` solves x* = argmin_x ||f(x) - z||^2 / n + lambda_TV * TV_beta(x) (He et al., ACSAC 2019,
Sec. 4, eq. 3, with Mahendran & Vedaldi's TV prior) from a constant gray or a random start. Two
optimisers (``optimizer``):

- ``authors`` (default), as the authors' released code runs it (their ``inverse_whitebox_MNIST.py``):
  Adam with ``amsgrad=True, eps=1e-3`` on the *normalised* image u = (x - 0.5) / 0.5 in [-1, 1],
  starting from u = 0 (gray); u is not clipped while optimising, only the final x = 0.5 + 0.5 u is
  clipped to [0, 1] (their ``save_image``). Adam's eps of 1e-3 is large next to the gradients of a
  mean-squared feature loss, so it damps the steps, and the authors run 5,000 iterations (measured
  on real MNIST at conv1, 10 images, lr 1e-2: 45.1 dB; their own code 45.9).
- ``adam``: privbench's earlier optimiser, Adam with torch's defaults (eps 1e-8, no amsgrad) on the
  [0, 1] pixels, x clipped to [0, 1] after every step. It inverts a shallow split almost exactly
  (measured 86 dB at MNIST conv1 in 500 iterations): a stronger attacker than the paper's.

The loss is the same under both: TV_beta is computed on x in [0, 1], where ``tv_weight`` is 4 times
the authors' lambda_TV (differences in u are twice those in x; beta = 2); the encoder normalises
its input itself, so the feature term does not change. ``train_decoder`` fits g(z) ~ x on (z, x)
pairs with a pixel L2 loss (He et al., Sec. 5).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from privbench.feature_matching import critic_step
from privbench.training import fit

GRAY = 0.5
AUTHORS_SIDE = 28  # the image side He et al.'s lambda_TV values were tuned on (MNIST; CIFAR: 32)
OPTIMIZERS = ("authors", "adam")
AUTHORS_EPS = 1e-3  # He et al.'s Adam eps (their --eps default), with amsgrad


def total_variation(x: torch.Tensor, beta: float, per_image: bool = False) -> torch.Tensor:
    """TV_beta(x): mean of ((dx)^2 + (dy)^2)^(beta/2) over pixels (last row/column dropped); with
    ``per_image``, one mean per image of the batch."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    squared = dx.pow(2) + dy.pow(2)
    terms = squared if beta == 2 else (squared + 1e-8).pow(beta / 2)
    return terms.flatten(1).mean(1) if per_image else terms.mean()


def tv_size_factor(image_shape: tuple[int, ...]) -> float:
    """(s / 28)^2 for an image of smaller side s < 28, else 1: the factor that carries He et al.'s
    lambda_TV (tuned at 28 x 28 and 32 x 32) to a smaller image. The same content at side s has
    neighbour differences 28 / s times as large, so its TV is (28 / s)^2 times larger; scaling
    lambda_TV down by as much keeps the prior's weight against the feature term."""
    side = min(image_shape[-2:])
    return min(1.0, (side / AUTHORS_SIDE) ** 2)


def checked_tv_weight(plugin: str, value: str) -> None:
    """A ``tv_weight`` parameter is ``auto`` or a finite number >= 0; else a one-line error."""
    from privbench.errors import PrivbenchError
    if value == "auto":
        return
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0 or number == float("inf"):
        raise PrivbenchError(f"attack '{plugin}': bad value {value!r} for parameter 'tv_weight'; "
                             "accepted: auto or a number >= 0")


def starting_images(count: int, image_shape: tuple[int, ...], start: str,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """rMLE's starting point: a constant gray image (He et al.'s code) or uniform noise in [0, 1]
    (the paper's random start), drawn from ``generator``."""
    if start == "gray":
        return torch.full((count, *image_shape), GRAY)
    if start == "random":
        return torch.rand((count, *image_shape), generator=generator)
    raise ValueError(f"unknown start {start!r}; accepted: gray, random")


def to_normalised(x: torch.Tensor) -> torch.Tensor:
    """u = (x - 0.5) / 0.5: the authors' input normalisation (mean 0.5, std 0.5), [0, 1] -> [-1, 1]."""
    return (x - GRAY) / 0.5


def from_normalised(u: torch.Tensor) -> torch.Tensor:
    """x = 0.5 + 0.5 u, the inverse of ``to_normalised``."""
    return GRAY + 0.5 * u


def per_image_loss(encoded: torch.Tensor, targets: torch.Tensor, x: torch.Tensor, tv_weight: float,
                   beta: float) -> torch.Tensor:
    """Eq. 3 for each image alone: mean squared feature error + tv_weight * TV_beta, one value per
    image. ``invert`` minimises their sum, so each image's gradient is the one it would get inverted
    by itself, as the authors invert one image at a time (Adam acts per pixel: a batch of images is
    then the same as separate runs, whatever its size)."""
    loss = (encoded - targets).pow(2).flatten(1).mean(1)
    if tv_weight:
        loss = loss + tv_weight * total_variation(x, beta, per_image=True)
    return loss


def inversion_optimizer(variable: torch.Tensor, lr: float, optimizer: str) -> torch.optim.Optimizer:
    """The optimiser over the inverted image: the authors' Adam (amsgrad, eps 1e-3) or torch's."""
    if optimizer == "authors":
        return torch.optim.Adam([variable], lr=lr, eps=AUTHORS_EPS, amsgrad=True)
    if optimizer == "adam":
        return torch.optim.Adam([variable], lr=lr)
    raise ValueError(f"unknown optimizer {optimizer!r}; accepted: {', '.join(OPTIMIZERS)}")


def invert(encoder: nn.Module, targets: torch.Tensor, image_shape: tuple[int, ...], ctx, *,
           iterations: int, lr: float, tv_weight: float, beta: float, description: str,
           start: str = "gray", generator: torch.Generator | None = None,
           optimizer: str = "authors") -> torch.Tensor:
    """x* = argmin ||encoder(x) - targets||^2 / n + tv_weight * TV_beta(x) (He et al., eq. 3), for
    each image as if inverted alone (``per_image_loss``).

    ``authors``: Adam (amsgrad, eps 1e-3) on u = (x - 0.5) / 0.5, x clipped to [0, 1] only at the
    end; ``adam``: torch's Adam on x, clipped to [0, 1] after every step (module docstring)."""
    encoder = copy.deepcopy(encoder).to(ctx.device).eval()  # the caller's module stays as it was
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    targets = targets.to(ctx.device)
    start_x = starting_images(len(targets), image_shape, start, generator).to(ctx.device)
    normalised = optimizer == "authors"
    variable = (to_normalised(start_x) if normalised else start_x).requires_grad_(True)
    step = inversion_optimizer(variable, lr, optimizer)
    with ctx.progress.task(description, total=iterations) as advance:
        for _ in range(iterations):
            step.zero_grad(set_to_none=True)
            x = from_normalised(variable) if normalised else variable
            loss = per_image_loss(encoder(x), targets, x, tv_weight, beta).sum()
            loss.backward()
            step.step()
            if not normalised:
                with torch.no_grad():
                    variable.clamp_(0, 1)
            advance()
    final = from_normalised(variable) if normalised else variable
    return final.detach().clamp(0, 1).cpu()


def without_random_layers(encoder: nn.Module) -> nn.Module:
    """A copy of ``encoder`` whose random perturbations (modules with ``random_perturbation =
    True``: feature noise or dropout, input noise) are the identity: the deterministic f1 that He et
    al.'s white-box attacker inverts against a perturbed observation (their defense evaluation,
    ``inverse_whitebox_MNIST_defense.py``, optimises through the clean f1)."""
    if getattr(encoder, "random_perturbation", False):
        return nn.Identity()
    stripped = copy.deepcopy(encoder)
    for name, module in list(stripped.named_modules()):
        if name and getattr(module, "random_perturbation", False):
            parent_name, _, child = name.rpartition(".")
            setattr(stripped.get_submodule(parent_name) if parent_name else stripped, child, nn.Identity())
    return stripped


def train_decoder(decoder: nn.Module, protected: torch.Tensor, images: torch.Tensor, ctx, *,
                  epochs: int, lr: float, batch_size: int, description: str,
                  halve_lr_every: int = 0) -> nn.Module:
    """g = argmin_g sum ||g(z) - x||^2 over the (z, x) pairs: He et al.'s inverse network (Adam with
    amsgrad; their code halves the learning rate every 10 epochs)."""
    return fit(decoder, protected, images, nn.functional.mse_loss, ctx, epochs=epochs, lr=lr,
               batch_size=batch_size, description=description, halve_lr_every=halve_lr_every)


class MirroredDecoder(nn.Module):
    """An inverse network shaped like He et al.'s: transposed convolutions that mirror the client
    part, from the protected data's shape back to the image's, so its size and cost scale with
    what the client computed. ``layout`` says which of the two constructions below ran.

    ``he2019-lenet-relu2``: where z is LeNet's ReLU2 output on a 28 x 28 grey image (16 x 8 x 8),
    the authors' own decoder (their ``LeNetDecoderReLU2``): ConvTranspose(16 -> 8, 5 x 5) -> ReLU
    -> ConvTranspose(8 -> 1, 5 x 5, stride 2, output padding 1), 3,409 parameters.

    ``mirror`` (every other shape): while doubling the sides still leaves room for a last 5 x 5
    layer, a stride-2 transposed convolution halves the channels (undoing the client's pooling);
    then one transposed convolution reaches the image's sides exactly and its channels (kernel
    d + 1 for a side short by d >= 4, else a 5 x 5-like kernel with padding). At LeNet's conv1 on
    28 x 28 MNIST this is one 5 x 5 transposed convolution 8 -> 1 (201 parameters), the same
    function class as the authors' ``LeNetDecoderconv1`` (a 5 x 5 convolution with padding 4).
    ReLU between layers; no squashing at the end (the scorer clamps to [0, 1]). A vector z first
    goes through a linear layer onto a coarse map of a quarter of the image's side.

    Targets: privbench's decoders are trained on [0, 1] pixels, the authors' on normalised [-1, 1]
    ones. The two differ by an affine map the last layer's weights and bias absorb, but a squared
    error on [0, 1] targets is a quarter of the same error on [-1, 1] targets, so its gradients are
    smaller next to Adam's eps of 1e-3, which then damps the steps of a decoder this small: the
    inverse-network attack trains it at lr 1e-2 instead of the authors' 1e-3
    (``plugins/inverse_network.py`` gives the measurement)."""

    def __init__(self, z_shape: tuple[int, ...], image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        if tuple(z_shape) == HE_LENET_RELU2 and tuple(image_shape) == HE_LENET_IMAGE:
            self.layout = "he2019-lenet-relu2"
            self.body = nn.Sequential(nn.ConvTranspose2d(16, 8, 5), nn.ReLU(),
                                      nn.ConvTranspose2d(8, 1, 5, stride=2, output_padding=1))
        else:
            self.layout = "mirror"
            self.body = nn.Sequential(*mirrored_layers(tuple(z_shape), tuple(image_shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


HE_LENET_IMAGE = (1, 28, 28)
HE_LENET_RELU2 = (16, 8, 8)  # LeNet's ReLU2 output on a 28 x 28 image: conv(5) -> pool -> conv(5)


def mirrored_layers(z_shape: tuple[int, ...], image_shape: tuple[int, int, int]) -> list[nn.Module]:
    """The ``mirror`` construction of ``MirroredDecoder`` (its docstring)."""
    channels, height, width = image_shape
    layers: list[nn.Module] = []
    if len(z_shape) == 3:
        c, h, w = z_shape
    else:
        size = 1
        for dim in z_shape:
            size *= dim
        c, h, w = max(channels, 16), max(1, height // 4), max(1, width // 4)
        layers += [nn.Flatten(), nn.Linear(size, c * h * w), nn.ReLU(), nn.Unflatten(1, (c, h, w))]
    while 2 * h <= height - 4 and 2 * w <= width - 4:
        out = max(channels, c // 2)
        layers += [nn.ConvTranspose2d(c, out, 4, stride=2, padding=1), nn.ReLU()]
        c, h, w = out, 2 * h, 2 * w
    (kh, ph), (kw, pw) = last_kernel(height - h), last_kernel(width - w)
    layers.append(nn.ConvTranspose2d(c, channels, (kh, kw), padding=(ph, pw)))
    return layers


def last_kernel(short_by: int) -> tuple[int, int]:
    """(kernel, padding) of a stride-1 transposed convolution that grows a side by ``short_by``
    (shrinks it when negative): output = input + kernel - 1 - 2 * padding."""
    padding = max(0, (5 - short_by) // 2)
    return short_by + 1 + 2 * padding, padding


# --- UnSplit: inverting an unknown client by coordinate descent (Erdogan et al., WPES 2022) --------

def squared_total_variation(x: torch.Tensor) -> torch.Tensor:
    """UnSplit's TV, one value per image: the mean squared vertical difference plus the mean
    squared horizontal difference (their ``TV`` on a batch of one image)."""
    vertical = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).mean(1)
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).mean(1)
    return vertical + horizontal


def unsplit(clones: list[nn.Module], targets: torch.Tensor, image_shape: tuple[int, ...], ctx, *,
            iterations: int, input_steps: int, model_steps: int, tv_weight: float, l2_weight: float,
            lr: float, description: str) -> torch.Tensor:
    """UnSplit's model-inversion-and-stealing attack, one clone per target (``clones[i]`` for
    ``targets[i]``, each freshly initialised by the caller: the clone is reset for every target).

    For ``iterations`` outer steps: ``input_steps`` Adam steps on the estimate x_i with
        MSE(f~_i(x_i), z_i) + tv_weight * TV(x_i) + l2_weight * mean(x_i^2),
    then ``model_steps`` Adam steps on the clone's weights theta~_i with MSE(f~_i(x_i), z_i). Both
    optimisers are Adam (amsgrad) at ``lr``, kept across the outer steps; x_i starts at 0.5 and is
    never clamped during the search (clipped to [0, 1] at the end, for scoring).

    The targets are optimised together, the clones' weights stacked and run with ``torch.func``'s
    ``vmap``: the summed loss gives each target exactly its own gradient and Adam is elementwise, so
    this is the authors' one-target-at-a-time search, done side by side. Afterwards each clone holds
    the weights found for its target (UnSplit's stolen client)."""
    from torch.func import functional_call, stack_module_state, vmap
    base = copy.deepcopy(clones[0]).to("meta")
    weights, buffers = stack_module_state([clone.to(ctx.device).train() for clone in clones])
    weights = {name: value.detach().requires_grad_(True) for name, value in weights.items()}
    targets = targets.to(ctx.device)
    x = torch.full((len(targets), *image_shape), 0.5, device=ctx.device, requires_grad=True)

    def encode_one(params, buffer, image):
        return functional_call(base, (params, buffer), (image.unsqueeze(0),)).squeeze(0)

    # an encoder that draws noise of its own (pixelation's Laplace noise, a disguise's noise; not
    # marked as a removable perturbation) draws it afresh for every target and every step
    encode_all = vmap(encode_one, randomness="different")

    def mismatch() -> torch.Tensor:
        return (encode_all(weights, buffers, x) - targets).pow(2).flatten(1).mean(1)

    input_optimizer = torch.optim.Adam([x], lr=lr, amsgrad=True)
    if not weights:  # a parameter-free client (the identity): nothing to steal, only x to find
        model_steps = 0
    model_optimizer = torch.optim.Adam(list(weights.values()) or [x], lr=lr, amsgrad=True)
    with ctx.progress.task(description, total=iterations) as advance:
        for _ in range(iterations):
            for _ in range(input_steps):
                loss = mismatch() + tv_weight * squared_total_variation(x) + l2_weight * x.pow(2).flatten(1).mean(1)
                (x.grad,) = torch.autograd.grad(loss.sum(), [x])
                input_optimizer.step()
            for _ in range(model_steps):
                gradients = torch.autograd.grad(mismatch().sum(), list(weights.values()))
                for weight, gradient in zip(weights.values(), gradients, strict=True):
                    weight.grad = gradient
                model_optimizer.step()
            advance()
    _load_stacked(clones, weights, buffers)
    return x.detach().clamp(0, 1).cpu()


def _load_stacked(clones: list[nn.Module], weights: dict, buffers: dict) -> None:
    """Write row i of the stacked weights and buffers back into ``clones[i]``: after the search
    each clone holds the client weights stolen for its target."""
    with torch.no_grad():
        for number, clone in enumerate(clones):
            for name, value in [*clone.named_parameters(), *clone.named_buffers()]:
                stacked = weights.get(name, buffers.get(name))
                if stacked is not None:
                    value.copy_(stacked[number])


# --- A realism prior for the inverse network: a WGAN-GP critic on the decoded observations --------
# (the critic's loss and step are privbench.feature_matching's, which FORA's feature critic uses too)

class Critic(nn.Module):
    """A WGAN-GP critic D: an image -> one real score (no sigmoid: D estimates the Wasserstein-1
    distance, not a probability).

    A 3 x 3 convolution to ``width`` channels, then stride-2 4 x 4 convolutions that halve the sides
    and double the channels while both sides exceed 4, then a linear layer; LeakyReLU(0.2) between
    layers. No batch normalisation: the gradient penalty is taken per sample, and batch norm would
    make each sample's score depend on the rest of the batch (Gulrajani et al., 2017, Sec. 4). On an
    8 x 8 grey image: 1 -> 32 at 8 x 8, 32 -> 64 at 4 x 4, 1,024 -> 1 (34,177 parameters)."""

    def __init__(self, image_shape: tuple[int, int, int], width: int = 32) -> None:
        super().__init__()
        channels, height, side = image_shape
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        while height > 4 and side > 4:
            layers += [nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width, height, side = 2 * width, height // 2, side // 2
        layers += [nn.Flatten(), nn.Linear(width * height * side, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)


def critic_optimizer(critic: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Gulrajani et al.'s critic optimiser: Adam with beta1 = 0, beta2 = 0.9."""
    return torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.0, 0.9))


def sample_rows(values: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` rows of ``values`` drawn uniformly with replacement from ``generator``."""
    return values[torch.randint(0, len(values), (count,), generator=generator)]


def train_decoder_with_critic(decoder: nn.Module, protected: torch.Tensor, images: torch.Tensor,
                              observed: torch.Tensor, realistic: torch.Tensor, ctx, *, epochs: int,
                              lr: float, batch_size: int, description: str, prior_weight: float,
                              critic_steps: int, critic_lr: float, gp_weight: float,
                              generator: torch.Generator, halve_lr_every: int = 0) -> nn.Module:
    """He et al.'s inverse network with a realism prior on the decoded observations.

    The decoder g minimises, on each batch of queried pairs (z, x) and a batch z_o of observations,

        L_g = ||g(z) - x||^2 / n  -  prior_weight * E[D(g(z_o))],

    the first term ``train_decoder``'s (He et al., Sec. 5), the second the WGAN generator loss
    (Arjovsky et al., 2017; Gulrajani et al., 2017, Algorithm 1) on the reconstructions of the
    observed protected data, which are what the attack returns. Before each decoder step the
    critic D takes ``critic_steps`` steps on ``critic_loss`` (eq. 3), with ``realistic`` images
    (the attacker's own) as real and g(z_o) of fresh observations as fake, matched row by row.

    The pairs are visited in ``train_decoder``'s order (the same shuffle, optimiser and schedule);
    every other draw (the critic's batches, the penalty's eps) comes from ``generator``, and the
    critic is initialised from torch's global state after the decoder was. With ``prior_weight``
    0 the decoder therefore ends bit for bit where ``train_decoder`` leaves it."""
    from privbench.training import adam, resident, shuffled_epochs
    device = ctx.device
    decoder.to(device).train()
    protected, images, realistic, observed = resident(device, protected, images, realistic, observed)
    critic = Critic(tuple(realistic.shape[1:])).to(device).train()
    optimizer, critic_opt = adam(decoder.parameters(), lr), critic_optimizer(critic, critic_lr)
    schedule = (torch.optim.lr_scheduler.StepLR(optimizer, halve_lr_every, gamma=0.5)
                if halve_lr_every > 0 else None)
    for epoch in shuffled_epochs(ctx, len(protected), epochs=epochs, batch_size=batch_size,
                                 description=description):
        for index in epoch:
            for _ in range(critic_steps):
                real = sample_rows(realistic, batch_size, generator)
                with torch.no_grad():
                    fake = decoder(sample_rows(observed, batch_size, generator))
                critic_step(critic, critic_opt, real, fake, gp_weight, generator)
            z, x = protected[index], images[index]
            decoded = decoder(sample_rows(observed, batch_size, generator))
            optimizer.zero_grad(set_to_none=True)
            critic.requires_grad_(False)  # the decoder's step moves the decoder only
            loss = nn.functional.mse_loss(decoder(z), x) - prior_weight * critic(decoded).mean()
            loss.backward()
            critic.requires_grad_(True)
            optimizer.step()
        if schedule is not None:
            schedule.step()
    return decoder.eval()
