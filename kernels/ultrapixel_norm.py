"""UltraPixel modulation layers: sinusoidal embeddings, time modulation, scale-aware normalization.

UltraPixel (Ren et al., 2024, arXiv:2407.02158), Sec. 3.2, Eq. (3) (time modulation of the fused
guidance) and Eq. (4) (scale-aware normalization, SAN). The formulas follow the official code
(catcathh/UltraPixel@e85d3bc ``modules/inr_fea_res_lite.py:289-397``, the end of
``TransInr_withnorm.forward``), which differs from the paper's wording in two places:

* the scale s fed to the sinusoidal embedding is ``sqrt(ln N_H / ln N_L)`` (N_L = 24^2 = 576),
  not ``log(N_H / N_L)``;
* SAN applies ``u * (1 + a_s) + b_s`` and adds ``u`` again, i.e. ``u * (2 + a_s) + b_s``.

Pure PyTorch: no ComfyUI import. Module attribute names match the released checkpoint
(``mapp_t.mapper``, ``hr_norm.mapping.mapper``, ``hr_norm.alpha``, ``hr_norm.gamma``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ultrapixel_config import N_BASE_TOKENS


def r_embedding(r: Tensor, dim: int = 64, max_positions: float = 10000.0) -> Tensor:
    """Stage C's sinusoidal embedding of a scalar per sample (``gen_r_embedding``), [sin | cos].

    Official code: ``StageC.gen_r_embedding`` (catcathh/UltraPixel@e85d3bc
    ``modules/model_4stage_lite.py:389-411``) for ``r``, reused by ``TransInr_withnorm`` for
    ``e = sinusoid64(sigma_s)`` (``modules/inr_fea_res_lite.py:289-397``): the value is
    multiplied by ``max_positions`` and projected on ``dim // 2`` log-spaced frequencies.

    Args:
        r: (B,) values (time r in [0, 1], or the SAN scale sigma_s).

    Returns:
        (B, dim) embedding (float32 unless ``r`` is float64).
    """
    r = r.to(torch.float64 if r.dtype == torch.float64 else torch.float32)
    half = dim // 2
    step = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=r.device, dtype=r.dtype) * -step)  # (half,)
    phase = (r * max_positions)[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([phase.sin(), phase.cos()], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def scale_value(height: int, width: int, n_base: int = N_BASE_TOKENS) -> float:
    """SAN scale ``sigma_s = sqrt(log_{N_L}(N_H))`` for an HR stage-C map of (height, width) tokens.

    UltraPixel (Ren et al., 2024), Sec. 3.2 "Scale-aware normalization", as implemented in
    catcathh/UltraPixel@e85d3bc ``modules/inr_fea_res_lite.py:289-397``:
    48^2 -> 1.10368, 72^2 -> 1.16004, 96^2 -> 1.19842.
    """
    return math.sqrt(math.log(height * width, n_base))


def channel_layer_norm(u: Tensor, eps: float = 1e-6) -> Tensor:
    """LayerNorm over the channel axis of (B, C, H, W), no affine, eps 1e-6 (as ``inr_fea_res_lite.py``)."""
    return F.layer_norm(u.movedim(1, -1), (u.shape[1],), eps=eps).movedim(-1, 1)


class AffineModulation(nn.Module):
    """``u * (1 + a) + b`` with ``(a, b) = Linear(e)`` split in two along channels (``mapper``).

    UltraPixel (Ren et al., 2024), Eq. (3) (time embedding e_t, key ``mapp_t``) and the inner
    mapping of SAN, Eq. (4) (scale embedding e_s, key ``hr_norm.mapping``).
    """

    def __init__(self, c: int, c_emb: int) -> None:
        super().__init__()
        self.mapper = nn.Linear(c_emb, 2 * c)

    def forward(self, u: Tensor, e: Tensor) -> Tensor:
        """u: (B, C, H, W); e: (B, c_emb) (cast to the layer's dtype) -> (B, C, H, W)."""
        a, b = self.mapper(e.to(self.mapper.weight.dtype))[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return u * (1 + a) + b


class ScaleAwareNorm(nn.Module):
    """Scale-aware normalization (SAN): ``u * (1 + a_s) + b_s + u`` with e_s = sinusoid(sigma_s).

    UltraPixel (Ren et al., 2024), Eq. (4); official code catcathh/UltraPixel@e85d3bc
    ``modules/inr_fea_res_lite.py:289-397``. The preceding LayerNorm is applied by the caller.
    ``alpha`` / ``gamma`` are 1x1 convs present in
    the checkpoint but unused by the official forward; they are kept only so the state dict loads.
    """

    def __init__(self, c: int, c_scale: int = 64, n_base: int = N_BASE_TOKENS) -> None:
        super().__init__()
        self.c_scale = c_scale
        self.n_base = n_base
        self.mapping = AffineModulation(c, c_scale)
        self.alpha = nn.Conv2d(c, c, kernel_size=1)  # unused (checkpoint compatibility)
        self.gamma = nn.Conv2d(c, c, kernel_size=1)  # unused (checkpoint compatibility)

    def scale_embedding(self, height: int, width: int, batch: int, device: torch.device | None = None) -> Tensor:
        """e_s for an HR map of (height, width) tokens: (batch, c_scale), float32."""
        sigma_s = torch.full((batch,), scale_value(height, width, self.n_base), device=device)
        return r_embedding(sigma_s, self.c_scale)

    def forward(self, u: Tensor, sigma_s: float | None = None) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W).

        ``sigma_s`` None: the scale comes from u's spatial size (the paper); a number sets it.
        """
        if sigma_s is None:
            e_s = self.scale_embedding(u.shape[-2], u.shape[-1], u.shape[0], u.device)  # (B, c_scale)
        else:
            e_s = r_embedding(torch.full((u.shape[0],), float(sigma_s), device=u.device), self.c_scale)
        return self.mapping(u, e_s) + u
