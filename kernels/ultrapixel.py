"""UltraPixel added module for Stable Cascade stage C: LR guidance -> INR upscale -> fusion -> SAN.

UltraPixel (Ren et al., 2024, "UltraPixel: Advancing Ultra-High-Resolution Image Synthesis to New
Peaks", NeurIPS 2024, arXiv:2407.02158), Sec. 3 and Figs. 3-4. Behaviour follows the official code
(catcathh/UltraPixel@e85d3bc): the module is ``TransInr_withnorm`` of
``modules/inr_fea_res_lite.py:289-397``, its use in stage C is ``modules/model_4stage_lite.py``,
the sizes come from ``inference/utils.py``.

One :class:`GuidanceFusionModule` sits at each of four stage-C points, right after the first
AttnBlock of a level (``E0 E1 D0 D1``, ``model_4stage_lite.py:287-298,341-365``). Given the HR
feature f, the LR feature g captured at the same point during the LR pass, and the 64-d embedding
of the HR step's r, it returns u; the caller adds ``x + s * u`` with s = 1 on the encoder and
:func:`decoder_guide_scale` on the decoder. The INR upscale g -> g' does not depend on f or r, so
:meth:`GuidanceFusionModule.upscale_guidance` can be run once per target size and its result
passed to every step via ``g_up``.

Pure PyTorch: no ComfyUI import. Parameter names match the released checkpoint (see
:mod:`.ultrapixel_weights`) so its state dict loads with ``strict=True``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .ultrapixel_config import INJECTION_POINTS, RELEASE_CONFIG, STAGE_C_BLOCKS, UltraPixelConfig
from .ultrapixel_inr import LRTokenizer, TokenTransformer, inr_query, modulate_base_weights
from .ultrapixel_norm import AffineModulation, ScaleAwareNorm, channel_layer_norm

# Scale rules and sizes (official inference/utils.py, model_4stage_lite.py)


def decoder_guide_scale(height: int, width: int) -> float:
    """Inference weight s of decoder guidance by HR stage-C token count (``model_4stage_lite.py:352-365``).

    ``H*W >= 96^2 -> 0.7``, ``>= 72^2 -> 0.5``, else 0.3 (2048^2 -> 0.3, 3072^2 -> 0.5, 4096^2 -> 0.7).
    """
    hw = height * width
    if hw >= 96 * 96:
        return 0.7
    if hw >= 72 * 72:
        return 0.5
    return 0.3


def guide_scale(point: str, height: int, width: int, decoder: float | None = None) -> float:
    """s for an injection point at inference: 1 on the encoder (E*), on D* ``decoder`` or, when
    None, the decoder rule of :func:`decoder_guide_scale`."""
    if point not in STAGE_C_BLOCKS:
        raise ValueError(f"unknown UltraPixel injection point {point!r}; expected one of {INJECTION_POINTS}")
    if not point.startswith("D"):
        return 1.0
    return decoder_guide_scale(height, width) if decoder is None else float(decoder)


@dataclass(frozen=True)
class NormSettings:
    """How the HR pass applies the scale-aware norm and the decoder guidance weight.

    Attributes:
        sigma_s: SAN scale; None = from the HR size, ``sqrt(log_576 N_H)`` (the paper, Eq. (4)).
        san: False skips SAN (u after the LayerNorm is used as is), for comparison only.
        decoder_strength: s on the decoder points; None = the 0.3 / 0.5 / 0.7 rule by size.
    """

    sigma_s: float | None = None
    san: bool = True
    decoder_strength: float | None = None


PAPER_NORM = NormSettings()


def inject_guidance(x: Tensor, u: Tensor, s: float = 1.0) -> Tensor:
    """``x + s * u`` as a new tensor (the outer residual of the fusion, Eq. (2)); x is untouched."""
    return x + s * u


def stage_c_latent_size(height: int, width: int, compression: float = 42.67) -> tuple[int, int]:
    """Stage-C latent (H_c, W_c) for an image of (height, width) px: ``ceil(px / 42.67)``.

    As the official ``inference/utils.py:28-38``.
    """
    return math.ceil(height / compression), math.ceil(width / compression)


def lr_pixel_size(height: int, width: int, std_size: int = 32) -> tuple[int, int]:
    """LR image size (h_lr, w_lr) px for the LR pass: ``32 * int(32 * sqrt(rho))`` etc.

    As the official ``inference/utils.py:28-38,128-130`` and ``inference/test_t2i.py:108-110``, with
    rho = height / width. A square target gives 1024^2 (24^2 stage-C latent).
    """
    rho = height / width
    return 32 * int(std_size * math.sqrt(rho)), 32 * int(std_size / math.sqrt(rho))


# The added module (official TransInr_withnorm, inr_fea_res_lite.py:289-397)


class GuidanceFusionModule(nn.Module):
    """One UltraPixel added module (official ``TransInr_withnorm``), for one injection point.

    UltraPixel (Ren et al., 2024), Fig. 4 (continuous upsampling) and Eqs. (2)-(4); the exact
    computation is the official ``modules/inr_fea_res_lite.py:289-397``:

    * LR tokens + token transformer -> implicit-function weights theta (:meth:`implicit_weights`);
    * INR on the HR grid + nearest-upsampled g -> g' (:meth:`upscale_guidance`);
    * ``u = MLP_fuse([g'; f])``, time modulation by e_t, LayerNorm, SAN (:meth:`fuse`).

    Args:
        config: module sizes (release defaults).
        generator: seeds the initialisation (the official distributions: Xavier-uniform
            linears / convs with zero bias, N(0, 1) tokens and positions, U(+-1/sqrt(d_in)) base
            INR weights). Skipped on the meta device. Real use loads the checkpoint instead.
    """

    def __init__(self, config: UltraPixelConfig = RELEASE_CONFIG, *, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        c = config
        n_wtokens = sum(c.inr_groups().values())
        # Key names below are the checkpoint's (ultrapixel_weights.module_state_shapes).
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

    # LR guidance -> implicit-function weights (Fig. 4)

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
        """g' at any (H_c, W_c): ``output_layer(INR(grid)) + nearest(g)`` (Fig. 4).

        Independent of f and of the step, so compute it once per target size.

        Returns:
            (B, C, H_c, W_c) upscaled guidance.
        """
        size = (int(size[0]), int(size[1]))
        theta = self.implicit_weights(g)
        z = inr_query(theta, size, self.config.n_freq, self.config.pe_sigma)  # (B, H_c, W_c, ch)
        g_near = F.interpolate(g, size=size, mode="nearest")  # (B, C, H_c, W_c)
        return self.output_layer(rearrange(z, "b h w c -> b c h w")) + g_near

    # Guidance fusion, time modulation, scale-aware norm (Eqs. (2)-(4))

    def fuse(self, f: Tensor, g_up: Tensor, t_emb: Tensor, norm: NormSettings = PAPER_NORM) -> Tensor:
        """u = SAN(LN(MLP_fuse([g'; f]) * (1 + a_t) + b_t)); the caller adds ``x + s * u``.

        Args:
            f: (B, C, H_c, W_c) HR feature (output of the AttnBlock).
            g_up: (B, C, H_c, W_c) upscaled guidance g'.
            t_emb: (B, time_dim) embedding of the HR step's r (:func:`.ultrapixel_norm.r_embedding`).
            norm: the SAN scale (or SAN off); the default is the paper's.
        """
        if g_up.shape != f.shape:
            raise ValueError(f"upscaled guidance {tuple(g_up.shape)} does not match the HR feature {tuple(f.shape)}")
        u = self.toout(torch.cat([g_up, f], dim=1).movedim(1, -1)).movedim(-1, 1)  # (B, C, H_c, W_c)
        u = self.mapp_t(u, t_emb)  # time modulation, Eq. (3)
        u = channel_layer_norm(u)
        if not norm.san:
            return u
        return self.hr_norm(u, norm.sigma_s)  # scale-aware normalization, Eq. (4)

    def forward(self, f: Tensor, g: Tensor, t_emb: Tensor, g_up: Tensor | None = None) -> Tensor:
        """u for HR feature f (B, C, H_c, W_c) and LR feature g (B, C, h, w); pass ``g_up`` to reuse g'."""
        if g_up is None:
            g_up = self.upscale_guidance(g, f.shape[-2:])
        return self.fuse(f, g_up, t_emb)


def build_ultrapixel_modules(
    config: UltraPixelConfig = RELEASE_CONFIG, *, generator: torch.Generator | None = None
) -> nn.ModuleDict:
    """Four freshly initialised modules keyed ``E0 E1 D0 D1`` (seeded by one generator, in that order)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    return nn.ModuleDict({p: GuidanceFusionModule(config, generator=gen) for p in INJECTION_POINTS})
