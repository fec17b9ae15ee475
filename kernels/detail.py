"""Keep the model's native-scale detail through an RGB-space upscale (pure torch + kornia).

Both cascades hand a stage the previous stage's image resized in RGB space and encoded again:
Pixelsmith with Lanczos (Tragakis et al., 2024, §3; Thanos-DB/Pixelsmith@28c992b
``pixelsmith_pipeline.py:2007-2062``), FreeScale with bicubic (Qiu et al., 2024, §3.2;
ali-vilab/FreeScale@d5a2256 ``pipeline_freescale.py:866-879``). That keeps shapes smooth, but a
VAE stores the texture of a few pixels (grain, fabric, a 2 px checker) as the latent values of
each cell, and a resize changes that texture's period in pixels: the encoder reads the enlarged
texture as a different, mostly flatter one, and the stage starts from a latent that says "no fine
detail here". FreeScale then pulls toward that latent through most of its steps (the skip
residual), so its result keeps little of the model's own fine texture.

:func:`keep_latent_detail` is UltraRes's remedy, not part of either paper: the low latent
frequencies come from the previous stage's latent itself (nearest-upsampled, then Gaussian
low-passed), which still carries the native texture code of every cell; the high latent
frequencies (sharp edges at the new size) stay those of the RGB-space route.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

SIGMA = 1.0  # latent cells at the target size: the split between the two routes


def keep_latent_detail(z_resized: torch.Tensor, z_source: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """``z_resized + G_σ(up(z_source) − z_resized)``: low band of the source latent, high band of the re-encoded one.

    ``z_resized`` ``(B, C, H, W)`` is the resized image encoded (the paper's upscaled latent),
    ``z_source`` ``(B, C, h, w)`` the latent it was decoded from; ``up`` is nearest-exact to
    ``(H, W)`` and ``G_σ`` a Gaussian of ``sigma`` latent cells (replicated border), applied one
    channel at a time so the peak stays at about two full-size latents. Returns a new tensor in
    ``z_resized``'s dtype; ``sigma`` 0 returns the upsampled source (the latent route alone).
    """
    if z_source.shape[:2] != z_resized.shape[:2]:
        raise ValueError(f"source latent {tuple(z_source.shape)} and resized latent {tuple(z_resized.shape)} "
                         "differ in batch or channels")
    d = F.interpolate(z_source.to(z_resized.device, torch.float32), size=z_resized.shape[-2:], mode="nearest-exact")
    if sigma > 0:
        d.sub_(z_resized)
        k = 2 * int(3 * sigma) + 1
        for c in range(d.shape[1]):
            d[:, c:c + 1] = gaussian_blur2d(d[:, c:c + 1], (k, k), (sigma, sigma), border_type="replicate")
        d.add_(z_resized)
    return d.to(z_resized.dtype)
