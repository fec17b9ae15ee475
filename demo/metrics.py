"""Quality metrics for images of the demo model (pure torch + scipy's labelling).

* repetition — :func:`count_objects`: the number of large saturated blobs (the procedural
  backgrounds are desaturated, the objects are not), target 1;
* structure — :func:`structure_ssim`: SSIM (11×11 Gaussian window, on RGB) between the result
  area-downscaled to the base image's size and the base image;
* detail — :func:`texture_distance`: a patch-level realism score in the spirit of FID-patch.
  Hand-made features of 32² crops taken at 1:1 pixel scale (radially averaged log power spectrum,
  gradient statistics, colour spread) are fitted with a Gaussian for the result and for the
  training images, and the Fréchet distance between the two is reported (0 = indistinguishable).
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
