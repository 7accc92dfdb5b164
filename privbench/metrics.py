"""Metric specs: the one place a metric is declared, and the image metrics they compute from.

Every number privbench stores has a registered ``MetricSpec``: its dotted name (DESIGN.md's
vocabulary), unit, which direction is better *for the data owner* (the leaderboard ranks defenses),
its meaning and how it is computed. The store, ``privbench results``, the leaderboard and the
README's metric table all read ``METRICS``; a plugin adds its own ``attack.*`` diagnostics or
``defense.*`` facts with ``register_metric`` (``privbench.api``) from its ``register_metrics`` hook.
A metric an attack or defense reports without a spec fails its cell with a clear reason.

PSNR and SSIM come from torchmetrics on images in [0, 1] (peak 1), computed per image and averaged,
as He et al. report them. SSIM uses Wang et al.'s 11 x 11 Gaussian window (sigma 1.5), shrunk to
the largest odd size that fits images smaller than 11 pixels (7 x 7 on 8 x 8 digits).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from privbench.errors import PrivbenchError

if TYPE_CHECKING:
    import torch

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; cap it so means stay finite
KINDS = ("utility", "attack", "privacy", "cost", "defense")


@dataclass(frozen=True)
class MetricSpec:
    """One metric: ``better`` is ``higher``, ``lower`` (for the data owner) or ``none`` (a fact)."""

    name: str
    unit: str
    better: str
    meaning: str
    computed: str
    lower: float | None = None  # the value range a stored value must fall in (None: unbounded)
    upper: float | None = None

    @property
    def kind(self) -> str:
        return self.name.split(".", 1)[0]

    def check(self, value: float) -> str | None:
        """Why ``value`` cannot be stored for this metric (NaN, infinite, out of range), or None."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"{self.name} must be a number, got {type(value).__name__}"
        if not math.isfinite(value):
            return f"{self.name} is {value}, not a finite number"
        tolerance = 1e-6
        if self.lower is not None and value < self.lower - tolerance:
            return f"{self.name} = {value} is below its range [{self.lower}, {self.upper}]"
        if self.upper is not None and value > self.upper + tolerance:
            return f"{self.name} = {value} is above its range [{self.lower}, {self.upper}]"
        return None


METRICS: dict[str, MetricSpec] = {}
BUILTIN: set[str] = set()  # the names privbench itself declares (the README's table)


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Declare a metric. The same spec twice is fine; another spec under a taken name is an error."""
    if spec.kind not in KINDS:
        raise PrivbenchError(f"metric '{spec.name}': a name starts with one of {', '.join(KINDS)}")
    if spec.better not in ("higher", "lower", "none"):
        raise PrivbenchError(f"metric '{spec.name}': better must be higher, lower or none")
    existing = METRICS.get(spec.name)
    if existing is not None and existing != spec:
        raise PrivbenchError(f"metric '{spec.name}' is declared twice with different specs")
    METRICS[spec.name] = spec
    return spec


def unit(name: str) -> str:
    """The unit of a registered metric, '' for an unknown name."""
    spec = METRICS.get(name)
    return spec.unit if spec else ""


def check_values(metrics: dict[str, float], owner: str) -> dict[str, float]:
    """The metrics as floats, or a one-line error naming the first unregistered or bad value."""
    checked = {}
    for name, value in metrics.items():
        if name not in METRICS:
            raise PrivbenchError(f"{owner} reported '{name}', which is no registered metric; "
                                 "declare it with privbench.api.register_metric")
        problem = METRICS[name].check(value)
        if problem:
            raise PrivbenchError(f"{owner}: {problem}")
        checked[name] = float(value)
    return checked


def markdown_table() -> str:
    """The README's table of privbench's own metrics, generated from their specs (a test keeps the
    README in step; a plugin's metrics are its own package's to document)."""
    rows = ["| metric | unit | better | meaning | how it is computed |", "| --- | --- | --- | --- | --- |"]
    builtin = [METRICS[name] for name in BUILTIN]
    for spec in sorted(builtin, key=lambda s: (KINDS.index(s.kind), s.name)):
        rows.append(f"| `{spec.name}` | {spec.unit} | {spec.better} | {spec.meaning} | {spec.computed} |")
    return "\n".join(rows)


def _builtin(name, unit, better, meaning, computed, lower=None, upper=None) -> None:
    register_metric(MetricSpec(name, unit, better, meaning, computed, lower, upper))
    BUILTIN.add(name)


_builtin("utility.accuracy", "fraction", "higher", "the service's target-task accuracy on protected "
         "test images", "server(encoder(test)) against the test labels", 0, 1)
_builtin("utility.baseline_accuracy", "fraction", "none", "the unprotected target model's accuracy",
         "target_model(test) against the test labels", 0, 1)
_builtin("utility.drop", "fraction", "lower", "accuracy lost to the protection",
         "utility.baseline_accuracy - utility.accuracy", -1, 1)
_builtin("attack.psnr", "dB", "lower", "peak signal-to-noise ratio of the reconstructions",
         f"per image against the original (peak 1, capped at {PSNR_CAP_DB:g} dB), mean over the "
         "attacked test images", 0, PSNR_CAP_DB)
_builtin("attack.ssim", "[-1, 1]", "lower", "structural similarity of the reconstructions",
         "torchmetrics SSIM per image (Gaussian window, 11 x 11 or the largest odd size that fits), "
         "mean", -1, 1)
_builtin("attack.ssim_skimage", "[-1, 1]", "lower", "structural similarity of the reconstructions as "
         "He et al. compute it (scikit-image), to compare with the paper's SSIM",
         "per image, scikit-image's structural_similarity: 7 x 7 uniform window (the largest odd size "
         "that fits a smaller image), K1 0.01, K2 0.03, sample covariance, data_range = max - min of "
         "the reconstruction, as He et al.'s evaluation scripts pass it (1 if it is flat), mean over "
         "the window-valid interior and the channels; mean over the attacked test images", -1, 1)
_builtin("attack.dcor", "[0, 1]", "lower", "distance correlation between the attacked test images and "
         "their reconstructions (NoPeek's leakage measure, applied to what the attack recovers)",
         "Szekely's sample dCor (Euclidean distances) of the flattened originals and reconstructions, "
         "mean over consecutive near-equal blocks of at most 256 images (the statistic depends on the "
         "sample size; 256 is Titcombe et al.'s evaluation batch); not reported below 10 images", 0, 1)
_builtin("attack.rv_dcor", "[0, 1]", "lower", "the squared-distance \"dCor\" of NoPeek implementations "
         "(InferenceBenchmark, NoPeekNN, Titcombe et al.) between the attacked test images and their "
         "reconstructions: sqrt(RV coefficient), a linear-dependence measure, to compare with their "
         "published numbers", "as attack.dcor with squared Euclidean distances, which double-centre "
         "to -2 x the centred Gram matrix: sqrt(tr(KxKz) / sqrt(tr(Kx^2) tr(Kz^2)))", 0, 1)
_builtin("attack.psnr_chance", "dB", "none", "PSNR of the uninformed guess",
         "the attacker's mean aux image against each original", 0, PSNR_CAP_DB)
_builtin("attack.ssim_chance", "[-1, 1]", "none", "SSIM of the uninformed guess",
         "the attacker's mean aux image against each original", -1, 1)
_builtin("attack.accuracy", "fraction", "lower", "the attack's accuracy on the private task",
         "predicted labels of the observed test images against their private-task labels", 0, 1)
_builtin("attack.chance", "fraction", "none", "accuracy of always answering the attacker's "
         "majority aux class", "share of that class among the attacked test images", 0, 1)
_builtin("attack.p_value", "p", "higher", "evidence that the attack beats chance (inference) or "
         "tells members from non-members (class-membership)", "one-sided binomial test against "
         "attack.chance; Welch t-test of the per-class statistic, members > non-members", 0, 1)
_builtin("attack.target_accuracy", "fraction", "none", "the attack's accuracy on the service's "
         "target task, when it differs from the private task", "as attack.accuracy, target labels", 0, 1)
_builtin("attack.visual_privacy", "fraction", "higher", "Disguised-Nets' visual privacy",
         "1 - the examiner's accuracy on the target task of the protected images", 0, 1)
_builtin("attack.statistic_in", "", "none", "mean per-class statistic of the classes in the owner's "
         "training data (class-membership: the Fano factor)", "mean over member classes")
_builtin("attack.statistic_out", "", "none", "mean per-class statistic of the probe classes out of "
         "the owner's training data (held out, or from another dataset)",
         "mean over the out-of-training classes")
_builtin("attack.queries", "images", "none", "images the attack had encoded through the query "
         "oracle", "counted by the harness's oracle", 0, None)
_builtin("attack.pairs", "pairs", "none", "known (x, encoder(x)) pairs the attack used",
         "reported by the attack", 0, None)
_builtin("attack.shadow_accuracy", "fraction", "none", "the shadow encoder's accuracy through the "
         "frozen server on its own training images", "reported by the shadow attack", 0, 1)
_builtin("attack.clone_accuracy", "fraction", "none", "the service's accuracy through the client "
         "copies the attack stole (UnSplit's model stealing)", "per stolen client, the real server on "
         "its outputs for the test images against their target labels, mean over the clients; only "
         "where the defense gives the attacker the server", 0, 1)
_builtin("privacy.score", "[0, 1]", "higher", "1 = the attack learned nothing beyond chance, 0 = "
         "it fully succeeded", "by the harness from the attack's output kind: reconstructions "
         "clip((1 - ssim) / (1 - ssim_chance), 0, 1); labels clip((1 - accuracy) / (1 - chance), 0, 1);"
         " class statistics clip(1 + log10(p) / 3, 0, 1)", 0, 1)
_builtin("cost.fit_s", "s", "lower", "wall time of the defense's fit", "timed by the harness", 0, None)
_builtin("cost.encode_ms_per_image", "ms", "lower", "the encoder's time per test image",
         "timed by the harness over the test split", 0, None)
_builtin("cost.attack_s", "s", "none", "wall time of the attack", "timed by the harness", 0, None)
_builtin("defense.entropy", "bits", "none", "mean pixel entropy of the protected test images (DAPter)",
         "Shannon entropy of each image's 256-level histogram, mean", 0, None)
_builtin("defense.entropy_original", "bits", "none", "mean pixel entropy of the original test images",
         "as defense.entropy on the clean images", 0, None)
_builtin("defense.gradcam_iou", "[0, 1]", "higher", "whether the service still looks where it looked: "
         "overlap of its Grad-CAM saliency on protected and on original test images (DAPter)",
         "per test image, IoU of the top 20% pixels of the service model's Grad-CAM map (last "
         "convolution, true target class) on the protected vs the original image, mean", 0, 1)
_builtin("defense.feature_size", "values", "none", "values per image the client sends (split models)",
         "the encoder's output size", 0, None)
_builtin("defense.center_distance", "", "none", "mean distance of a test feature to its class mean "
         "(privacy fine-tuning)", "Euclidean, clean client features", 0, None)
_builtin("defense.laplace_scale", "", "none", "Laplace scale of a full pixelation cell",
         "m / (b^2 epsilon)", 0, None)


# -- the image metrics --------------------------------------------------------------------------------

def ssim_kernel(height: int, width: int) -> int:
    side = min(11, height, width)
    return side if side % 2 == 1 else side - 1


def psnr_per_image(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image (peak 1), capped at PSNR_CAP_DB."""
    from torchmetrics.functional.image import peak_signal_noise_ratio
    values = peak_signal_noise_ratio(reconstructed.clamp(0, 1), original, data_range=1.0,
                                     reduction="none", dim=(1, 2, 3))
    return values.clamp(max=PSNR_CAP_DB)


def ssim_per_image(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """SSIM of each image against its original (1 = identical)."""
    from torchmetrics.functional.image import structural_similarity_index_measure
    kernel = ssim_kernel(*original.shape[-2:])
    return structural_similarity_index_measure(reconstructed.clamp(0, 1), original, data_range=1.0,
                                               kernel_size=kernel, reduction="none")


def clip01(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def image_grid_png(rows: list[torch.Tensor], columns: int = 10, scale: int = 4) -> bytes:
    """A PNG with one row of ``columns`` images per tensor in ``rows`` (e.g. originals, recon)."""
    import torch
    from PIL import Image
    from torchvision.utils import make_grid
    tiles = torch.cat([row[:columns].clamp(0, 1).cpu() for row in rows])
    if tiles.shape[1] not in (1, 3):  # non-image protected data: show the first channel
        tiles = tiles[:, :1]
    grid = make_grid(tiles, nrow=columns, padding=1, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    image = Image.fromarray(array)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


START_MARK = "<!-- metrics table: generated from the specs -->"
END_MARK = "<!-- end of metrics table -->"


def update_readme(path: str) -> None:
    """Replace the metric table between the README's two marks with the generated one."""
    from pathlib import Path
    text = Path(path).read_text()
    before, rest = text.split(START_MARK, 1)
    _, after = rest.split(END_MARK, 1)
    Path(path).write_text(f"{before}{START_MARK}\n{markdown_table()}\n{END_MARK}{after}")


if __name__ == "__main__":  # python -m privbench.metrics [README.md]: print or update the table
    import sys
    if len(sys.argv) > 1:
        update_readme(sys.argv[1])
    else:
        print(markdown_table())
