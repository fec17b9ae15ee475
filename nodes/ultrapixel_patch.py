"""UltraPixel patching of a stage-C MODEL: the AttnBlock wrapper, capture and injection hooks.

UltraPixel (Ren et al., 2024, arXiv:2407.02158), Sec. 3 and Fig. 3. The four injection points sit
right after the first AttnBlock of each stage-C level (``down_blocks.0.2``, ``down_blocks.1.2``,
``up_blocks.0.2``, ``up_blocks.1.2``), as in the official code (catcathh/UltraPixel@e85d3bc
``modules/model_4stage_lite.py:287-298,341-365``). Both the capture (LR pass) and the injection
(HR pass) are object patches on a clone of the stage-C MODEL with :class:`UltraPixelAttnBlock`, a
subclass of ComfyUI's cascade ``AttnBlock`` (StageC dispatches on ``isinstance``) that *shares*
the original block's submodules, so weight patches (LoRA) keep their key names. The module math
lives in ``kernels/ultrapixel*.py``; nothing here keeps state outside the clone it patches.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import comfy.model_management
import comfy.patcher_extension
import torch
from comfy.ldm.cascade.common import AttnBlock
from comfy.ldm.cascade.stage_c import StageC
from comfy_api.latest import io

from ..kernels.ultrapixel import PAPER_NORM, GuidanceFusionModule, NormSettings, guide_scale, inject_guidance
from ..kernels.ultrapixel_config import INJECTION_POINTS, STAGE_C_BLOCKS
from ..kernels.ultrapixel_norm import r_embedding
from ..kernels.ultrapixel_sampling import cfg_rescale
from .ultrapixel_loader import UltraPixelModel

if TYPE_CHECKING:
    from comfy.model_patcher import ModelPatcher

ULTRAPIXEL_GUIDANCE = io.Custom("ULTRAPIXEL_GUIDANCE")
ULTRAPIXEL_NORM = io.Custom("ULTRAPIXEL_NORM")  # a kernels.ultrapixel.NormSettings
PATCH_KEYS = {p: f"diffusion_model.{name}" for p, name in STAGE_C_BLOCKS.items()}
WRAPPER_KEY = "ultrares_ultrapixel"


@dataclasses.dataclass(frozen=True, eq=False)
class LRFeatures:
    """LR stage-C features at the four points (cond half, last LR step) and, optionally, g'.

    The value of an ``ULTRAPIXEL_GUIDANCE`` socket.

    features: point -> (B, C, h_lr, w_lr) float32 on the intermediate device.
    sigma: the sigma at which the features were captured (the last LR step).
    upscaled: point -> (B, C, H_c, W_c) g' for ``upscaled_size``, computed by ``upscaled_by``.
    """

    features: dict[str, torch.Tensor]
    sigma: float
    lr_latent_size: tuple[int, int]
    upscaled: dict[str, torch.Tensor] | None = None
    upscaled_size: tuple[int, int] | None = None
    upscaled_by: UltraPixelModel | None = None


class Hook(Protocol):
    def __call__(self, point: str, out: torch.Tensor, transformer_options: dict) -> torch.Tensor: ...


# Model checks and the AttnBlock wrapper


def stage_c_channels(model: ModelPatcher) -> dict[str, int]:
    """Channels at the four points of a Stable Cascade stage-C MODEL; ValueError names the input otherwise."""
    diffusion_model = model.get_model_object("diffusion_model")
    if not isinstance(diffusion_model, StageC):
        raise ValueError(f"model: UltraPixel needs a Stable Cascade stage C model, got {type(diffusion_model).__name__}.")
    channels = {}
    for point, key in PATCH_KEYS.items():
        try:
            block = base_block(model.get_model_object(key))
        except (AttributeError, IndexError) as e:
            raise ValueError(f"model: stage C has no block {key[len('diffusion_model.'):]} ({point}); "
                             "UltraPixel needs at least one CTA group per level.") from e
        if not isinstance(block, AttnBlock):
            raise ValueError(f"model: {key[len('diffusion_model.'):]} is a {type(block).__name__}, "
                             "not an AttnBlock; UltraPixel needs level_config 'CTA'.")
        channels[point] = int(block.kv_mapper[1].weight.shape[0])
    return channels


def check_compatible(model: ModelPatcher, up_model: UltraPixelModel | None = None,
                     guidance: LRFeatures | None = None) -> None:
    """ValueError naming the input when the stage C, the modules and the features do not fit together."""
    channels = stage_c_channels(model)
    if up_model is not None and up_model.channels() != channels:
        raise ValueError(f"ultrapixel_model: {up_model.name} expects channels {up_model.channels()} at E0/E1/D0/D1, "
                         f"the stage-C model has {channels} (UltraPixel is trained for the 3.6B stage C).")
    if guidance is not None:
        got = {p: int(g.shape[1]) for p, g in guidance.features.items()}
        if got != channels:
            raise ValueError(f"guidance: captured with channels {got}, the stage-C model has {channels}.")


def base_block(block: AttnBlock) -> AttnBlock:
    """The stock AttnBlock behind an UltraPixel wrapper (so patches never nest)."""
    return block.base if isinstance(block, UltraPixelAttnBlock) else block


class UltraPixelAttnBlock(AttnBlock):
    """A stage-C AttnBlock that runs the stock block, then a capture or injection hook.

    Subclasses ComfyUI's ``AttnBlock`` without creating parameters: ``norm``, ``attention`` and
    ``kv_mapper`` are the wrapped block's own modules, so state-dict names (and LoRA patches,
    ControlNet, weight offloading) are unchanged. The hook is kept outside ``nn.Module``
    registration so the guidance modules are never mistaken for stage-C weights.
    """

    def __init__(self, base: AttnBlock, point: str, hook: Hook):
        torch.nn.Module.__init__(self)
        self.self_attn = base.self_attn
        self.norm = base.norm
        self.attention = base.attention
        self.kv_mapper = base.kv_mapper
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "point", point)
        object.__setattr__(self, "hook", hook)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, transformer_options: dict | None = None) -> torch.Tensor:
        transformer_options = {} if transformer_options is None else transformer_options
        out = super().forward(x, kv, transformer_options=transformer_options)
        return self.hook(self.point, out, transformer_options)


def patched_clone(model: ModelPatcher, hook: Hook) -> ModelPatcher:
    """A clone of ``model`` with the four AttnBlocks wrapped to call ``hook``."""
    clone = model.clone()
    for point, key in PATCH_KEYS.items():
        clone.add_object_patch(key, UltraPixelAttnBlock(base_block(model.get_model_object(key)), point, hook))
    return clone


# LR pass: capture


def cond_chunks(x: torch.Tensor, transformer_options: dict) -> list[torch.Tensor]:
    """The conditional (cond_or_uncond == 0) chunks of a CFG batch; all of x when unknown."""
    flags = transformer_options.get("cond_or_uncond")
    if not flags:
        return [x]
    return [c for c, flag in zip(x.chunk(len(flags)), flags) if flag == 0]


class CaptureHook:
    """LR pass: keeps the cond half of every call, so the last step's features remain.

    As the official ``gdf/__init__.py:135-165`` (features of the conditional half at the last LR step).
    """

    def __init__(self) -> None:
        self.features: dict[str, torch.Tensor] = {}
        self.sigmas: dict[str, float] = {}

    def __call__(self, point: str, out: torch.Tensor, transformer_options: dict) -> torch.Tensor:
        chunks = cond_chunks(out, transformer_options)
        if chunks:
            # With several cond entries (area / multi-prompt), the first one is the guidance.
            self.features[point] = chunks[0].detach().clone()
            sigmas = transformer_options.get("sigmas")
            self.sigmas[point] = float(sigmas.max()) if sigmas is not None else float("nan")
        return out


def capture_clone(model: ModelPatcher) -> tuple[ModelPatcher, CaptureHook]:
    """(clone, hook): the clone records the four LR features of its cond half on every call."""
    hook = CaptureHook()
    return patched_clone(model, hook), hook


def features_from_capture(hook: CaptureHook, lr_latent_size: tuple[int, int]) -> LRFeatures:
    """The captured features as :class:`LRFeatures` on the intermediate device (float32)."""
    missing = [p for p in INJECTION_POINTS if p not in hook.features]
    if missing:
        raise RuntimeError(f"UltraPixel: the LR pass never reached point(s) {missing} with a conditional batch.")
    device = comfy.model_management.intermediate_device()
    features = {p: hook.features[p].to(device=device, dtype=torch.float32) for p in INJECTION_POINTS}
    return LRFeatures(features=features, sigma=hook.sigmas["E0"], lr_latent_size=tuple(lr_latent_size))


# HR pass: injection


class InjectHook:
    """HR pass: ``x + s * u(x, g', e_r)`` at each point, per-clone caches released after a run.

    As the official ``modules/model_4stage_lite.py:341-365`` (``x += s * agg_net(x, g, r)``). r is
    StageC's time input, ``model_sampling.timestep(sigma)``; StableCascadeSampling's inverse does
    not depend on shift, so the sampling object captured at patch time gives the same r as one
    patched later (e.g. by ModelSamplingStableCascade).
    """

    def __init__(self, up_model: UltraPixelModel, guidance: LRFeatures, model_sampling: Any,
                 norm: NormSettings = PAPER_NORM):
        self.up_model = up_model
        self.guidance = guidance
        self.model_sampling = model_sampling
        self.norm = norm
        self.modules: dict[tuple, GuidanceFusionModule] = {}
        self.g_up: dict[tuple, torch.Tensor] = {}

    def release(self) -> None:
        self.modules.clear()
        self.g_up.clear()

    def module(self, point: str, device: torch.device, dtype: torch.dtype) -> GuidanceFusionModule:
        key = (point, device, dtype)
        if key not in self.modules:
            # A per-run copy: the loaded ULTRAPIXEL_MODEL is shared by other nodes and stays untouched.
            self.modules[key] = copy.deepcopy(self.up_model.modules[point]).to(device=device, dtype=dtype)
        return self.modules[key]

    def upscaled(self, point: str, size: tuple[int, int], module: GuidanceFusionModule, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
        key = (point, size, device, dtype)
        if key not in self.g_up:
            gd = self.guidance
            if gd.upscaled is not None and gd.upscaled_size == size and gd.upscaled_by is self.up_model:
                g_up = gd.upscaled[point]
            else:  # INR once per target size, not per step (the upscale is independent of f and r)
                with torch.no_grad():
                    g_up = module.upscale_guidance(gd.features[point].to(device=device, dtype=dtype), size)
            self.g_up[key] = g_up.to(device=device, dtype=dtype)
        return self.g_up[key]

    def __call__(self, point: str, out: torch.Tensor, transformer_options: dict) -> torch.Tensor:
        size = (int(out.shape[-2]), int(out.shape[-1]))
        dtype = self.up_model.dtype or out.dtype
        module = self.module(point, out.device, dtype)
        g_up = self.upscaled(point, size, module, out.device, dtype)
        flags = transformer_options.get("cond_or_uncond") or [0]
        per_chunk = out.shape[0] // len(flags)
        if g_up.shape[0] not in (1, per_chunk):
            raise ValueError(f"UltraPixel guidance has batch {g_up.shape[0]}, the HR batch is {per_chunk}; "
                             "use the same batch size for the LR and HR passes.")
        g_full = g_up.expand(per_chunk, -1, -1, -1).repeat(len(flags), 1, 1, 1)  # same g for cond and uncond
        sigmas = transformer_options.get("sigmas")
        if sigmas is None:
            raise RuntimeError("UltraPixel: the sampler did not pass sigmas in transformer_options.")
        # ComfyUI passes one sigma per sample of x, before the cond/uncond chunks are stacked.
        r = self.model_sampling.timestep(sigmas.to(out.device).float().reshape(-1))
        r = r.expand(out.shape[0]) if r.numel() == 1 else r.repeat(out.shape[0] // r.numel())
        t_emb = r_embedding(r, module.config.time_dim)
        with torch.no_grad():
            u = module.fuse(out.to(dtype), g_full, t_emb.to(dtype), self.norm).to(out.dtype)
        return inject_guidance(out, u, guide_scale(point, *size, self.norm.decoder_strength))


def rescale_cfg_function(rho: float) -> Callable[[dict], torch.Tensor]:
    """``sampler_cfg_function`` applying the official cfg_rho rescale (``gdf/__init__.py``) on sigma*eps."""

    def cfg_function(args: dict) -> torch.Tensor:
        return cfg_rescale(args["cond"], args["uncond"], float(args["cond_scale"]), rho)

    return cfg_function


def inject_clone(model: ModelPatcher, up_model: UltraPixelModel, guidance: LRFeatures, rescale: float,
                 norm: NormSettings | None = None) -> tuple[ModelPatcher, InjectHook]:
    """(clone, hook): the HR-pass model with the four injection patches (and the CFG rescale ``rescale``);
    ``norm`` None is the paper's scale-aware norm and decoder weight."""
    hook = InjectHook(up_model, guidance, model.get_model_object("model_sampling"), norm or PAPER_NORM)
    clone = patched_clone(model, hook)
    if rescale > 0.0:
        clone.set_model_sampler_cfg_function(rescale_cfg_function(rescale))

    def release_after_run(executor: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return executor(*args, **kwargs)
        finally:
            hook.release()

    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, release_after_run)
    return clone, hook
