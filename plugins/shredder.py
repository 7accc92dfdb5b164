"""Defense ``shredder``: learned noise on the activations of a frozen split model (Mireshghallah,
Taram, Ramrakhya, Jalali, Tullsen, Esmaeilzadeh, "Shredder: Learning Noise Distributions to Protect
Inference Privacy", ASPLOS 2020), in the self-supervised version the authors released for LeNet-5
on MNIST (mireshghallah/shredder-v2-self-supervised @ 36c81eb, called SH2 below).

The service's trained classifier f = f2 . f1 is cut at ``layer`` and stays frozen, client and server
alike. At the cut Shredder puts a multiplicative weight w and an additive noise tensor n, both shaped
like one activation:

    z = f1(x) (*) w + n,    n ~ Laplace(0, b) at init,  w ~ Xavier-normal at init         (SH2 fwd)

and trains only (n, w), with Adam (lr 1e-3), on each owner batch (x, y) paired with a random batch
(x', y') of the same size:

    L = NLL(y, f2(z))  +  lambda * ( sum_{i: y_i = y'_i} ||z_i - z'_i||_1
                                    - sum_{i: y_i != y'_i} ||z_i - z'_i||_1 )              (SH2 loss)

(authors' train script: ``criterion(output, labels) + 0.01 * (pos - neg)``, sums over the batch,
L1 over the activation). Same-label pairs are pulled together and different-label pairs pushed apart,
so the contrastive term only acts on w (n cancels in z - z'); the cross-entropy alone moves n. The
training starts from a noise tens of times larger than the features and only restores the accuracy:
nothing shrinks n towards 0 (unlike InferenceBenchmark's port, whose noise is in no optimiser, whose
noise gradient is zeroed before the step and whose sign would shrink it). ``weight_decay`` is an L2
term on (n, w) as Adam's coupled weight decay applies it; the authors' final loop uses 0, their first
optimiser -0.01 (a negative decay that grows the noise): both are accepted.

The collection. Training is repeated ``samples`` times from fresh draws of (n, w), giving
(n_k, w_k), k = 1..K. At inference (the authors' ``mutual_info_std20_self_lenet_nonsen.py``) each
image gets its own draw: a stored k uniformly at random, its n_k as stored, and w redrawn from the
normal fitted to w_k's elements (maximum likelihood: their mean and population std) with the rank
order of w_k kept (the i-th smallest element of w_k gets the i-th smallest new draw). Every call of
the encoder draws afresh, the owner's images and an attacker's queries alike.

Settings for privbench's models (the paper has none for 8 x 8 digits):

- ``layer`` = ``auto`` cuts where SH2 does, after the network's last hidden representation before its
  two-layer classifier head: LeNet-5's c5 is a 5 x 5 convolution on a 5 x 5 map, i.e. a 120-unit
  fully connected layer followed by f6 (84) and f7, so for ``lenet5`` it is ``relu5`` (SH2's cut) and
  for privbench's ``lenet`` it is ``relu3``: fc1 has the same 120 units and is followed by the same
  84-unit fc2 and the output layer. ``he-cifar``: ``fc1act`` (its last hidden layer); ``resnet18``:
  ``avgpool`` (the 512-d pooled feature before fc).
- ``noise_init`` is the Laplace scale b *relative to the features*: b = noise_init x RMS(f1(x)) over
  the owner's images. SH2's b = 20 is absolute; its SNR of 1.6e-4 to 4e-4 (their CSV; SNR =
  mean(f1(x)^2) / var(f1(x) - z), with var(n) = 2 b^2 = 800 for b = 20) puts the features' RMS near
  0.3-0.6, so 20 is about 40 times the RMS. privbench's lenet has a similar feature scale (RMS 0.48
  at relu3 on digits, measured), but the authors train 28-40 epochs of 235 batches of 256 MNIST
  images (about 7,000 Adam steps, each moving an element by about lr) and keep a run only once its
  accuracy exceeds 0.95, while privbench's default must fit in seconds on ~900 owner digits. The
  default is 3, the largest that keeps the service within 3 points of the unprotected model in the
  default matrix (digits, parity, lenet at relu3, 30-epoch target, inverse-network; seeds 0-4,
  measured): noise_init 0.5 / 2 / 3 serve 0.979 / 0.974 / 0.969 (identity 0.984; at 3 the worst of
  the 5 seeds is 2.2 points below identity) at SNR 1.2 / 0.12 / 0.05, and the inverse network
  recovers SSIM 0.662 / 0.599 / 0.591. Beyond 3 the frozen head breaks: 5 served 0.83-0.91 and 20
  0.63-0.66 (single runs). A larger ``lr`` trades the service for SNR: at lr 1e-2 noise_init 40
  reaches SH2's range (SNR 3e-4, SSIM 0.48-0.56) but served 0.89-0.99 without lambda and 0.89-0.90
  at lambda 0.003, varying from run to run, and at small noise_init lr 1e-2 lowers the SNR (0.038 at
  0.5) while the inverse network recovers more (SSIM 0.72). Outside the matrix (a script on the same digits,
  900 owner images, target accuracy 0.97, 2 samples): lr 1e-2 serves 0.90 at noise_init 40 with
  lambda 0.01 (SNR 3e-4) and 0.97 at noise_init 20 with lambda 0 (SNR 1e-3).
- ``lam`` = 0.003 (SH2: 0.01). The term is sign-blind: it widens |w| on the discriminative features
  whatever the sign the frozen head needs, and the served w is a rank-preserving *redraw*, which
  moves the wide tails most. Measured in that script at noise_init 5: lambda 0 / 0.001 / 0.003 / 0.01 /
  0.1 serve 0.965 / 0.965 / 0.96 / 0.90 / 0.50 (per stored sample without redraw: 0.97, 0.97, 0.97,
  0.96, 0.07-0.92); 0.003 is the largest that keeps the service.
- ``batch_size`` = 32 (SH2: 256): 29 steps per epoch on ~900 digits instead of 4. The contrastive
  term is a sum over the batch, so at a fixed lambda it weighs 8 times less per batch than at 256.
- ``samples`` = 3: the authors keep every accepted run of 1000; a few make every call random and keep
  the default matrix cheap. By default each run trains ``epochs`` epochs and is kept.
- The authors' acceptance rule (SH2's training loop: a run is saved as soon as its test accuracy
  exceeds 0.95 from epoch 27 on, else dropped after its last epoch) is ``accept`` = 0.95,
  ``accept_from`` = 27, ``attempts`` = how many runs to try, with one change: a defense may not read
  the test split, so the accuracy is the frozen service's on a held-out tenth of the owner's own
  images (``HELD_OUT``), which the runs then do not train on. Runs stop once ``samples`` are
  accepted; if ``attempts`` runs leave fewer, the best of the rejected ones (held-out accuracy)
  fill the collection. ``accept`` = 0 (default) holds nothing out and keeps every run.

Threat model: Shredder's paper defends against an untrusted cloud that sees z only (it measures the
mutual information between images and z and the accuracy of a *clean* classifier on z); it claims
black-box and query-free protection. It gives the same access facts as ``split`` and ``nopeek``: the
client half and its noise collection run on the user's device, so a white-box cell runs (the attacker
then holds f1, every stored (n_k, w_k) and the fitted normals). The collection is marked as a random
perturbation, as the feature noise of ``noise`` and Cloak's are: an attacker that optimises a
deterministic map leaves it out, so UnSplit's architecture-only clone is f1 alone (a clone of the
collection would hold untrained zeros, and its random draws cannot run under UnSplit's ``vmap``), and
rMLE's default (``through=clean``) inverts the clean f1 against z = f1(x) (*) w + n; ``rmle:through=
perturbed`` optimises through the collection with its stored (n_k, w_k), the stronger white-box
attacker. The features are not image-like.

``defense.snr`` (registered here) is the authors' signal-to-noise ratio,
mean(f1(x)^2) / var(f1(x) - z) over the elements of a batch of up to 1024 test images (their test
batch), with z drawn by the encoder as served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from privbench.api import (
    ARCH_LAYERS,
    MetricSpec,
    PrivbenchError,
    Protection,
    SplitEncoder,
    SplitFeatureDefense,
    apply,
    batches,
    hookimpl,
    layer_problem,
    one_torch_thread,
    param,
    sent_shape,
    split_model,
)

# Where ``layer = auto`` cuts each built-in architecture: the last hidden representation before the
# classifier head, as SH2 cuts LeNet-5 after c5 (see the module docstring).
AUTO_LAYERS = {"lenet": "relu3", "lenet5": "relu5", "he-cifar": "fc1act", "resnet18": "avgpool"}
SNR_IMAGES = 1024  # the authors' test batch, on which their SNR is computed
HELD_OUT = 0.1  # the share of the owner's images the acceptance rule holds out (accept > 0)


# --- the trained noise ---------------------------------------------------------------------------

def laplace(shape: tuple[int, ...], scale: float, generator: torch.Generator) -> torch.Tensor:
    """Laplace(0, b = scale) draws by the inverse CDF of a uniform draw from ``generator``."""
    u = torch.rand(shape, generator=generator).clamp(1e-7, 1 - 1e-7) - 0.5
    return -scale * u.sign() * torch.log1p(-2 * u.abs())


def xavier_std(shape: tuple[int, ...]) -> float:
    """torch's Xavier-normal std, sqrt(2 / (fan_in + fan_out)), for an activation shaped as the
    authors' C x 1 x 1 c5 output (fan_out = C, fan_in = 1): sqrt(2 / 121) for 120 features. A C x H x W
    map counts as C x 1 x 1 too, so the init does not depend on the image size."""
    return math.sqrt(2.0 / (shape[0] + 1))


class NoiseLayer(nn.Module):
    """One trainable (n, w) at the cut: v -> v (*) w + n (SH2 forward)."""

    def __init__(self, shape: tuple[int, ...], noise_scale: float, generator: torch.Generator) -> None:
        super().__init__()
        self.noise = nn.Parameter(laplace(shape, noise_scale, generator))
        self.weight = nn.Parameter(torch.randn(shape, generator=generator) * xavier_std(shape))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v * self.weight + self.noise


def contrastive_term(z: torch.Tensor, z_pair: torch.Tensor, y: torch.Tensor,
                     y_pair: torch.Tensor) -> torch.Tensor:
    """SH2's self-supervised term: sum of L1 distances ||z_i - z'_i||_1 over same-label pairs minus
    the sum over different-label pairs (the authors' ``pos - neg``)."""
    distance = (z_pair - z).abs().flatten(1).sum(1)
    same = (y == y_pair).to(distance.dtype)
    return (distance * same).sum() - (distance * (1 - same)).sum()


def rank_preserving_redraw(weights: torch.Tensor) -> torch.Tensor:
    """For each row w_k of ``weights``: fresh draws from N(mean(w_k), std(w_k)^2) (maximum likelihood
    fit, population std), assigned so that their rank order is w_k's (the authors' inference)."""
    flat = weights.flatten(1)
    loc = flat.mean(1, keepdim=True)
    scale = flat.std(1, unbiased=False, keepdim=True)
    draws = (loc + scale * torch.randn_like(flat)).sort(1).values
    ranks = flat.argsort(1).argsort(1)
    return draws.gather(1, ranks).view_as(weights)


class ShredderCollection(nn.Module):
    """The stored (n_k, w_k), k = 1..K; each image gets a random k, n_k and a rank-preserving redraw
    of w_k, fresh on every call."""

    random_perturbation = True  # left out by attackers that optimise a deterministic map (module doc)

    def __init__(self, samples: int, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("noises", torch.zeros(samples, *shape))
        self.register_buffer("weights", torch.zeros(samples, *shape))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        picked = torch.randint(len(self.noises), (len(v),), device=v.device)
        return v * rank_preserving_redraw(self.weights[picked]) + self.noises[picked]


# --- the defense ---------------------------------------------------------------------------------

def frozen(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


@dataclass
class Shredder(SplitFeatureDefense):
    """Train (n, w) at the cut of the frozen target model with NLL + lambda * SH2's contrastive term;
    serve a random stored sample per image (Mireshghallah et al., Shredder)."""

    name: ClassVar[str] = "shredder"
    summary: ClassVar[str] = ("frozen split model with learned noise at the cut, z = f1(x) * w + n, "
                              "trained with NLL + lambda * a same/different-label contrastive term; "
                              "a random stored (n, w) per image (Mireshghallah et al., Shredder)")
    cost_hint: ClassVar[float] = 1.0

    layer_rules: ClassVar[tuple[str, ...]] = ("auto",)

    layer: str = param("auto", "last layer on the client, or auto: " + ", ".join(
        f"{arch} {layer}" for arch, layer in AUTO_LAYERS.items()) + " (SH2 cuts LeNet-5 after c5)")
    noise_init: float = param(3.0, "Laplace scale b of n at init, in multiples of the RMS of the "
                                    "clean features (SH2: b = 20, about 40x their features)",
                              minimum=0.0)
    lam: float = param(0.003, "lambda: weight of the contrastive term, a sum over the batch (SH2: 0.01)",
                       minimum=0.0)
    samples: int = param(3, "trained (n, w) samples kept in the collection (SH2: every accepted run of "
                            "1000)", minimum=1, maximum=256)
    epochs: int = param(30, "training epochs of each sample (SH2: 28 to 40 on MNIST)", minimum=1)
    lr: float = param(1e-3, "Adam learning rate of n and w (SH2: 1e-3)", minimum=0.0)
    batch_size: int = param(32, "images per batch, paired with a random batch of the same size (SH2: "
                                 "256)", minimum=2)
    weight_decay: float = param(0.0, "L2 decay on n and w as Adam couples it (SH2's final loop: 0; "
                                     "their first optimiser: -0.01, which grows the noise)",
                                minimum=-1.0, maximum=1.0)
    accept: float = param(0.0, "keep a run once the frozen service's accuracy through it on held-out "
                               "owner images exceeds this (SH2: 0.95 on the test split); 0 keeps every "
                               "run and holds nothing out", minimum=0.0, maximum=1.0)
    accept_from: int = param(0, "first epoch whose end the acceptance test runs at (SH2: 27); 0: only "
                                "after the last epoch", minimum=0)
    attempts: int = param(0, "most runs trained to find `samples` accepted ones (SH2: 1000); 0: as many "
                             "as samples", minimum=0, maximum=4096)

    def cut(self, arch: str) -> str:
        return AUTO_LAYERS[arch] if self.layer == "auto" else self.layer

    def check_data(self, facts) -> str | None:
        if self.layer == "auto" and facts.arch not in AUTO_LAYERS:
            return (f"defense 'shredder': layer auto has no cut for architecture '{facts.arch}'; "
                    "give layer= one of its layers")
        if self.cut(facts.arch) not in ARCH_LAYERS.get(facts.arch, ()):
            return layer_problem(self.name, self.cut(facts.arch), facts.arch)
        return None

    def split(self, model: nn.Module, facts) -> tuple[nn.Module, nn.Module, tuple[int, ...]]:
        """(f1, f2, shape of one activation at the cut), both halves frozen."""
        client, server = split_model(model, self.cut(facts.arch), facts.arch, owner=self.name)
        return frozen(client), frozen(server), sent_shape(client, facts.image_shape)

    def build(self, facts) -> Protection:
        client, server, shape = self.split(facts.service_classifier(), facts)
        return Protection(encoder=SplitEncoder(client, ShredderCollection(self.samples, shape)),
                          server=server)

    def fit(self, owner) -> Protection:
        client, server, shape = self.split(owner.target_model(), owner.facts)
        device = owner.device
        client.to(device)
        server.to(device)
        features = apply(client, owner.images, owner).to(device)  # f1 is frozen: computed once
        collection = ShredderCollection(self.samples, shape).to(device)
        generator = torch.Generator().manual_seed(owner.seed)
        scale = self.noise_init * float(features.pow(2).mean().sqrt())
        labels = owner.labels().to(device)
        train, held = self.held_out(len(features), generator)
        train_features, train_labels = features[train], labels[train]
        held_data = (features[held], labels[held]) if self.accept else None
        attempts = max(self.attempts, self.samples) if self.accept else self.samples
        runs: list[tuple[float, NoiseLayer]] = []  # (held-out accuracy, trained layer) per run
        with one_torch_thread(), owner.progress.task(
                f"shredder: {self.samples} noise samples at {self.cut(owner.facts.arch)}"
                + (f", accepted above {self.accept:g} of at most {attempts} runs" if self.accept else ""),
                total=attempts) as advance:
            for _ in range(attempts):
                layer, accuracy = self.trained_sample(NoiseLayer(shape, scale, generator).to(device), server,
                                                      train_features, train_labels, generator, held_data)
                runs.append((accuracy, layer))
                advance()
                if sum(self.passes(accuracy) for accuracy, _ in runs) >= self.samples:
                    break
        for k, layer in enumerate(self.kept(runs)):
            collection.noises[k] = layer.noise.detach()
            collection.weights[k] = layer.weight.detach()
        return Protection(encoder=SplitEncoder(client, collection).eval().cpu(), server=server.cpu())

    def passes(self, accuracy: float) -> bool:
        """Whether a run with this held-out accuracy is accepted (every run without ``accept``)."""
        return not self.accept or accuracy > self.accept

    def kept(self, runs: list[tuple[float, NoiseLayer]]) -> list[NoiseLayer]:
        """The ``samples`` runs the collection stores: without ``accept`` every run in training order;
        else the accepted runs first, then the best held-out accuracy, then the earlier run."""
        if not self.accept:
            return [layer for _, layer in runs]
        order = sorted(range(len(runs)), key=lambda i: (self.passes(runs[i][0]), runs[i][0], -i), reverse=True)
        return [runs[i][1] for i in order[:self.samples]]

    def held_out(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(training indices, held-out indices): every image and none without ``accept``; else a
        random ``HELD_OUT`` share of the owner's images is held out for the acceptance test."""
        if not self.accept:
            return torch.arange(count), torch.arange(0)
        order = torch.randperm(count, generator=generator)
        cut = max(1, round(HELD_OUT * count))
        return order[cut:], order[:cut]

    def trained_sample(self, layer: NoiseLayer, server: nn.Module, features: torch.Tensor,
                       labels: torch.Tensor, generator: torch.Generator,
                       held: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[NoiseLayer, float]:
        """Adam on (n, w) only: NLL(y, f2(v * w + n)) + lambda * (pos - neg) (SH2 loss) + the
        optional L2 decay, for ``epochs`` epochs; each batch paired with a random batch. With
        ``held`` (features, labels), the acceptance test (module docstring) runs after each epoch from
        ``accept_from`` (only the last when 0) and stops the run once it passes. Returns the layer and
        its last held-out accuracy (nan without ``held``)."""
        optimizer = torch.optim.Adam(layer.parameters(), lr=self.lr)
        count = len(features)
        accuracy = float("nan")
        for epoch in range(1, self.epochs + 1):
            for index in batches(count, self.batch_size, True, generator):
                pair = torch.randint(count, (len(index),), generator=generator)
                z, z_pair = layer(features[index]), layer(features[pair])
                loss = nn.functional.cross_entropy(server(z), labels[index])
                if self.lam:
                    loss = loss + self.lam * contrastive_term(z, z_pair, labels[index], labels[pair])
                if self.weight_decay:
                    loss = loss + 0.5 * self.weight_decay * (layer.noise.pow(2).sum()
                                                             + layer.weight.pow(2).sum())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if held is not None and epoch >= (self.accept_from or self.epochs):
                accuracy = held_out_accuracy(layer, server, *held)
                if accuracy > self.accept:
                    break
        return layer, accuracy

    def evaluate(self, protection, data) -> dict[str, float]:
        """``defense.snr``: mean(f1(x)^2) / var(f1(x) - z) on up to 1024 test images (SH2's SNR)."""
        return {"defense.snr": signal_to_noise(protection.encoder, data.images[:SNR_IMAGES].to(data.device))}


@torch.no_grad()
def held_out_accuracy(layer: NoiseLayer, server: nn.Module, features: torch.Tensor,
                      labels: torch.Tensor) -> float:
    """The frozen service's accuracy on held-out owner features through one trained (n, w), as SH2
    tests a run (its own n and w, not a redraw)."""
    return float((server(layer(features)).argmax(1) == labels).float().mean())


@torch.no_grad()
def signal_to_noise(encoder: SplitEncoder, images: torch.Tensor) -> float:
    """SH2's SNR: mean(f1(x)^2) / var(f1(x) - z), over every element of the batch (unbiased var)."""
    encoder.to(images.device).eval()
    clean = encoder.client(images)
    sent = encoder.perturbation(clean)
    noise_variance = float((clean - sent).var())
    if noise_variance <= 0:
        raise PrivbenchError("defense 'shredder': the encoder adds no noise; SNR is undefined")
    return float(clean.pow(2).mean()) / noise_variance


@hookimpl
def register_defenses(register):
    register(Shredder)


@hookimpl
def register_metrics(register):
    register(MetricSpec("defense.snr", "ratio", "lower", "signal-to-noise ratio of the features the "
                        "client sends (Shredder's measure: lower is more noise)",
                        "mean(f1(x)^2) / var(f1(x) - z) over every element of up to 1024 test images' "
                        "clean features f1(x) and sent features z (Mireshghallah et al.'s SH2 code)",
                        0, None))
