"""UltraPixel added module for Stable Cascade stage C: LR guidance -> INR upscale -> fusion -> SAN.

UltraPixel (Ren et al., 2024), "UltraPixel: Advancing Ultra-High-Resolution Image Synthesis to
New Peaks", Sec. 3 and Fig. 3-4. Behaviour follows the official code as written down in
docs/algorithms.md §3 (pipeline §3.2-3.4, module §3.5, checkpoint §3.6, tests §3.9).

One :class:`UltraPixelGuidance` sits at each of four stage-C points, right after the first
AttnBlock of a level (``E0 E1 D0 D1``, §3.4). Given the HR feature f, the LR feature g captured at
the same point during the LR pass, and the 64-d embedding of the HR step's r, it returns u; the
caller adds ``x + s * u`` with s = 1 on the encoder and :func:`decoder_guide_scale` on the decoder.
The INR upscale g -> g' does not depend on f or r, so :meth:`UltraPixelGuidance.upscale_guidance`
can be run once per target size and its result passed to every step via ``g_up``.

Pure PyTorch: no ComfyUI import. Parameter names match the released checkpoint (§3.6) so its
state dict loads with ``strict=True``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .ultrapixel_checkpoint import (
    CHECKPOINT_PREFIXES,
    INJECTION_POINTS,
    check_state_dict,
    check_ultrapixel_state_dict,
    detect_checkpoint_format,
    guidance_state_shapes,
    load_checkpoint_file,
    split_ultrapixel_state_dict,
    ultrapixel_checkpoint_shapes,
)
from .ultrapixel_inr import (
    LRTokenizer,
    TokenTransformer,
    fourier_encode,
    inr_mlp,
    inr_query,
    make_coord_grid,
    modulate_base_weights,
)
from .ultrapixel_norm import AffineModulation, ScaleAwareNorm, channel_layer_norm, r_embedding, scale_value

__all__ = [
    "UltraPixelConfig",
    "SMALL_PARITY_CONFIG",
    "INJECTION_POINTS",
    "STAGE_C_BLOCKS",
    "CHECKPOINT_PREFIXES",
    "UltraPixelGuidance",
    "decoder_guide_scale",
    "guide_scale",
    "inject_guidance",
    "stage_c_latent_size",
    "lr_pixel_size",
    "guidance_state_shapes",
    "ultrapixel_checkpoint_shapes",
    "check_ultrapixel_state_dict",
    "split_ultrapixel_state_dict",
    "build_ultrapixel_modules",
    "load_ultrapixel_modules",
    # re-exported building blocks
    "r_embedding",
    "scale_value",
    "channel_layer_norm",
    "make_coord_grid",
    "fourier_encode",
    "inr_mlp",
    "inr_query",
    "modulate_base_weights",
    "check_state_dict",
    "detect_checkpoint_format",
    "load_checkpoint_file",
]


@dataclass(frozen=True)
class UltraPixelConfig:
    """Sizes of one added module; defaults are the release (``TransInr_withnorm`` args, §3.5).

    Attributes:
        ind: C, channels of the stage-C features f and g (2048 for the 3.6B stage C).
        ch: width of the reduced LR tokens and of the implicit function's output.
        n_head: attention heads of the token transformer (head width ``f_dim // n_head``).
        n_groups: G, weight tokens per implicit-function layer (capped by that layer's width).
        f_dim: token-transformer width and hidden width of the implicit function; must equal ch.
        time_dim: width of the time embedding e_t (stage C's r embedding, 64).
        scale_dim: width of the scale embedding e_s (64).
        n_pos: rows of the LR position table, the maximum number of LR pixels (32^2).
        n_freq: Fourier frequencies per coordinate (coordinate features = 4 * n_freq).
        pe_sigma: highest Fourier frequency (frequencies are exp(linspace(0, ln pe_sigma))).
        depth: token-transformer layers.
    """

    ind: int = 2048
    ch: int = 1024
    n_head: int = 32
    n_groups: int = 64
    f_dim: int = 1024
    time_dim: int = 64
    scale_dim: int = 64
    n_pos: int = 1024
    n_freq: int = 64
    pe_sigma: float = 1024.0
    depth: int = 1

    def __post_init__(self) -> None:
        if self.ch != self.f_dim:
            raise ValueError(f"LR tokens (ch={self.ch}) and weight tokens (f_dim={self.f_dim}) share one sequence")

    def inr_layer_shapes(self) -> dict[str, tuple[int, int]]:
        """Implicit-function layers as [W; bias row]: ``wb0`` (4*n_freq+1, f_dim), ``wb1`` (f_dim+1, ch)."""
        return {"wb0": (4 * self.n_freq + 1, self.f_dim), "wb1": (self.f_dim + 1, self.ch)}

    def inr_groups(self) -> dict[str, int]:
        """Weight tokens per implicit-function layer: ``min(n_groups, d_out)``."""
        return {name: min(self.n_groups, d_out) for name, (_, d_out) in self.inr_layer_shapes().items()}


SMALL_PARITY_CONFIG = UltraPixelConfig(ind=64, ch=32, n_head=4, n_groups=8, f_dim=32)  # §3.9 small config

STAGE_C_BLOCKS: dict[str, str] = {  # AttnBlock after which u is added (§3.4)
    "E0": "down_blocks.0.2",
    "E1": "down_blocks.1.2",
    "D0": "up_blocks.0.2",
    "D1": "up_blocks.1.2",
}


# Scale rules and sizes (§3.2, §3.4)


def decoder_guide_scale(height: int, width: int) -> float:
    """Inference weight s of decoder guidance by HR stage-C token count (§3.4).

    ``H*W >= 96^2 -> 0.7``, ``>= 72^2 -> 0.5``, else 0.3 (2048^2 -> 0.3, 3072^2 -> 0.5, 4096^2 -> 0.7).
    """
    hw = height * width
    if hw >= 96 * 96:
        return 0.7
    if hw >= 72 * 72:
        return 0.5
    return 0.3


def guide_scale(point: str, height: int, width: int) -> float:
    """s for an injection point at inference: 1 on the encoder (E*), the decoder rule on D*."""
    if point not in STAGE_C_BLOCKS:
        raise ValueError(f"unknown UltraPixel injection point {point!r}; expected one of {INJECTION_POINTS}")
    return decoder_guide_scale(height, width) if point.startswith("D") else 1.0


def inject_guidance(x: Tensor, u: Tensor, s: float = 1.0) -> Tensor:
    """``x + s * u`` as a new tensor (the outer residual of the fusion, Eq. (2)); x is untouched."""
    return x + s * u


def stage_c_latent_size(height: int, width: int, compression: float = 42.67) -> tuple[int, int]:
    """Stage-C latent (H_c, W_c) for an image of (height, width) px: ``ceil(px / 42.67)`` (§3.2)."""
    return math.ceil(height / compression), math.ceil(width / compression)


def lr_pixel_size(height: int, width: int, std_size: int = 32) -> tuple[int, int]:
    """LR image size (h_lr, w_lr) px for the LR pass: ``32 * int(32 * sqrt(rho))`` etc. (§3.2).

    rho = height / width; a square target gives 1024^2 (24^2 stage-C latent).
    """
    rho = height / width
    return 32 * int(std_size * math.sqrt(rho)), 32 * int(std_size / math.sqrt(rho))


# The added module (§3.5)


class UltraPixelGuidance(nn.Module):
    """One UltraPixel guidance module (official ``TransInr_withnorm``), for one injection point.

    UltraPixel (Ren et al., 2024), Fig. 4 (continuous upsampling) and Eqs. (2)-(4); the exact
    computation is docs/algorithms.md §3.5:

    * LR tokens + token transformer -> implicit-function weights theta (:meth:`implicit_weights`);
    * INR on the HR grid + nearest-upsampled g -> g' (:meth:`upscale_guidance`);
    * ``u = MLP_fuse([g'; f])``, time modulation by e_t, LayerNorm, SAN (:meth:`fuse`).

    Args:
        config: module sizes (release defaults).
        generator: seeds the initialisation (the official distributions: Xavier-uniform
            linears / convs with zero bias, N(0, 1) tokens and positions, U(+-1/sqrt(d_in)) base
            INR weights). Skipped on the meta device. Real use loads the checkpoint instead.
    """

    def __init__(self, config: UltraPixelConfig = UltraPixelConfig(), *, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        c = config
        n_wtokens = sum(c.inr_groups().values())
        # Key names below are the checkpoint's (§3.6).
        self.wtokens = nn.Parameter(torch.zeros(n_wtokens, c.f_dim))
        self.input_layer = nn.Conv2d(c.ind, c.ch, 1)
        self.tokenizer = LRTokenizer(c.ch, c.n_pos)
        self.transformer_encoder = TokenTransformer(c.f_dim, c.depth, c.n_head, ff_dim=c.f_dim)
        self.base_params = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(shape)) for name, shape in c.inr_layer_shapes().items()}
        )
        self.wtoken_postfc = nn.ModuleDict(
            {
                name: nn.Sequential(nn.LayerNorm(c.f_dim), nn.Linear(c.f_dim, d_in - 1))
                for name, (d_in, _) in c.inr_layer_shapes().items()
            }
        )
        self.output_layer = nn.Conv2d(c.ch, c.ind, 1)
        self.mapp_t = AffineModulation(c.ind, c.time_dim)
        self.hr_norm = ScaleAwareNorm(c.ind, c.scale_dim)
        self.toout = nn.Sequential(nn.Linear(2 * c.ind, c.ind // 4), nn.GELU(), nn.Linear(c.ind // 4, c.ind))
        if self.wtokens.device.type != "meta":
            self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every parameter from ``generator`` (seed 0 when None)."""
        gen = generator if generator is not None else torch.Generator().manual_seed(0)

        def randn_(p: Tensor) -> None:
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32))

        def uniform_(p: Tensor, bound: float) -> None:
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound)

        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in, fan_out = m.weight[0].numel(), m.weight.shape[0] * m.weight[0, 0].numel()
                uniform_(m.weight, math.sqrt(6.0 / (fan_in + fan_out)))  # Xavier-uniform
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()
        randn_(self.wtokens)
        randn_(self.tokenizer.posemb)
        for wb in self.base_params.values():
            uniform_(wb, 1.0 / math.sqrt(wb.shape[0] - 1))

    # LR guidance -> implicit-function weights (Fig. 4, §3.5 steps 1-4)

    def lr_tokens(self, g: Tensor) -> Tensor:
        """(B, C, h_lr, w_lr) LR feature -> (B, h_lr*w_lr, ch) tokens (1x1 conv, prefc, posemb)."""
        if g.shape[1] != self.config.ind:
            raise ValueError(f"LR guidance has {g.shape[1]} channels, the module expects {self.config.ind}")
        return self.tokenizer(self.input_layer(g))

    def implicit_weights(self, g: Tensor) -> tuple[Tensor, ...]:
        """theta: per-sample implicit-function layers [W; b], each (B, d_in + 1, d_out)."""
        tokens = self.lr_tokens(g)  # (B, L, ch)
        batch, n_w = tokens.shape[0], self.wtokens.shape[0]
        seq = torch.cat([tokens, self.wtokens.expand(batch, -1, -1)], dim=1)  # (B, L + n_w, f_dim)
        w_out = self.transformer_encoder(seq)[:, -n_w:]  # (B, n_w, f_dim): keep the weight tokens
        theta, start = [], 0
        for name, n_g in self.config.inr_groups().items():
            m = self.wtoken_postfc[name](w_out[:, start : start + n_g]).transpose(-1, -2)  # (B, d_in, G)
            theta.append(modulate_base_weights(self.base_params[name], m))
            start += n_g
        return tuple(theta)

    def upscale_guidance(self, g: Tensor, size: Sequence[int]) -> Tensor:
        """g' at any (H_c, W_c): ``output_layer(INR(grid)) + nearest(g)`` (§3.5 steps 5-6).

        Independent of f and of the step, so compute it once per target size.

        Returns:
            (B, C, H_c, W_c) upscaled guidance.
        """
        size = (int(size[0]), int(size[1]))
        theta = self.implicit_weights(g)
        z = inr_query(theta, size, self.config.n_freq, self.config.pe_sigma)  # (B, H_c, W_c, ch)
        g_near = F.interpolate(g, size=size, mode="nearest")  # (B, C, H_c, W_c)
        return self.output_layer(rearrange(z, "b h w c -> b c h w")) + g_near

    # Guidance fusion, time modulation, scale-aware norm (Eqs. (2)-(4), §3.5 steps 7-10)

    def fuse(self, f: Tensor, g_up: Tensor, t_emb: Tensor) -> Tensor:
        """u = SAN(LN(MLP_fuse([g'; f]) * (1 + a_t) + b_t)); the caller adds ``x + s * u``.

        Args:
            f: (B, C, H_c, W_c) HR feature (output of the AttnBlock).
            g_up: (B, C, H_c, W_c) upscaled guidance g'.
            t_emb: (B, time_dim) embedding of the HR step's r (:func:`r_embedding`).
        """
        if g_up.shape != f.shape:
            raise ValueError(f"upscaled guidance {tuple(g_up.shape)} does not match the HR feature {tuple(f.shape)}")
        u = self.toout(torch.cat([g_up, f], dim=1).movedim(1, -1)).movedim(-1, 1)  # (B, C, H_c, W_c)
        u = self.mapp_t(u, t_emb)  # time modulation, Eq. (3)
        u = channel_layer_norm(u)
        return self.hr_norm(u)  # scale-aware normalization, Eq. (4)

    def forward(self, f: Tensor, g: Tensor, t_emb: Tensor, g_up: Tensor | None = None) -> Tensor:
        """u for HR feature f (B, C, H_c, W_c) and LR feature g (B, C, h, w); pass ``g_up`` to reuse g'."""
        if g_up is None:
            g_up = self.upscale_guidance(g, f.shape[-2:])
        return self.fuse(f, g_up, t_emb)


# Building and loading the four modules (§3.6)


def build_ultrapixel_modules(
    config: UltraPixelConfig = UltraPixelConfig(), *, generator: torch.Generator | None = None
) -> nn.ModuleDict:
    """Four freshly initialised modules keyed ``E0 E1 D0 D1`` (seeded by one generator, in that order)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    return nn.ModuleDict({p: UltraPixelGuidance(config, generator=gen) for p in INJECTION_POINTS})


def load_ultrapixel_modules(
    source: str | os.PathLike[str] | Mapping[str, Tensor],
    config: UltraPixelConfig = UltraPixelConfig(),
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> nn.ModuleDict:
    """Load the released weights (pickle or safetensors, checked strictly) into four modules.

    The modules are built on the meta device and take the file's tensors (no random init), and
    come back in eval mode with gradients off, keyed ``E0 E1 D0 D1`` (see ``STAGE_C_BLOCKS``).

    Args:
        source: checkpoint path, or an already loaded state dict.
        dtype: cast the weights (default: keep the file's dtype, bf16 for the release).

    Raises:
        ValueError: unreadable file, or keys / shapes differ from §3.6 (the message names them).
    """
    state = load_checkpoint_file(source) if isinstance(source, (str, os.PathLike)) else dict(source)
    message = check_ultrapixel_state_dict(state, config)
    if message is not None:
        raise ValueError(message)
    with torch.device("meta"):
        modules = nn.ModuleDict({p: UltraPixelGuidance(config) for p in INJECTION_POINTS})
    for point, local in split_ultrapixel_state_dict(state).items():
        modules[point].load_state_dict(local, strict=True, assign=True)
    return modules.to(device=device, dtype=dtype).eval().requires_grad_(False)
