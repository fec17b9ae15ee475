"""Quality metrics for images of the demo model (pure torch + scipy's labelling).

* repetition — :func:`count_objects`: the number of large saturated blobs (the procedural
  backgrounds are desaturated, the objects are not), target 1;
* structure — :func:`structure_ssim`: SSIM (11×11 Gaussian window, on RGB) between the result
  area-downscaled to the base image's size and the base image;
* detail — :func:`texture_distance`: a patch-level realism score in the spirit of FID-patch.
  Hand-made features of 32² crops taken at 1:1 pixel scale (radially averaged log power spectrum,
  gradient statistics, colour spread) are fitted with a Gaussian for the result and for the
  training images, and the Fréchet distance between the two is reported (0 = indistinguishable);
  :func:`fine_energy`: the power of the top spectral band (periods under 4 px) at 1:1, to compare
  with direct sampling and the training images (native-scale detail kept);
* structure kept — :func:`mask_iou`: IoU of the object masks of the result (at the base's size)
  and of the base; :func:`hue_kept`: the object's hue stays within 30° of the base's (a red disc
  that turns orange or yellow has changed colour);
* seams — :func:`seam_score`: the colour jump across the lines of a tile grid (patch or VAE tile
  borders) ÷ the jump across the latent-cell borders beside them (1 = no seam at the grid);
  :func:`worst_line`: the strongest cell-border line ÷ the median one, wherever it lies.
"""
from __future__ import annotations

import math

import kornia
import numpy as np
import torch
import torch.nn.functional as F

SATURATION_MIN = 0.5
VALUE_MIN = 0.25
MIN_OBJECT_PX = 700   # ≈ ½ of the smallest object at the 128 px training size
CROP = 32


def object_mask(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> [B, H, W] bool: saturated, not dark (the objects' colours)."""
    hi, lo = images.max(dim=1).values, images.min(dim=1).values
    saturation = (hi - lo) / hi.clamp_min(1e-6)
    return (saturation > SATURATION_MIN) & (hi > VALUE_MIN)


def count_objects(images: torch.Tensor, min_px: int = MIN_OBJECT_PX) -> list[int]:
    """Number of object blobs with at least ``min_px`` object pixels in each image.

    Blobs closer than 2 px at the 128 px scale (a highlight cut off by a dark rim) are one blob:
    the mask is dilated by that much before labelling, and blob sizes count only mask pixels.
    """
    from scipy import ndimage

    counts = []
    for mask in object_mask(images).cpu().numpy():
        radius = max(1, round(2 * mask.shape[-1] / 128))
        grown = ndimage.binary_dilation(mask, structure=np.ones((3, 3)), iterations=radius)
        labels, n = ndimage.label(grown, structure=np.ones((3, 3)))
        sizes = np.bincount(labels[mask], minlength=n + 1)[1:]
        counts.append(int((sizes >= min_px).sum()))
    return counts


def structure_ssim(result: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of ``result`` area-downscaled to ``base``'s size against ``base``."""
    small = F.interpolate(result.float(), size=base.shape[-2:], mode="area")
    return kornia.metrics.ssim(small, base.float(), window_size=11).mean(dim=(1, 2, 3))


def _crops(images: torch.Tensor, n_per_image: int, generator: torch.Generator) -> torch.Tensor:
    b, _, h, w = images.shape
    ys = torch.randint(0, h - CROP + 1, (b, n_per_image), generator=generator)
    xs = torch.randint(0, w - CROP + 1, (b, n_per_image), generator=generator)
    return torch.stack([images[i, :, y:y + CROP, x:x + CROP]
                        for i in range(b) for y, x in zip(ys[i].tolist(), xs[i].tolist())])


def texture_features(images: torch.Tensor, n_per_image: int = 16, seed: int = 0) -> torch.Tensor:
    """[B*n, 12] features of random 32² crops: 8 log-spectrum bands, gradient mean/std, colour std."""
    crops = _crops(images.float(), n_per_image, torch.Generator().manual_seed(seed))
    grey = crops.mean(dim=1)
    spectrum = torch.fft.fft2(grey - grey.mean(dim=(-2, -1), keepdim=True)).abs().pow(2)
    f = torch.fft.fftfreq(CROP)
    radius = torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2) / (0.5 * math.sqrt(2))
    band = (radius * 8).long().clamp(max=7).flatten()
    power = torch.zeros(grey.shape[0], 8).index_add_(1, band, spectrum.flatten(1))
    power = torch.log(power / torch.bincount(band, minlength=8).clamp_min(1) + 1e-8)
    grad = kornia.filters.spatial_gradient(grey.unsqueeze(1)).norm(dim=2).flatten(1)
    colour = crops.std(dim=(-2, -1)).mean(dim=1, keepdim=True)
    return torch.cat([power, grad.mean(1, keepdim=True), grad.std(1, keepdim=True), colour], dim=1)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets [N, D]."""
    from scipy import linalg

    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


def texture_distance(result: torch.Tensor, reference_features: torch.Tensor, seed: int = 0) -> float:
    """Fréchet distance of ``result``'s 1:1 crop features to the training images' features."""
    return frechet_distance(texture_features(result, seed=seed), reference_features)


def _jumps(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |colour step| across each column border and each row border: ([B, W-1], [B, H-1])."""
    x = images.float()
    cols = (x[..., :, 1:] - x[..., :, :-1]).abs().sum(1).mean(1)  # border between columns j, j+1
    rows = (x[..., 1:, :] - x[..., :-1, :]).abs().sum(1).mean(2)
    return cols, rows


def seam_score(images: torch.Tensor, period: int, cell: int = 8) -> torch.Tensor:
    """Per image: jump across the ``period``-px grid lines ÷ jump across the cell borders beside them.

    Each grid line is compared with the parallel ``cell``-px borders one and two cells away on
    either side, so the content around it (an object edge that happens to sit there) weighs
    equally on both: ≈ 1 without a seam, above 1 when the grid shows.
    """
    cols, rows = _jumps(images)
    ratios = []
    for jumps in (cols, rows):
        n = jumps.shape[-1] + 1  # image side
        for line in range(period, n - 2 * cell, period):
            beside = [line + d * cell for d in (-2, -1, 1, 2) if 0 < line + d * cell < n]
            ratios.append(jumps[..., line - 1] / jumps[..., [b - 1 for b in beside]].mean(-1).clamp_min(1e-8))
    return torch.stack(ratios, -1).mean(-1)


def worst_line(images: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """Per image: the largest jump across one ``cell``-px border line ÷ the median line's."""
    cols, rows = _jumps(images)
    lines = torch.cat([cols[..., cell - 1::cell], rows[..., cell - 1::cell]], dim=-1)
    return lines.max(-1).values / lines.median(-1).values.clamp_min(1e-8)


def fine_energy(images: torch.Tensor, crop: int = 64, n_per_image: int = 8, seed: int = 0) -> float:
    """Mean power of the top spectral band (0.25–0.5 cycles/px) of random 1:1 grey crops."""
    size = min(crop, images.shape[-1], images.shape[-2])
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = images.shape
    ys = torch.randint(0, h - size + 1, (b * n_per_image,), generator=g)
    xs = torch.randint(0, w - size + 1, (b * n_per_image,), generator=g)
    grey = images.float().mean(1)
    crops = torch.stack([grey[i // n_per_image, y:y + size, x:x + size]
                         for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist()))])
    spectrum = torch.fft.fft2(crops - crops.mean(dim=(-2, -1), keepdim=True)).abs().pow(2) / size ** 2
    f = torch.fft.fftfreq(size)
    radius = torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2)
    return float(spectrum[:, radius >= 0.25].sum(-1).mean())


def mask_iou(result: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Per image: IoU of the object mask of ``result`` area-downscaled to ``base``'s size and ``base``'s."""
    small = F.interpolate(result.float(), size=base.shape[-2:], mode="area")
    a, b = object_mask(small), object_mask(base.float())
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


HUE_TOLERANCE = 30.0  # degrees: red → orange is 30°, any colour → another object class's is 60° or more


def object_hue(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> [B] circular mean hue (degrees) of the object pixels; NaN without any."""
    hue = kornia.color.rgb_to_hsv(images.float())[:, 0]  # radians in [0, 2π)
    mask = object_mask(images).float().flatten(1)
    hue = hue.flatten(1)
    mean = torch.atan2((hue.sin() * mask).sum(1), (hue.cos() * mask).sum(1))
    return torch.where(mask.sum(1) > 0, torch.rad2deg(mean) % 360, torch.full_like(mean, math.nan))


def hue_kept(result: torch.Tensor, base: torch.Tensor, tolerance: float = HUE_TOLERANCE) -> torch.Tensor:
    """Per image: the object's hue in ``result`` is within ``tolerance`` degrees of ``base``'s (False
    where either has no object)."""
    diff = (object_hue(result) - object_hue(base)).abs() % 360
    return torch.minimum(diff, 360 - diff) <= tolerance  # NaN compares False
