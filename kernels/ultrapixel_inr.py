"""UltraPixel continuous upsampling: LR guidance tokens, implicit-function weights, INR query.

UltraPixel (Ren et al., 2024, arXiv:2407.02158), Sec. 3.1 "Continuous upsampling" and Fig. 4:
the LR guidance features g are reduced to tokens, mixed with learnable weight tokens by one
self-attention layer, and the weight tokens modulate the base weights of a small implicit function
(an MLP on Fourier-encoded coordinates). Querying that function on the HR pixel grid gives the
upscaled guidance g' at any size. Layer-by-layer behaviour follows the official code
(catcathh/UltraPixel@e85d3bc ``modules/inr_fea_res_lite.py:289-397``, ``TransInr_withnorm`` up to
the upscaled guidance).

Pure PyTorch: no ComfyUI import. The modules here carry the released checkpoint's key names
(``tokenizer.*``, ``transformer_encoder.layers.0.*``), as saved by the official
``train/train_t2i.py:262-281``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

# LR guidance tokens and the token transformer (Fig. 4, left)


class LRTokenizer(nn.Module):
    """LR guidance map -> tokens: per-pixel ``prefc`` Linear plus a learned absolute position table.

    UltraPixel (Ren et al., 2024), Fig. 4 "Linear"; official ``inr_fea_res_lite.py``. Tokens are the
    pixels in row-major order; ``posemb`` is indexed by flat position, so at most ``n_pos`` LR
    pixels (1024 = 32x32 in the release) are supported.
    """

    def __init__(self, ch: int, n_pos: int = 1024) -> None:
        super().__init__()
        self.prefc = nn.Linear(ch, ch)
        self.posemb = nn.Parameter(torch.zeros(n_pos, ch))

    def forward(self, g_red: Tensor) -> Tensor:
        """(B, ch, h, w) reduced guidance -> (B, h*w, ch) tokens."""
        n_tokens = g_red.shape[-2] * g_red.shape[-1]
        if n_tokens > self.posemb.shape[0]:
            raise ValueError(
                f"UltraPixel LR guidance has {n_tokens} pixels ({tuple(g_red.shape[-2:])}), but the "
                f"position table holds {self.posemb.shape[0]}; use an LR latent of at most that size"
            )
        tokens = rearrange(g_red, "b c h w -> b (h w) c")  # (B, L, ch)
        return self.prefc(tokens) + self.posemb[:n_tokens]


class TokenAttention(nn.Module):
    """Multi-head self-attention with SiLU before the q / kv projections and no output projection.

    As in the official ``inr_fea_res_lite.py`` (keys ``fn.to_q.1``, ``fn.to_kv.1``).
    """

    def __init__(self, dim: int, n_head: int, head_dim: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.scale = head_dim**-0.5
        self.to_q = nn.Sequential(nn.SiLU(), nn.Linear(dim, n_head * head_dim))
        self.to_kv = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * n_head * head_dim))

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, dim) -> (B, N, n_head*head_dim)."""
        q = self.to_q(x)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.n_head) for t in (q, k, v))
        attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)  # (B,h,N,N)
        return rearrange(torch.matmul(attn, v), "b h n d -> b n (h d)")


class TokenFeedForward(nn.Module):
    """Linear -> GELU -> (dropout slot, identity at inference) -> Linear; keys ``net.0``/``net.3``."""

    def __init__(self, dim: int, ff_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Identity(), nn.Linear(ff_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PreNorm(nn.Module):
    """``fn(LayerNorm(x))``; the residual is added by :class:`TokenTransformer`."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x))


class TokenTransformer(nn.Module):
    """Pre-norm transformer over [LR tokens; weight tokens] (``transformer_encoder``).

    UltraPixel (Ren et al., 2024), Fig. 4 "self-attention"; official ``inr_fea_res_lite.py``. The
    release uses ``depth = 1`` and ``ff_dim = dim``.
    """

    def __init__(self, dim: int, depth: int, n_head: int, ff_dim: int) -> None:
        super().__init__()
        if dim % n_head:
            raise ValueError(f"token width {dim} is not divisible by {n_head} heads")
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(dim, TokenAttention(dim, n_head, dim // n_head)),
                    PreNorm(dim, TokenFeedForward(dim, ff_dim)),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, N, dim) -> (B, N, dim)."""
        for attn, ff in self.layers:
            tokens = tokens + attn(tokens)
            tokens = tokens + ff(tokens)
        return tokens


# Implicit function (Fig. 4, right)


def modulate_base_weights(wb_base: Tensor, m: Tensor) -> Tensor:
    """Implicit-function weights from base weights and weight-token outputs.

    UltraPixel (Ren et al., 2024), Fig. 4 "implicit function weights"; official
    ``inr_fea_res_lite.py``. ``W = normalize_over_input(W_base * tile(m))``, where output column j uses token
    ``j mod G``; the bias row stays the base bias.

    Args:
        wb_base: (d_in + 1, d_out) base layer stored as [W; bias row], input-major.
        m: (B, d_in, G) per-token modulation (weight-token outputs after LayerNorm + Linear,
            transposed), with ``d_out % G == 0``.

    Returns:
        (B, d_in + 1, d_out) modulated [W; bias row].
    """
    d_out = wb_base.shape[1]
    n_groups = m.shape[-1]
    if d_out % n_groups:
        raise ValueError(f"output width {d_out} is not a multiple of {n_groups} weight tokens")
    w_base, b_base = wb_base[:-1], wb_base[-1:]  # (d_in, d_out), (1, d_out)
    w = F.normalize(w_base * m.repeat(1, 1, d_out // n_groups), dim=1)  # (B, d_in, d_out)
    return torch.cat([w, b_base.expand(m.shape[0], 1, d_out)], dim=1)


def make_coord_grid(
    size: Sequence[int], *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Pixel-centre coordinates in [-1, 1] for an (H, W) grid, last axis ordered (row, col).

    As in the official ``inr_fea_res_lite.py``: centre k of n maps to ``-1 + 2 * (0.5 + k) / n``, evaluated in
    float32 in that order (the phase is later multiplied by up to 1024*pi, so the rounding of the
    coordinates matters at the 1e-4 level) and cast to ``dtype`` at the end.

    Returns:
        (H, W, 2) tensor.
    """
    axes = [-1.0 + 2.0 * ((0.5 + torch.arange(n, device=device, dtype=torch.float32)) / n) for n in size]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (H, W, 2)
    return grid.to(dtype)


def fourier_encode(coord: Tensor, n_freq: int = 64, sigma: float = 1024.0) -> Tensor:
    """Fourier features ``[cos(pi v), sin(pi v)]`` of every coordinate times every frequency.

    As in the official ``inr_fea_res_lite.py``: frequencies ``exp(linspace(0, ln sigma, n_freq))``;
    v holds the
    first coordinate's block then the second's, so 2-D input gives ``4 * n_freq`` features.
    The phase is a ``torch.matmul`` outer product on purpose: under autocast it is then computed
    in the autocast dtype, as in the official code's bf16 inference.

    Args:
        coord: (..., D) coordinates.

    Returns:
        (..., 2 * D * n_freq) features.
    """
    freqs = torch.exp(torch.linspace(0.0, math.log(sigma), n_freq, device=coord.device, dtype=coord.dtype))  # (n_freq,)
    v = torch.matmul(coord.unsqueeze(-1), freqs.unsqueeze(0))  # (..., D, n_freq)
    v = v.flatten(-2)  # (..., D * n_freq)
    return torch.cat([torch.cos(math.pi * v), torch.sin(math.pi * v)], dim=-1)


def inr_mlp(gamma: Tensor, theta: Sequence[Tensor]) -> Tensor:
    """Per-sample MLP with weights theta = ([W; b] per layer), ReLU between layers, none at the end.

    Each layer is one matmul of ``[x, 1]`` with the stacked [W; bias row], so the bias is part of
    the same accumulation (as in the official code; this matters for bf16 / fp32 rounding parity).

    Args:
        gamma: (B, N, d_0) encoded query points.
        theta: layers of shape (B, d_i + 1, d_{i+1}) (or shared (d_i + 1, d_{i+1})).

    Returns:
        (B, N, d_last).
    """
    x = gamma
    for i, wb in enumerate(theta):
        ones = torch.ones(*x.shape[:-1], 1, device=x.device, dtype=x.dtype)
        x = torch.matmul(torch.cat([x, ones], dim=-1), wb)  # (B, N, d_{i+1})
        if i < len(theta) - 1:
            x = torch.relu(x)
    return x


def inr_query(theta: Sequence[Tensor], size: Sequence[int], n_freq: int = 64, sigma: float = 1024.0) -> Tensor:
    """Evaluate the implicit function on the pixel-centre grid of ``size`` (any H, W).

    UltraPixel (Ren et al., 2024), Fig. 4 "target position (x, y)"; official
    ``inr_fea_res_lite.py`` (before the output 1x1 conv). Pure: depends only on theta and the size, so it can
    be computed once per target size and reused for every sampling step.

    Returns:
        (B, H, W, d_last) INR features.
    """
    wb0 = theta[0]
    coord = make_coord_grid(size, device=wb0.device)  # (H, W, 2), float32 phase even for bf16 weights
    gamma = fourier_encode(coord, n_freq, sigma).flatten(0, 1).to(wb0.dtype)  # (H*W, 4*n_freq)
    batch = wb0.shape[0] if wb0.dim() == 3 else 1
    gamma = gamma.unsqueeze(0).expand(batch, -1, -1)  # (B, H*W, 4*n_freq)
    out = inr_mlp(gamma, theta)  # (B, H*W, d_last)
    return out.unflatten(1, tuple(size))
