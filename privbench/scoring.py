"""The harness's scoring: an attack's output against the ground truth the attack never saw.

``GroundTruth`` holds what only the harness knows about a cell: the clean originals of the attacked
test images, their labels for every task, which classes were held out of the owner's training
data, and the attacker's uninformed guesses (its mean aux image, its majority aux class) against
which ``privacy.score`` is measured. ``score`` maps an ``AttackOutput`` onto registered metrics:

- reconstructions -> ``attack.psnr``, ``attack.ssim``, their uninformed baselines, and
  privacy.score = clip((1 - ssim) / (1 - ssim_chance), 0, 1); ``attack.ssim_skimage`` next to them
  is SSIM computed the way He et al. did (scikit-image's 7 x 7 uniform window), to compare
  reproductions with the paper's numbers like with like; ``attack.dcor`` is the distance
  correlation between originals and reconstructions (NoPeek's measure) and ``attack.rv_dcor`` its
  squared-distance variant, sqrt(RV), that Titcombe et al. publish (``privbench.dependence``);
- predicted labels of the private task (of the target task when the attack predicts only that) ->
  ``attack.accuracy``, ``attack.chance``, ``attack.p_value`` (one-sided binomial test) and
  privacy.score = clip((1 - accuracy) / (1 - chance), 0, 1); predictions of the target task, when
  it differs from the private one, add ``attack.target_accuracy`` and ``attack.visual_privacy``;
- a per-class statistic (higher = member) -> a one-sided Welch t-test of member against held-out
  classes, ``attack.p_value`` and privacy.score = clip(1 + log10(p) / 3, 0, 1).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from privbench.core import Artifact, AttackOutput
from privbench.dependence import blockwise, distance_correlation, rv_distance_correlation
from privbench.errors import PrivbenchError
from privbench.metrics import check_values, clip01, image_grid_png, psnr_per_image, ssim_per_image

PRIVACY_MAPPINGS = {
    "reconstruction": "clip((1 - attack.ssim) / (1 - attack.ssim_chance), 0, 1)",
    "labels": "clip((1 - attack.accuracy) / (1 - attack.chance), 0, 1), on the private task",
    "class-statistic": "clip(1 + log10(attack.p_value) / 3, 0, 1)",
}
OUTPUT_FIELDS = {"reconstruction": "reconstruction", "labels": "predictions",
                 "class-statistic": "class_statistic"}


@dataclass(frozen=True)
class GroundTruth:
    """What the harness scores an attack against (never part of the attacker's view)."""

    originals: torch.Tensor  # the attacked test images, in the order of view.observed
    labels: dict[str, torch.Tensor]  # task -> labels of those images
    target_task: str
    private_task: str
    classes: int  # of the target task
    aux_mean: torch.Tensor  # 1 x C x H x W: the attacker's uninformed reconstruction
    aux_majority: dict[str, int]  # task -> the attacker's majority aux class
    held_out: tuple[int, ...] = ()  # target-task classes left out of the owner's training data


class BadOutput(PrivbenchError):
    """An attack returned something the harness cannot score."""


def score(output: AttackOutput, truth: GroundTruth, attack: str, produces: str,
          observed: torch.Tensor) -> tuple[dict[str, float], list[Artifact]]:
    """The cell's attack metrics (privacy.score included) and the harness's artifacts.

    ``produces`` is the attack's declared output kind; the matching field of ``output`` is scored."""
    if not isinstance(output, AttackOutput):
        raise BadOutput(f"attack '{attack}' returned {type(output).__name__}; run() must return a "
                        "privbench.api.AttackOutput")
    field_name = OUTPUT_FIELDS[produces]
    if getattr(output, field_name) in (None, {}):
        raise BadOutput(f"attack '{attack}' declares produces = '{produces}' but returned no "
                        f"{field_name}")
    metrics: dict[str, float] = {}
    artifacts: list[Artifact] = []
    if produces == "reconstruction":
        reconstructed = _checked_reconstruction(output.reconstruction, truth, attack)
        metrics.update(reconstruction_metrics(reconstructed, truth))
        artifacts.append(reconstruction_grid(truth, observed, reconstructed))
    elif produces == "labels":
        metrics.update(prediction_metrics(output.predictions, truth, attack))
    else:
        metrics.update(membership_metrics(output.class_statistic, truth, attack))
    diagnostics = check_values(dict(output.diagnostics), f"attack '{attack}'")
    clash = set(diagnostics) & (set(metrics) | {"privacy.score"})
    if clash:
        raise BadOutput(f"attack '{attack}' reported {sorted(clash)[0]} as a diagnostic; the harness "
                        "computes it from the attack's output")
    return {**metrics, **diagnostics}, artifacts + list(output.artifacts)


# -- reconstructions ----------------------------------------------------------------------------------

def _checked_reconstruction(images, truth: GroundTruth, attack: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise BadOutput(f"attack '{attack}': reconstruction must be a tensor, got {type(images).__name__}")
    expected = tuple(truth.originals.shape)
    if tuple(images.shape) != expected:
        raise BadOutput(f"attack '{attack}': reconstruction has shape {tuple(images.shape)}; expected "
                        f"{expected}, one image per observed protected image")
    images = images.detach().float().cpu()
    if not torch.isfinite(images).all():
        raise BadOutput(f"attack '{attack}': reconstruction holds NaN or infinite pixels")
    return images.clamp(0, 1)


DCOR_MIN_IMAGES = 10  # fewer reconstructions get no attack.dcor: on 2 images any dCor is 1


def dependence_metrics(reconstructed: torch.Tensor, originals: torch.Tensor) -> dict[str, float]:
    """``attack.dcor`` and ``attack.rv_dcor`` of the flattened (original, reconstruction) pairs, each
    the mean over blocks of at most 256 images; nothing for fewer than ``DCOR_MIN_IMAGES`` images."""
    if len(originals) < DCOR_MIN_IMAGES:
        return {}
    return {"attack.dcor": blockwise(distance_correlation, originals, reconstructed),
            "attack.rv_dcor": blockwise(rv_distance_correlation, originals, reconstructed)}


def reconstruction_metrics(reconstructed: torch.Tensor, truth: GroundTruth) -> dict[str, float]:
    """``attack.psnr``, ``attack.ssim``, ``attack.ssim_skimage``, ``attack.dcor`` and
    ``attack.rv_dcor``, the uninformed baselines and ``privacy.score``."""
    originals = truth.originals
    guess = truth.aux_mean.expand_as(originals)
    ssim = float(ssim_per_image(reconstructed, originals).mean())
    ssim_chance = float(ssim_per_image(guess, originals).mean())
    return {
        **dependence_metrics(reconstructed, originals),
        "attack.psnr": float(psnr_per_image(reconstructed, originals).mean()),
        "attack.ssim": ssim,
        "attack.ssim_skimage": float(ssim_skimage_per_image(reconstructed, originals,
                                                             range_of="reconstruction").mean()),
        "attack.psnr_chance": float(psnr_per_image(guess, originals).mean()),
        "attack.ssim_chance": ssim_chance,
        "privacy.score": clip01((1.0 - ssim) / max(1e-6, 1.0 - ssim_chance)),
    }


SKIMAGE_WINDOW = 7  # scikit-image's default win_size when gaussian_weights is False
SKIMAGE_K1, SKIMAGE_K2 = 0.01, 0.03  # its default stabilising constants


def skimage_window(height: int, width: int) -> int:
    """scikit-image's 7 x 7 window, or the largest odd side that fits a smaller image."""
    side = min(SKIMAGE_WINDOW, height, width)
    return side if side % 2 == 1 else side - 1


def image_data_range(images: torch.Tensor) -> torch.Tensor:
    """max - min of each image (N x 1 x 1 x 1); 1, the peak of [0, 1] pixels, for a flat image."""
    spread = images.amax(dim=(1, 2, 3)) - images.amin(dim=(1, 2, 3))
    return torch.where(spread > 0, spread, torch.ones_like(spread)).view(-1, 1, 1, 1)


def ssim_skimage_per_image(reconstructed: torch.Tensor, original: torch.Tensor,
                           range_of: str = "original") -> torch.Tensor:
    """SSIM of each image as scikit-image's ``structural_similarity`` computes it (He et al.).

    Wang et al.'s SSIM map ((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 +
    C2)) with means and *sample* (co)variances over a uniform ``skimage_window`` x ``skimage_window``
    window, C1 = (0.01 L)^2, C2 = (0.03 L)^2, averaged over the positions where the window lies
    inside the image (scikit-image crops the border it would pad) and over the channels. The data
    range L is the max - min of each original image, or with ``range_of="reconstruction"`` of each
    reconstruction: He et al.'s evaluation passes ``data_range = inv_img.max() - inv_img.min()``
    (their repository's inverse_whitebox_MNIST_defense.py and inverse_whitebox_CIFAR_defense.py), so
    ``attack.ssim_skimage`` uses that. A flat image's range is 1. A 1-pixel window uses population
    variances.
    """
    if range_of not in ("original", "reconstruction"):
        raise PrivbenchError(f"ssim_skimage: range_of '{range_of}'; accepted: original, reconstruction")
    x, y = original.double(), reconstructed.double()
    window = skimage_window(*x.shape[-2:])
    points = window * window
    sample = points / (points - 1) if points > 1 else 1.0

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, window, stride=1)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = sample * (local_mean(x * x) - mu_x * mu_x)
    var_y = sample * (local_mean(y * y) - mu_y * mu_y)
    cov_xy = sample * (local_mean(x * y) - mu_x * mu_y)
    data_range = image_data_range(x if range_of == "original" else y)
    c1, c2 = (SKIMAGE_K1 * data_range) ** 2, (SKIMAGE_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3)).float()


def one_per_class(labels: torch.Tensor, count: int = 10) -> torch.Tensor:
    """Indices of the first image of each class, topped up to ``count`` with the next images."""
    firsts = [int((labels == c).nonzero()[0]) for c in labels.unique()[:count]]
    chosen = set(firsts)
    extra = [i for i in range(len(labels)) if i not in chosen][: max(0, count - len(firsts))]
    return torch.tensor(firsts + extra, dtype=torch.long)


def reconstruction_grid(truth: GroundTruth, observed: torch.Tensor,
                        reconstructed: torch.Tensor) -> Artifact:
    """``reconstruction.png``: originals | protected (if image-shaped) | reconstructions, one test
    image per class (as He et al. show them)."""
    index = one_per_class(truth.labels[truth.target_task])
    rows = [truth.originals[index]]
    if observed.shape[1:] == truth.originals.shape[1:]:
        rows.append(observed[index])
    rows.append(reconstructed[index])
    return Artifact("reconstruction.png", "image/png", image_grid_png(rows, columns=len(index)))


# -- predicted labels ---------------------------------------------------------------------------------

def _checked_labels(predicted, truth: GroundTruth, task: str, attack: str) -> torch.Tensor:
    if task not in truth.labels:
        raise BadOutput(f"attack '{attack}' predicted task '{task}'; scored tasks: "
                        f"{', '.join(sorted(truth.labels))}")
    if not isinstance(predicted, torch.Tensor) or predicted.dim() != 1:
        raise BadOutput(f"attack '{attack}': predictions['{task}'] must be a 1-d tensor of labels")
    if len(predicted) != len(truth.originals):
        raise BadOutput(f"attack '{attack}': {len(predicted)} predictions for '{task}', expected "
                        f"{len(truth.originals)}, one per observed protected image")
    return predicted.detach().cpu().long()


def inference_metrics(predicted: torch.Tensor, labels: torch.Tensor, majority: int) -> dict[str, float]:
    """accuracy, chance (the majority aux class), one-sided binomial p-value, privacy.score."""
    from scipy.stats import binomtest
    correct = int((predicted == labels).sum())
    total = int(labels.numel())
    accuracy = correct / total
    chance = int((labels == majority).sum()) / total
    p_value = binomtest(correct, total, min(max(chance, 1e-9), 1 - 1e-9), alternative="greater").pvalue
    return {"attack.accuracy": accuracy, "attack.chance": chance, "attack.p_value": float(p_value),
            "privacy.score": clip01((1.0 - accuracy) / max(1e-6, 1.0 - chance))}


def prediction_metrics(predictions: dict, truth: GroundTruth, attack: str) -> dict[str, float]:
    checked = {task: _checked_labels(p, truth, task, attack) for task, p in predictions.items()}
    scored = truth.private_task if truth.private_task in checked else truth.target_task
    if scored not in checked:
        raise BadOutput(f"attack '{attack}' predicted {sorted(checked)}; it must predict the private "
                        f"task '{truth.private_task}' or the target task '{truth.target_task}'")
    metrics = inference_metrics(checked[scored], truth.labels[scored], truth.aux_majority[scored])
    target = truth.target_task
    if target in checked and target != scored:
        accuracy = float((checked[target] == truth.labels[target]).float().mean())
        metrics.update({"attack.target_accuracy": accuracy, "attack.visual_privacy": 1.0 - accuracy})
    elif target in checked:
        metrics["attack.visual_privacy"] = 1.0 - metrics["attack.accuracy"]
    return metrics


# -- class statistics ---------------------------------------------------------------------------------

def welch_p_value(inside: list[float], outside: list[float]) -> float:
    """One-sided Welch t-test p-value for mean(inside) > mean(outside); 1.0 when undefined.

    scipy warns of "precision loss ... data nearly identical" whenever a group's values are all
    equal, as two probe classes' Fano factors are when the server gives both the same histogram.
    Such a group's variance is exactly 0 and the test stays exact (Welch's degrees of freedom are then
    the other group's), so the warning is silenced for exact ties only; near ties still warn."""
    from scipy.stats import ttest_ind
    with warnings.catch_warnings():
        if any(len(set(group)) == 1 for group in (inside, outside)):
            warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation",
                                    RuntimeWarning)
        result = ttest_ind(inside, outside, equal_var=False, alternative="greater")
    return 1.0 if math.isnan(result.pvalue) else float(result.pvalue)


def membership_metrics(statistic: dict, truth: GroundTruth, attack: str) -> dict[str, float]:
    if not truth.held_out:
        raise BadOutput(f"attack '{attack}' returned a class statistic but no probe class was out of "
                        "training; declare held_out_classes() or probe_dataset()")
    values = {int(c): float(v) for c, v in statistic.items()}
    if any(not math.isfinite(v) for v in values.values()):
        raise BadOutput(f"attack '{attack}': class statistic holds NaN or infinite values")
    inside = [v for c, v in values.items() if c not in truth.held_out]
    outside = [v for c, v in values.items() if c in truth.held_out]
    if not inside or not outside:
        raise BadOutput(f"attack '{attack}': the class statistic must cover member and out-of-"
                        "training classes; give a value for every probe class of view.probes()")
    p_value = welch_p_value(inside, outside)
    return {"attack.statistic_in": sum(inside) / len(inside),
            "attack.statistic_out": sum(outside) / len(outside),
            "attack.p_value": p_value,
            "privacy.score": clip01(1.0 + math.log10(max(p_value, 1e-300)) / 3)}
