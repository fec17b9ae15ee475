"""UltraPixel sizes and names: the module config, the four injection points, checkpoint prefixes.

UltraPixel (Ren et al., 2024, "UltraPixel: Advancing Ultra-High-Resolution Image Synthesis to New
Peaks", NeurIPS 2024, arXiv:2407.02158). The values are those of the official code
(catcathh/UltraPixel@e85d3bc): the module sizes are the ``TransInr_withnorm(...)`` arguments in
``modules/model_4stage_lite.py:188-196``, the injection points the first AttnBlock of each
stage-C level (``modules/model_4stage_lite.py:287-298,341-365``), and the checkpoint prefixes the
``nn.ModuleList([64 x Null_Model, agg_net, agg_net_up])`` saved in ``train/train_t2i.py:262-281``.

Leaf module of the UltraPixel kernels: imports nothing of the pack, nothing of ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass

INJECTION_POINTS: tuple[str, ...] = ("E0", "E1", "D0", "D1")

STAGE_C_BLOCKS: dict[str, str] = {  # AttnBlock after which u is added (model_4stage_lite.py:287-298)
    "E0": "down_blocks.0.2",
    "E1": "down_blocks.1.2",
    "D0": "up_blocks.0.2",
    "D1": "up_blocks.1.2",
}

# Released keys are ``module.{64|65}.{0|1}.<local key>``: ModuleList([64 x GRN stand-ins, agg_net,
# agg_net_up]) saved from DDP (train/train_t2i.py:262-281). ``module.`` is stripped by the loader.
CHECKPOINT_PREFIXES: dict[str, str] = {"E0": "64.0.", "E1": "64.1.", "D0": "65.0.", "D1": "65.1."}

N_BASE_TOKENS = 24 * 24  # N_L: stage-C token count of the 1024^2 base resolution

RELEASE_HEAD_WIDTH = 32  # 32 heads x 32 dims in the release; the head count is not stored in the file


@dataclass(frozen=True)
class UltraPixelConfig:
    """Sizes of one added module; defaults are the release (official ``TransInr_withnorm`` args).

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


# The small configuration of our parity test against the official module (tests/kernels/test_ultrapixel.py).
RELEASE_CONFIG = UltraPixelConfig()  # the sizes of the released modules
SMALL_PARITY_CONFIG = UltraPixelConfig(ind=64, ch=32, n_head=4, n_groups=8, f_dim=32)
