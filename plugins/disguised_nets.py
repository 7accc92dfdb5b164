"""Defense ``disguised-nets``: block-wise secret permutation + randomized multidimensional transform.

Sharma & Chen, "Disguised-Nets: Image Disguising for Privacy-preserving Outsourced Deep Learning"
(Sec. 3.2-3.3; authors' code github.com/datascale/DisguisedNets). The data owner disguises every image
with one secret key K before sending it to the cloud, and the cloud trains and runs an ordinary
classifier on disguised images only. Per image X (one channel at a time, the same key for every
channel, as the authors' colour code does):

1. zero-pad X at the bottom and right to the next multiple of the block side m (when its height or
   width is not one; the padded plain image has ``padded_shape``) and cut it into t non-overlapping
   m x m blocks X_i, numbered row by row;
2. noise: Delta ~ U[0, N] drawn afresh for every image and pixel (N in 0-255 pixel units, N / 255 on
   images in [0, 1]); ``noise_placement=before`` follows the paper, X'_i = (X_i + Delta_i) R_i,
   ``after`` follows the 2019 code, which adds Delta to the output after steps 3-4;
3. RMT (Sec. 3.3, G(X) = X R): right-multiply block i by its own secret matrix R_i of m rows and d
   columns (mixes the columns of the block; the m x d result keeps the block's rows);
4. permutation (Sec. 3.2, T_pi): output block position p holds the transformed block of source
   position pi(p), one secret permutation pi of the t positions shared by all images.

The disguised image has ``output_shape`` = (C, padded height, blocks per row * d): the padded size
when d = m, narrower when a projection reduces the dimension.

Variants of Sec. 3.2-3.3 (``matrix``, ``out_dim`` = d):

- ``orthogonal`` (d = m): Haar-random R_i (QR of a Gaussian matrix with the signs of R's diagonal
  folded in), the paper's choice; it keeps every block's column distances and norms.
- ``projection`` / ``gaussian-projection``: random R_i with U[0, 1) entries (the 2019 code) or N(0, 1)
  entries (the paper's Sec. 4.1 wording), redrawn until their condition number (largest over smallest
  singular value) is below MAX_CONDITION. With d = m they are square and invertible; with d < m each
  block keeps only m*d < m^2 values: the dimension-reducing random projection of Liu, Kargupta & Ryan
  (TKDE 2006), the paper's reference [10], which preserves distances only approximately and cannot be
  undone even with the key.
- ``none``: R_i = I, the block-wise permutation alone (Sec. 3.2's "block-wise jigsaw"): every block's
  pixels arrive unchanged, only moved (plus the noise and padding, as configured).

Parameters and the paper's symbols: ``block`` = m (block side, r x s = m x m blocks), ``matrix`` = how
R_i is drawn, ``out_dim`` = d (columns of each R_i, 1 <= d <= m, projections only; 0 means d = m),
``permute`` = whether T_pi is applied, ``noise`` = N, ``noise_placement`` = where Delta enters.

Defaults: the paper's Table 1 uses 7 x 7 blocks + permutation, N = 100 on 28 x 28 MNIST and 2 x 2
blocks, N = 25 on CIFAR-10 (N = 50 on LFW). 7 x 7 blocks do not tile 8 x 8 digits or 25 x 25 faces,
so the default is the small-image setting: m = 2 (CIFAR-10 / LFW), orthogonal R_i, N = 25 (CIFAR-10),
noise before the multiplication (the paper's formula), with the permutation on (the MNIST setting:
digits are sparse like MNIST, where the paper finds permutation needed for visual privacy).

Key: R_i and pi are drawn through their own ``torch.Generator`` seeded from the defender's random
stream (same cell seed, same key; another seed, another key); the noise is drawn from the global
random state, which the harness seeds per party.

Server: a fresh classifier of the scenario's architecture for ``output_shape`` inputs, trained for
``target_epochs`` epochs on disguised owner images with the noise redrawn every batch.

Threat model. The paper assumes ciphertext-only attacks (the adversary sees disguised images and the
model, never a plain/disguised pair, and does not know K). privbench states the access an attacker may
have so every cell is explicit: ``query`` (a chosen-plaintext attacker who can get images of its
choice disguised: black-box), ``server`` (the cloud runs the model), ``image-like`` (the disguised
image has the image's channels; its height and width are rounded up to a multiple of m when padded,
and its width shrinks by d / m under a dimension-reducing projection: attacks that read it as an
image resize it), ``architecture`` (the transform family is public, Kerckhoffs; the attacker's view
builds the same family with a key drawn from the attacker's own stream), ``known-pairs`` (plain /
disguised pairs of images the owner sent) and ``white-box``: the encoder holds the key as buffers and
is differentiable, so white-box cells model a *leaked key*, the worst case, not the paper's
assumption. No other attack ever sees the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from privbench.api import (
    Defense,
    MetricSpec,
    PrivbenchError,
    Protection,
    apply,
    hookimpl,
    param,
    ssim_per_image,
    train_server_on_encoded,
)

PIXEL_LEVELS = 255.0  # N is in 0-255 pixel units; images here are in [0, 1]
MAX_CONDITION = 1e3  # projection matrices above this condition number are redrawn
PROJECTIONS = ("projection", "gaussian-projection")
MATRIX_KINDS = ("orthogonal", *PROJECTIONS, "none")


def haar_orthogonal(count: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` Haar-random orthogonal side x side matrices: Q of A = QR, A Gaussian, times sign(diag R).

    The sign correction makes the QR factor unique, so Q is Haar-distributed (Mezzadri 2007)."""
    gaussian = torch.randn(count, side, side, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def random_projection(count: int, side: int, generator: torch.Generator, entries: str,
                      columns: int | None = None) -> torch.Tensor:
    """``count`` side x ``columns`` random matrices of full column rank with U[0, 1) (the 2019 code)
    or N(0, 1) entries; square when ``columns`` is None, fewer columns reduce the dimension (Liu,
    Kargupta & Ryan's random projection, Sec. 3.3).

    Matrices whose condition number exceeds MAX_CONDITION are redrawn until none does."""
    shape = (side, columns or side)

    def draw(n: int) -> torch.Tensor:
        if entries == "uniform":
            return torch.rand(n, *shape, generator=generator, dtype=torch.float64)
        return torch.randn(n, *shape, generator=generator, dtype=torch.float64)

    matrices = draw(count)
    bad = torch.linalg.cond(matrices) > MAX_CONDITION
    while bad.any():
        matrices[bad] = draw(int(bad.sum()))
        bad = torch.linalg.cond(matrices) > MAX_CONDITION
    return matrices


def secret_key(blocks: int, side: int, matrix: str, permute: bool, seed: int,
               out_dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The key K: (R_1..R_t as a t x m x d float64 tensor, d = ``out_dim`` or m, and the permutation
    pi of the t positions). ``matrix=none`` gives R_i = I (Sec. 3.2's permutation alone)."""
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(blocks, generator=generator) if permute else torch.arange(blocks)
    if matrix == "orthogonal":
        matrices = haar_orthogonal(blocks, side, generator)
    elif matrix == "projection":
        matrices = random_projection(blocks, side, generator, "uniform", out_dim)
    elif matrix == "gaussian-projection":
        matrices = random_projection(blocks, side, generator, "gaussian", out_dim)
    elif matrix == "none":
        matrices = torch.eye(side, dtype=torch.float64).expand(blocks, side, side).clone()
    else:
        raise ValueError(f"unknown matrix kind {matrix!r}; accepted: {', '.join(MATRIX_KINDS)}")
    return matrices, permutation


def block_pixel_index(grid: tuple[int, int], side: int, width: int | None = None) -> torch.Tensor:
    """t x m x w (w = ``width`` or m): the flat pixel index of row r, column c of block i in an image
    tiled by a ``grid`` of m x w blocks, numbered row by row."""
    rows, cols = grid
    width = width or side
    index = torch.arange(rows * side * cols * width).reshape(rows, side, cols, width)
    return index.permute(0, 2, 1, 3).reshape(rows * cols, side, width)


def row_mixing(matrices: torch.Tensor, rows_per_block: int) -> torch.Tensor:
    """(t*m) x d x m: M_i^T once per row of its block, so that bmm computes every row of X_i M_i
    (M_i = R_i, m x d, forward; its pseudo-inverse, d x m, backward) at once."""
    return matrices.transpose(1, 2).repeat_interleave(rows_per_block, dim=0).contiguous()


class DisguiseEncoder(nn.Module):
    """X -> T_pi((X + Delta) R) (or T_pi(X R) + Delta): a keyed linear map plus uniform noise.

    Public attributes for attacks and tests: ``block`` (m), ``out_dim`` (d, columns each block keeps),
    ``image_shape``, ``padded_shape`` (the zero-padded plain image), ``output_shape`` (the disguised
    image, (C, padded height, blocks per row * d)), ``grid`` (blocks per column and per row),
    ``matrices`` (t x m x d, R_i for *source* block i, blocks numbered row by row), ``permutation``
    (output position p holds source block ``permutation[p]``), ``noise_level`` (N / 255) and
    ``noise_placement``.
    """

    def __init__(self, image_shape: tuple[int, int, int], block: int = 2, matrix: str = "orthogonal",
                 permute: bool = True, noise: float = 25.0, noise_placement: str = "before",
                 key_seed: int = 0, out_dim: int | None = None) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.block = block
        self.out_dim = out_dim or block
        self.image_shape = (channels, height, width)
        self.grid = (-(-height // block), -(-width // block))
        self.padded_shape = (channels, self.grid[0] * block, self.grid[1] * block)
        self.output_shape = (channels, self.grid[0] * block, self.grid[1] * self.out_dim)
        self.noise_level = noise / PIXEL_LEVELS
        self.noise_placement = noise_placement
        if self.out_dim != block and matrix not in PROJECTIONS:
            raise ValueError(f"out_dim={self.out_dim} needs a projection matrix, not {matrix!r}")
        matrices, permutation = secret_key(self.grid[0] * self.grid[1], block, matrix, permute,
                                           key_seed, self.out_dim)
        self.register_buffer("matrices", matrices.float())
        self.register_buffer("permutation", permutation)
        self._register_index_maps(matrices, permutation)

    def _register_index_maps(self, matrices: torch.Tensor, permutation: torch.Tensor) -> None:
        """Gather / place indices and per-row matrices of the forward map and of its (pseudo-)inverse."""
        plain = block_pixel_index(self.grid, self.block)
        disguised = block_pixel_index(self.grid, self.block, self.out_dim)
        source, target = plain[permutation].flatten(), disguised.flatten()
        keyed = matrices[permutation]
        self.register_buffer("forward_gather", source)
        self.register_buffer("forward_place", torch.argsort(target))
        self.register_buffer("forward_mixing", row_mixing(keyed, self.block).float())
        self.register_buffer("inverse_gather", target)
        self.register_buffer("inverse_place", torch.argsort(source))
        self.register_buffer("inverse_mixing", row_mixing(torch.linalg.pinv(keyed), self.block).float())

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad at the bottom and right up to ``padded_shape``."""
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"disguised-nets encoder built for images {self.image_shape}, "
                             f"got {tuple(x.shape[1:])}")
        extra_h = self.padded_shape[1] - self.image_shape[1]
        extra_w = self.padded_shape[2] - self.image_shape[2]
        return F.pad(x, (0, extra_w, 0, extra_h)) if extra_h or extra_w else x

    def _blockwise(self, images: torch.Tensor, gather: torch.Tensor, mixing: torch.Tensor,
                   place: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """One bmm over all blocks: gather the blocks' rows, multiply each by its matrix, place them
        into images of ``shape``.

        Pixels become rows of a (pixels x images) matrix, so every channel of every image goes
        through the same gather, the same t*m small products and the same scatter."""
        batch, channels = images.shape[:2]
        columns = images.reshape(batch * channels, -1).T
        rows = torch.index_select(columns, 0, gather).reshape(len(mixing), -1, batch * channels)
        mixed = torch.bmm(mixing.to(images.dtype), rows).reshape(-1, batch * channels)
        return torch.index_select(mixed, 0, place).T.reshape(batch, *shape)

    def keyed_map(self, x: torch.Tensor) -> torch.Tensor:
        """The noise-free transform T(X) = T_pi(X R): pad, multiply block i by R_i, permute."""
        return self._blockwise(self.pad(x), self.forward_gather, self.forward_mixing,
                               self.forward_place, self.output_shape)

    def invert(self, z: torch.Tensor) -> torch.Tensor:
        """T^-1 with the key: un-permute, multiply by R_i^+ (the pseudo-inverse), crop the padding.

        With square R_i (d = m) R_i^+ = R_i^-1 and this is exact: it recovers X + Delta for noise
        before the multiplication, X + T^-1(Delta) for noise after. With d < m it is no longer
        exact: X_i R_i R_i^+ is the least-squares (minimum-norm) estimate, the projection of each
        block row onto the d-dimensional row space of R_i^T; what R_i dropped stays lost."""
        plain = self._blockwise(z, self.inverse_gather, self.inverse_mixing, self.inverse_place,
                                self.padded_shape)
        return plain[:, :, : self.image_shape[1], : self.image_shape[2]]

    def uniform_noise(self, like: torch.Tensor) -> torch.Tensor:
        """Delta ~ U[0, N/255], a fresh draw per image and pixel (global RNG, seeded per stage)."""
        return torch.rand_like(like) * self.noise_level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = self.pad(x)
        if self.noise_level > 0 and self.noise_placement == "before":
            padded = padded + self.uniform_noise(padded)  # (X + Delta) R, the paper's formula
        z = self._blockwise(padded, self.forward_gather, self.forward_mixing, self.forward_place,
                            self.output_shape)
        if self.noise_level > 0 and self.noise_placement == "after":
            z = z + self.uniform_noise(z)  # T_pi(X R) + Delta, the 2019 code
        return z


@dataclass
class DisguisedNets(Defense):
    """Block-wise secret RMT + permutation + uniform noise; the server trains on disguised data."""

    name: ClassVar[str] = "disguised-nets"
    summary: ClassVar[str] = ("block-wise secret permutation + random orthogonal/projection "
                              "transform (or permutation alone) + uniform noise, (X+Delta)R "
                              "(Sharma & Chen)")
    needs_target_model: ClassVar[bool] = False  # its server trains on disguised data from scratch
    # Sec. 2.1: ciphertext-only, no key, no pairs
    claims: ClassVar[frozenset[str]] = frozenset({"query-free", "black-box"})

    block: int = param(2, "m: side of the square blocks, each with its own secret matrix R_i "
                          "(paper: 7 on MNIST, 2 on CIFAR-10 / LFW)", minimum=1)
    matrix: str = param("orthogonal", "how R_i is drawn: Haar orthogonal (paper), projection "
                                      "(U[0,1) entries, 2019 code), gaussian-projection (N(0,1)) "
                                      "or none (R_i = I: block permutation alone, Sec. 3.2)",
                        choices=MATRIX_KINDS)
    out_dim: int = param(0, "d: columns of each projection R_i (m x d), so a block keeps m*d < m^2 "
                            "values (Liu et al.'s random projection); 1 to block, projection "
                            "matrices only; 0: d = m, square", minimum=0)
    permute: bool = param(True, "shuffle the block positions with a secret permutation pi")
    noise: float = param(25.0, "N: uniform noise Delta ~ U[0, N] in 0-255 pixel units "
                               "(paper: 100 MNIST, 25 CIFAR-10, 50 LFW)", minimum=0.0)
    noise_placement: str = param("before", "before: (X+Delta)R (paper); after: noise added after "
                                           "multiplication and permutation (2019 code)",
                                 choices=("before", "after"))

    def __post_init__(self) -> None:
        """Refuse an ``out_dim`` the matrix kind or block side cannot have, before anything runs."""
        if self.out_dim in (0, self.block):
            return
        if self.matrix not in PROJECTIONS:
            raise PrivbenchError(f"defense 'disguised-nets': out_dim={self.out_dim} needs a projection "
                                 f"matrix, not matrix={self.matrix} (square R_i); accepted: out_dim=0 "
                                 f"or {self.block}, or matrix={' / '.join(PROJECTIONS)}")
        if self.out_dim > self.block:
            raise PrivbenchError(f"defense 'disguised-nets': out_dim={self.out_dim} is larger than "
                                 f"block={self.block}; accepted: 0 (d = m) or 1 to {self.block}")

    def check_data(self, facts) -> str | None:
        side = min(facts.image_shape[1:])
        if self.block > side:
            return (f"defense 'disguised-nets': block={self.block} is larger than the images "
                    f"({facts.image_shape[1]} x {facts.image_shape[2]}); accepted: 1 to {side}")
        return None

    def build(self, facts) -> Protection:
        """A disguise with a fresh key drawn from the global random state (seeded by the harness
        from the defender's stream when it fits, from the attacker's for ``architecture`` access),
        and an untrained server for the disguised images' ``output_shape``."""
        key_seed = int(torch.randint(0, 2**62, (1,)))
        encoder = DisguiseEncoder(tuple(facts.image_shape), self.block, self.matrix, self.permute,
                                  self.noise, self.noise_placement, key_seed, self.out_dim)
        return Protection(encoder=encoder,
                          server=facts.service_classifier(encoder.output_shape))

    def fit(self, owner) -> Protection:
        encoder = self.build(owner.facts).encoder.to(owner.device)
        server = train_server_on_encoded(owner, encoder, input_shape=encoder.output_shape,
                                         description=f"disguised-nets: server on disguised data "
                                                     f"({self.block}x{self.block}, {self.matrix}, "
                                                     f"d={encoder.out_dim}, N={self.noise:g})")
        return Protection(encoder=encoder.cpu(), server=server)

    def evaluate(self, protection, data) -> dict[str, float]:
        """``defense.keyed_ssim``: how much of the test images the key holder recovers, SSIM of
        T^-1(T(x)) against x. With noise before the matrices even the exact key gives back only
        X + Delta (``DisguiseEncoder.invert``). It is not a ceiling for a key-recovery attack: a
        least-squares map fitted on known pairs also learns to average the noise out (measured on
        real MNIST, 7 x 7 blocks, N = 100: keyed 0.32, known-plaintext at k = 100 0.66)."""
        disguised = apply(protection.encoder, data.images, data)
        with torch.no_grad():
            recovered = protection.encoder.cpu().invert(disguised).clamp(0, 1)
        return {"defense.keyed_ssim": float(ssim_per_image(recovered, data.images).mean())}


@hookimpl
def register_defenses(register):
    register(DisguisedNets)


@hookimpl
def register_metrics(register):
    register(MetricSpec("defense.keyed_ssim", "[-1, 1]", "none", "SSIM of the test images the key "
                        "holder recovers from the disguised ones (X + Delta with noise before the "
                        "matrices)",
                        "torchmetrics SSIM of clip(T^-1(T(x)), 0, 1) against x, mean over the test "
                        "images (as attack.ssim)", -1, 1))
