"""UltraPixel step-wise nodes: LR guidance capture, INR upscale, and the stage-C patch.

UltraPixel (Ren et al., 2024), spec §3.2-§3.4 and §3.7. The four injection points sit right
after the first AttnBlock of each stage-C level (``down_blocks.0.2``, ``down_blocks.1.2``,
``up_blocks.0.2``, ``up_blocks.1.2``). Both the capture (LR pass) and the injection (HR pass) are
object patches on a clone of the stage-C MODEL with :class:`UltraPixelAttnBlock`, a subclass of
ComfyUI's cascade ``AttnBlock`` (StageC dispatches on ``isinstance``) that *shares* the original
block's submodules, so weight patches (LoRA) keep their key names. The module math lives in
``kernels/ultrapixel*.py``; nothing here keeps state outside the clone it patches.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
from comfy_api.latest import io

from ..kernels import ultrapixel as up
from ..kernels import ultrapixel_runtime as rt
from .ultrapixel_loader import ULTRAPIXEL_MODEL, UltraPixelModel

ULTRAPIXEL_GUIDANCE = io.Custom("ULTRAPIXEL_GUIDANCE")
PATCH_KEYS = {p: f"diffusion_model.{name}" for p, name in up.STAGE_C_BLOCKS.items()}
WRAPPER_KEY = "ultrares_ultrapixel"
MIN_RES = 64  # tests and previews; UltraPixel targets 2048 px and above
MAX_RES = 16384


@dataclasses.dataclass(frozen=True, eq=False)
class UltraPixelGuidanceData:
    """LR stage-C features at the four points (cond half, last LR step) and, optionally, g'.

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


# Model checks and the AttnBlock wrapper


def attn_block_class():
    from comfy.ldm.cascade.common import AttnBlock

    return AttnBlock


def stage_c_channels(model) -> dict[str, int]:
    """Channels at the four points of a Stable Cascade stage-C MODEL; ValueError names the input otherwise."""
    from comfy.ldm.cascade.stage_c import StageC

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
        if not isinstance(block, attn_block_class()):
            raise ValueError(f"model: {key[len('diffusion_model.'):]} is a {type(block).__name__}, "
                             "not an AttnBlock; UltraPixel needs level_config 'CTA'.")
        channels[point] = int(block.kv_mapper[1].weight.shape[0])
    return channels


def check_compatible(model, up_model: UltraPixelModel | None = None, guidance: UltraPixelGuidanceData | None = None) -> None:
    channels = stage_c_channels(model)
    if up_model is not None and up_model.channels() != channels:
        raise ValueError(f"ultrapixel_model: {up_model.name} expects channels {up_model.channels()} at E0/E1/D0/D1, "
                         f"the stage-C model has {channels} (UltraPixel is trained for the 3.6B stage C).")
    if guidance is not None:
        got = {p: int(g.shape[1]) for p, g in guidance.features.items()}
        if got != channels:
            raise ValueError(f"guidance: captured with channels {got}, the stage-C model has {channels}.")


def base_block(block):
    """The stock AttnBlock behind an UltraPixel wrapper (so patches never nest)."""
    return block.base if isinstance(block, UltraPixelAttnBlock) else block


class UltraPixelAttnBlock(attn_block_class()):
    """A stage-C AttnBlock that runs the stock block, then a capture or injection hook.

    Subclasses ComfyUI's ``AttnBlock`` without creating parameters: ``norm``, ``attention`` and
    ``kv_mapper`` are the wrapped block's own modules, so state-dict names (and LoRA patches,
    ControlNet, weight offloading) are unchanged. The hook is kept outside ``nn.Module``
    registration so the guidance modules are never mistaken for stage-C weights.
    """

    def __init__(self, base, point: str, hook):
        torch.nn.Module.__init__(self)
        self.self_attn = base.self_attn
        self.norm = base.norm
        self.attention = base.attention
        self.kv_mapper = base.kv_mapper
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "point", point)
        object.__setattr__(self, "hook", hook)

    def forward(self, x, kv, transformer_options={}):
        out = super().forward(x, kv, transformer_options=transformer_options)
        return self.hook(self.point, out, transformer_options)


def cond_chunks(x: torch.Tensor, transformer_options: dict) -> list[torch.Tensor]:
    """The conditional (cond_or_uncond == 0) chunks of a CFG batch; all of x when unknown."""
    flags = transformer_options.get("cond_or_uncond")
    if not flags:
        return [x]
    return [c for c, flag in zip(x.chunk(len(flags)), flags) if flag == 0]


class CaptureHook:
    """LR pass: keeps the cond half of every call, so the last step's features remain (§3.2 step 3)."""

    def __init__(self):
        self.features: dict[str, torch.Tensor] = {}
        self.sigmas: dict[str, float] = {}

    def __call__(self, point, out, transformer_options):
        chunks = cond_chunks(out, transformer_options)
        if chunks:
            # With several cond entries (area / multi-prompt), the first one is the guidance.
            self.features[point] = chunks[0].detach().clone()
            sigmas = transformer_options.get("sigmas")
            self.sigmas[point] = float(sigmas.max()) if sigmas is not None else float("nan")
        return out


class InjectHook:
    """HR pass: ``x + s * u(x, g', e_r)`` at each point (§3.4), per-clone caches released after a run.

    r is StageC's time input, ``model_sampling.timestep(sigma)``; StableCascadeSampling's inverse
    does not depend on shift, so the sampling object captured at patch time gives the same r as
    one patched later (e.g. by ModelSamplingStableCascade).
    """

    def __init__(self, up_model: UltraPixelModel, guidance: UltraPixelGuidanceData, model_sampling):
        self.up_model = up_model
        self.guidance = guidance
        self.model_sampling = model_sampling
        self.modules: dict = {}
        self.g_up: dict = {}

    def release(self) -> None:
        self.modules.clear()
        self.g_up.clear()

    def module(self, point: str, device, dtype) -> up.UltraPixelGuidance:
        key = (point, device, dtype)
        if key not in self.modules:
            # A per-run copy: the loaded ULTRAPIXEL_MODEL is shared by other nodes and stays untouched.
            self.modules[key] = copy.deepcopy(self.up_model.modules[point]).to(device=device, dtype=dtype)
        return self.modules[key]

    def upscaled(self, point, size, module, device, dtype) -> torch.Tensor:
        key = (point, size, device, dtype)
        if key not in self.g_up:
            gd = self.guidance
            if gd.upscaled is not None and gd.upscaled_size == size and gd.upscaled_by is self.up_model:
                g_up = gd.upscaled[point]
            else:  # INR once per target size, not per step (§3.5 step 6 is independent of f and r)
                with torch.no_grad():
                    g_up = module.upscale_guidance(gd.features[point].to(device=device, dtype=dtype), size)
            self.g_up[key] = g_up.to(device=device, dtype=dtype)
        return self.g_up[key]

    def __call__(self, point, out, transformer_options):
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
        r = self.model_sampling.timestep(sigmas.to(out.device).float()).expand(out.shape[0])
        t_emb = up.r_embedding(r, module.config.time_dim)
        with torch.no_grad():
            u = module.fuse(out.to(dtype), g_full, t_emb.to(dtype)).to(out.dtype)
        return up.inject_guidance(out, u, up.guide_scale(point, *size))


# Patching


def capture_clone(model):
    """(clone, hook): the clone records the four LR features of its cond half on every call."""
    hook = CaptureHook()
    clone = model.clone()
    for point, key in PATCH_KEYS.items():
        clone.add_object_patch(key, UltraPixelAttnBlock(base_block(model.get_model_object(key)), point, hook))
    return clone, hook


def guidance_from_capture(hook: CaptureHook, lr_latent_size) -> UltraPixelGuidanceData:
    import comfy.model_management

    missing = [p for p in up.INJECTION_POINTS if p not in hook.features]
    if missing:
        raise RuntimeError(f"UltraPixel: the LR pass never reached point(s) {missing} with a conditional batch.")
    device = comfy.model_management.intermediate_device()
    features = {p: hook.features[p].to(device=device, dtype=torch.float32) for p in up.INJECTION_POINTS}
    return UltraPixelGuidanceData(features=features, sigma=hook.sigmas["E0"], lr_latent_size=tuple(lr_latent_size))


def rescale_cfg_function(rho: float):
    """``sampler_cfg_function`` applying the official cfg_rho rescale (§3.3) on sigma*eps."""

    def cfg_function(args):
        return rt.cfg_rescale(args["cond"], args["uncond"], float(args["cond_scale"]), rho)

    return cfg_function


def inject_clone(model, up_model: UltraPixelModel, guidance: UltraPixelGuidanceData, cfg_rescale: float):
    """(clone, hook): the HR-pass model with the four injection patches (and the CFG rescale)."""
    import comfy.patcher_extension as pe

    hook = InjectHook(up_model, guidance, model.get_model_object("model_sampling"))
    clone = model.clone()
    for point, key in PATCH_KEYS.items():
        clone.add_object_patch(key, UltraPixelAttnBlock(base_block(model.get_model_object(key)), point, hook))
    if cfg_rescale > 0.0:
        clone.set_model_sampler_cfg_function(rescale_cfg_function(cfg_rescale))

    def release_after_run(executor, *args, **kwargs):
        try:
            return executor(*args, **kwargs)
        finally:
            hook.release()

    clone.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, release_after_run)
    return clone, hook


def with_shift(model, shift: float):
    """The model with StableCascadeSampling at ``shift`` (as the stock ModelSamplingStableCascade does).

    Returns ``model`` itself when it already samples with that shift; otherwise a clone.
    """
    import types

    import comfy.model_sampling

    current = model.get_model_object("model_sampling")
    if isinstance(current, comfy.model_sampling.StableCascadeSampling) and abs(float(current.shift) - shift) < 1e-9:
        return model

    class ModelSamplingUltraPixel(comfy.model_sampling.StableCascadeSampling, comfy.model_sampling.EPS):
        pass

    # Built directly at ``shift`` (its sigma table takes 10k evaluations; build it once).
    sampling = ModelSamplingUltraPixel(types.SimpleNamespace(sampling_settings={"shift": float(shift)}))
    clone = model.clone()
    clone.add_object_patch("model_sampling", sampling)
    return clone


# Sampling helpers shared with the all-in-one node


def official_sigmas(model, steps: int) -> torch.Tensor:
    """sigma(t_i) for ``t = linspace(1, 0, steps + 1)``, last one 0 (§3.3: the last step returns x0)."""
    sampling = model.get_model_object("model_sampling")
    t = rt.time_grid(steps)[:-1].float()
    return torch.cat([sampling.sigma(t).float().reshape(-1), torch.zeros(1)])


def pass_noise(seed: int, hr_shape, lr_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial noises from one seeded generator, HR first then LR, as the official script draws them."""
    gen = torch.Generator().manual_seed(int(seed))
    hr = torch.randn(hr_shape, generator=gen)
    lr = torch.randn(lr_shape, generator=gen)
    return hr, lr


class Progress:
    """One ProgressBar (with previews) over several sampling passes; checks for interruption."""

    def __init__(self, model, total: int):
        import comfy.utils
        import latent_preview

        self.total = total
        self.done = 0
        self.pbar = comfy.utils.ProgressBar(total)
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def callback(self):
        import comfy.model_management

        offset = self.done

        def cb(step, x0, x, total_steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            preview = self.previewer.decode_latent_to_preview_image("JPEG", x0) if self.previewer else None
            self.done = offset + step + 1
            self.pbar.update_absolute(self.done, self.total, preview)

        return cb


def sample_pass(model, noise, positive, negative, cfg, sigmas, latent, seed, progress: Progress | None):
    import comfy.model_management
    import comfy.sample
    import comfy.samplers

    comfy.model_management.throw_exception_if_processing_interrupted()
    return comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.sampler_object("ddpm"), sigmas,
                                      positive, negative, latent,
                                      callback=progress.callback() if progress else None,
                                      disable_pbar=True, seed=int(seed))


def stage_b_latent(batch: int, width: int, height: int) -> torch.Tensor:
    """Empty stage-B latent ``(B, 4, ceil(H/4), ceil(W/4))`` (§3.2; stage A upsamples 4x)."""
    return torch.zeros(batch, 4, -(-height // 4), -(-width // 4))


def validate_size(width: int, height: int) -> None:
    for name, v in (("width", width), ("height", height)):
        if not MIN_RES <= v <= MAX_RES:
            raise ValueError(f"{name}: {v} px is outside {MIN_RES}..{MAX_RES}.")
    lr_h, lr_w = up.stage_c_latent_size(*up.lr_pixel_size(height, width))
    if lr_h * lr_w > 32 * 32 or min(lr_h, lr_w) < 1:
        raise ValueError(f"width/height: aspect ratio {width}:{height} is too extreme for UltraPixel "
                         f"(LR latent {lr_h}x{lr_w} exceeds the 32² position table).")


def lr_pass(model, positive, negative, width, height, batch, seed, steps, cfg, cfg_rescale, shift,
            lr_latent=None, progress: Progress | None = None):
    """Run the LR pass and capture the guidance. Returns (guidance, LR x0 latent, HR noise).

    Text-to-image: full ``steps``-step DDPM sampling at the spec's LR size (§3.2 step 3).
    With ``lr_latent`` (img2img): the latent is re-noised to the last LR step's sigma and one
    step is run, the training-time procedure (§3.8), so the features describe that latent.
    """
    lr_c = up.stage_c_latent_size(*up.lr_pixel_size(height, width))
    hr_c = up.stage_c_latent_size(height, width)
    if lr_latent is not None:
        lr_samples = lr_latent["samples"].float()
        batch = lr_samples.shape[0]
        if tuple(lr_samples.shape[-2:]) != lr_c:
            # The position table holds at most 32^2 LR tokens: bring any source to the spec's LR size.
            lr_samples = torch.nn.functional.interpolate(lr_samples, size=lr_c, mode="bilinear", align_corners=False)
    hr_noise, lr_noise = pass_noise(seed, (batch, 16, *hr_c), (batch, 16, *lr_c))
    sampled = with_shift(model, shift)
    clone, hook = capture_clone(sampled)
    if cfg_rescale > 0.0:
        clone.set_model_sampler_cfg_function(rescale_cfg_function(cfg_rescale))
    sigmas = official_sigmas(sampled, steps)
    if lr_latent is None:
        latent = torch.zeros_like(lr_noise)
    else:
        sigmas, latent = sigmas[-2:].clone(), lr_samples
        if progress is not None:  # one step instead of `steps`: keep the bar's total honest
            progress.done += steps - 1
    x0 = sample_pass(clone, lr_noise, positive, negative, cfg, sigmas, latent, seed, progress)
    guidance = guidance_from_capture(hook, lr_c)
    del clone, hook
    return guidance, x0, hr_noise


# Nodes

SIZE_TIP = ("Target image {} in px (UltraPixel was trained up to 4096-6144 px; stage-C latent = "
            "ceil(px / 42.67), stage B/A decode to this size).")


def sampling_inputs():
    return [
        io.Conditioning.Input("positive", tooltip="Stable Cascade text conditioning (CLIP bigG) for stage C."),
        io.Conditioning.Input("negative", tooltip="Negative conditioning. The paper uses the empty prompt \"\"."),
        io.Int.Input("width", default=2048, min=MIN_RES, max=MAX_RES, step=8, tooltip=SIZE_TIP.format("width")),
        io.Int.Input("height", default=2048, min=MIN_RES, max=MAX_RES, step=8, tooltip=SIZE_TIP.format("height")),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of the initial noises (HR then LR, one generator) and of the DDPM noise."),
        io.Int.Input("steps", default=20, min=1, max=200,
                     tooltip="Stage-C steps per pass (paper: 20, on the grid t = linspace(1, 0, steps+1))."),
        io.Float.Input("cfg", default=4.0, min=0.0, max=30.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance scale (paper: 4). ComfyUI's Stable Cascade examples use 4 too."),
        io.Float.Input("cfg_rescale", default=0.7, min=0.0, max=1.0, step=0.01,
                       tooltip="cfg_rho: blend of the std-rescaled CFG result (paper: 0.7; 0 = plain CFG)."),
        io.Float.Input("shift", default=1.0, min=0.1, max=10.0, step=0.01,
                       tooltip="Noise-schedule shift (paper: 1). ComfyUI's stage-C default is 2."),
    ]


class UltraPixelLRGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_UltraPixelLRGuidance",
            display_name="UltraPixel LR Guidance",
            category="UltraRes/UltraPixel",
            description=(
                "UltraPixel (Ren et al., 2024) low-resolution pass: samples stage C at the LR size "
                "UltraPixel uses for the target aspect ratio (1024² for square) with DDPM on the "
                "paper's time grid, and captures the stage-C features after the first attention "
                "block of each level from the conditional half at the last step (t = 0.05). Feed "
                "the guidance to UltraPixel INR Upscale / UltraPixel Apply for the high-resolution "
                "pass. Optional lr_latent (a stage-C latent, e.g. from StableCascade_StageC_VAEEncode) "
                "replaces sampling by one re-noised step (img2img). Models: Stable Cascade stage C "
                "3.6B. Cost: one stage-C run at 1024² (at most about 1/4 of a 2048² run)."),
            inputs=[io.Model.Input("model", tooltip="Stable Cascade stage-C model (unpatched or LoRA'd)."),
                    *sampling_inputs(),
                    io.Latent.Input("lr_latent", optional=True,
                                    tooltip="Optional stage-C latent used as the LR image (img2img); resized to the LR latent size.")],
            outputs=[ULTRAPIXEL_GUIDANCE.Output(display_name="guidance",
                                                tooltip="LR features g at E0, E1, D0, D1 (cond half, last LR step)."),
                     io.Latent.Output(display_name="lr_latent",
                                      tooltip="The LR stage-C result (x0 of the last step), for previews or a stock stage B.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, width, height, seed, steps, cfg, cfg_rescale, shift,
                lr_latent=None) -> io.NodeOutput:
        validate_size(width, height)
        check_compatible(model)
        progress = Progress(model, steps)
        guidance, x0, _ = lr_pass(model, positive, negative, width, height, 1, seed, steps, cfg, cfg_rescale,
                                  shift, lr_latent=lr_latent, progress=progress)
        return io.NodeOutput(guidance, {"samples": x0})


class UltraPixelINRUpscale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_UltraPixelINRUpscale",
            display_name="UltraPixel INR Upscale",
            category="UltraRes/UltraPixel",
            description=(
                "UltraPixel (Ren et al., 2024) continuous upsampling: the implicit neural "
                "representation of each guidance module turns the LR features g into g' at the "
                "target stage-C size (Fig. 4), once per size instead of once per step. Outputs the "
                "upscaled guidance and an empty stage-C latent of UltraPixel's size "
                "ceil(px / 42.67) (ComfyUI's empty latent uses px // 42) for a stock sampler after "
                "UltraPixel Apply. Models: UltraPixel weights for Stable Cascade stage C 3.6B. Cost: "
                "milliseconds to a second (one small MLP per HR position)."),
            inputs=[
                ULTRAPIXEL_MODEL.Input("ultrapixel_model", tooltip="From UltraPixel Loader."),
                ULTRAPIXEL_GUIDANCE.Input("guidance", tooltip="From UltraPixel LR Guidance."),
                io.Int.Input("width", default=2048, min=MIN_RES, max=MAX_RES, step=8, tooltip=SIZE_TIP.format("width")),
                io.Int.Input("height", default=2048, min=MIN_RES, max=MAX_RES, step=8, tooltip=SIZE_TIP.format("height")),
            ],
            outputs=[ULTRAPIXEL_GUIDANCE.Output(display_name="guidance", tooltip="Guidance with g' at the target size."),
                     io.Latent.Output(display_name="stage_c_latent",
                                      tooltip="Empty stage-C latent (B, 16, ceil(H/42.67), ceil(W/42.67)) for the HR pass."),
                     io.Latent.Output(display_name="stage_b_latent",
                                      tooltip="Empty stage-B latent (B, 4, ceil(H/4), ceil(W/4)) for the stage-B KSampler.")],
        )

    @classmethod
    def execute(cls, ultrapixel_model, guidance, width, height) -> io.NodeOutput:
        import comfy.model_management

        validate_size(width, height)
        if {p: int(g.shape[1]) for p, g in guidance.features.items()} != ultrapixel_model.channels():
            raise ValueError("guidance: captured on a stage C whose channels do not match ultrapixel_model.")
        size = up.stage_c_latent_size(height, width)
        device = comfy.model_management.get_torch_device()
        dtype = ultrapixel_model.dtype or comfy.model_management.unet_dtype(device)
        out = {}
        for point in up.INJECTION_POINTS:
            comfy.model_management.throw_exception_if_processing_interrupted()
            module = copy.deepcopy(ultrapixel_model.modules[point]).to(device=device, dtype=dtype)
            with torch.no_grad():
                g = guidance.features[point].to(device=device, dtype=dtype)
                out[point] = module.upscale_guidance(g, size).to(comfy.model_management.intermediate_device())
            del module
        upscaled = dataclasses.replace(guidance, upscaled=out, upscaled_size=size, upscaled_by=ultrapixel_model)
        batch = next(iter(guidance.features.values())).shape[0]
        return io.NodeOutput(upscaled, {"samples": torch.zeros(batch, 16, *size)},
                             {"samples": stage_b_latent(batch, width, height)})


class UltraPixelApply(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_UltraPixelApply",
            display_name="UltraPixel Apply",
            category="UltraRes/UltraPixel",
            description=(
                "UltraPixel (Ren et al., 2024) high-resolution pass as a model patch: after the "
                "first attention block of each stage-C level, fuses the upscaled LR guidance g' "
                "with the HR features, modulated by the current step's time and a scale-aware "
                "norm, and adds it (decoder weight 0.3 / 0.5 / 0.7 below 72² / 96² / from 96² "
                "stage-C tokens). Works with any ComfyUI sampler, LoRA and negative prompts; the "
                "optional CFG rescale is the paper's cfg_rho. Use it on the stage-C model of the HR "
                "pass (latent from UltraPixel INR Upscale). Models: Stable Cascade stage C 3.6B. "
                "Cost: four small modules per step (well under 1% of the FLOPs of a 3.6B stage-C step)."),
            inputs=[
                io.Model.Input("model", tooltip="Stable Cascade stage-C model to patch (a clone is patched)."),
                ULTRAPIXEL_MODEL.Input("ultrapixel_model", tooltip="From UltraPixel Loader."),
                ULTRAPIXEL_GUIDANCE.Input("guidance", tooltip="From UltraPixel LR Guidance (optionally through INR Upscale)."),
                io.Float.Input("cfg_rescale", default=0.7, min=0.0, max=1.0, step=0.01,
                               tooltip="cfg_rho of the paper's CFG rescale, installed as the sampler CFG function (0 = stock CFG)."),
            ],
            outputs=[io.Model.Output(tooltip="Stage C with UltraPixel guidance at E0, E1, D0, D1.")],
        )

    @classmethod
    def execute(cls, model, ultrapixel_model, guidance, cfg_rescale) -> io.NodeOutput:
        check_compatible(model, ultrapixel_model, guidance)
        if not 0.0 <= cfg_rescale <= 1.0:
            raise ValueError(f"cfg_rescale: {cfg_rescale} is outside 0..1.")
        clone, _ = inject_clone(model, ultrapixel_model, guidance, float(cfg_rescale))
        return io.NodeOutput(clone)


NODES = (UltraPixelLRGuidance, UltraPixelINRUpscale, UltraPixelApply)
