"""Train the embedded Stable Cascade demo model and its UltraPixel modules on CPU, from a seed.

    python -m demo.train_cascade --comfyui PATH/TO/ComfyUI [--seed 0]

(run from the pack's root with the Python that runs ComfyUI, as ``demo.train``). Four phases, all
on the procedural pictures of :mod:`demo.data` with the texture kept at its native pixel period
at every size (a larger picture has more detail per object, as a high-resolution photo has):

1. the decoder (ComfyUI's ``AutoencoderKL``, 16 channels, 8 px per cell) on 64² crops of native
   and 2× pictures; its latent is rescaled per channel to zero mean and a spread of
   ``cascade_spec.DATA_STD`` (Stable Cascade's latent scale is 1);
2. ``--images`` native (96 px, 12² latent) pictures are encoded once;
3. stage C (ComfyUI's ``StageC`` through the ``Stable_Cascade_C`` config) with ε-prediction on
   Stable Cascade's cosine schedule at shift 1, times drawn as ``1 - (1 - u)^2`` (more of them at
   high noise), min-SNR-5 weighting against the latents' spread, 10 % empty-prompt dropout, AdamW
   with a cosine schedule and an EMA of the weights (the EMA is what is saved);
4. the four UltraPixel modules with stage C frozen, as the paper trains them (Ren et al., 2024,
   Sec. 3.1-3.2, Eq. (5), Sec. 4.1; official ``train/train_t2i.py:414-432``): each step renders
   one scene at the native size and at 2×, 3× or 4× (4× every other step); the LR guidance is
   stage C's features at the four points for the LR latent noised to t = 0.05; the HR latent is
   noised at a time drawn as in 3 and stage C, with the modules adding ``x + u`` after the first
   AttnBlock of each level (decoder weight 1 in training, as the official code), is trained to
   predict the noise. Two departures, both for a short CPU run: the LR picture is the scene
   rendered at the native size (with the native texture, as the LR pass draws it at inference)
   instead of the HR picture downscaled,
   and the SAN's affine map starts at ``u * 0.1`` instead of the official Xavier draw, so the
   modules start from stage C's own behaviour rather than from a random perturbation of every
   feature.

The defaults take about 95 minutes on 2 CPU cores (decoder 8, stage C 30, modules 55). Each phase
draws from its own generator (seed, seed + 1, seed + 2), so ``--phase stage-c`` (keep the decoder
of ``--cascade``, retrain stage C and the modules) and ``--phase ultrapixel`` (only the modules)
train what a full run trains, on the fp16-stored weights of the earlier phases. ``--checkpoint-every``
also writes the stage-C file along the way, to look at it while it trains. The files are written
in fp16 (stage C, decoder) and fp32 (the modules, 1.4 MiB), each through a ``.part`` file renamed
when complete.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import types
from pathlib import Path

import torch

from .train import ROOT, boot_comfy, log, normalise_latent_, reset_parameters_, train_vae

# HR scale -> batch size of a module-training step (2.4-3.5 s each), in the order they take turns:
# 4× twice per round, as the largest scale is where the guidance has the most to hold together.
SCALES = {2: 12, 4: 4, 3: 5}
SCALE_TURNS = (2, 4, 3, 4)


def kernels(name: str):
    """The pack's ``kernels.<name>`` module: relative to the pack when it is imported as a package,
    else from the pack root that ``main`` puts on sys.path (``python -m demo.train_cascade``)."""
    import importlib

    parent = __package__.rpartition(".")[0]
    return importlib.import_module(f"{parent}.kernels.{name}" if parent else f"kernels.{name}")


def scene(classes: torch.Tensor, g: torch.Generator, sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """The same scenes rendered at each side in ``sizes`` (one generator state, fixed texture period)."""
    from .cascade_spec import TEXTURE_SCALE
    from .data import render

    state = g.get_state()
    out = []
    for size in sizes:
        g.set_state(state)
        out.append(render(classes, g, size, texture_scale=TEXTURE_SCALE))
    return out


def random_classes(n: int, g: torch.Generator) -> torch.Tensor:
    """Object classes (indices into demo.data's classes) of ``n`` scenes of the cascade demo."""
    from .cascade_spec import CLASSES
    from .data import CLASSES as ALL_CLASSES

    allowed = torch.tensor([ALL_CLASSES.index(c) for c in CLASSES])
    return allowed[torch.randint(len(CLASSES), (n,), generator=g)]


def text_rows(classes: torch.Tensor) -> torch.Tensor:
    """The prompt-table rows (positions in the cascade demo's CLASSES) of demo.data class indices."""
    from .cascade_spec import CLASSES
    from .data import CLASSES as ALL_CLASSES

    lookup = torch.full((len(ALL_CLASSES),), -1, dtype=torch.long)
    lookup[[ALL_CLASSES.index(c) for c in CLASSES]] = torch.arange(len(CLASSES))
    return lookup[classes]


def vae_images(n: int, g: torch.Generator) -> torch.Tensor:
    """Decoder training pictures: all four classes of demo.data (the decoder is not class-bound)."""
    from . import data
    from .cascade_spec import NATIVE_PX

    size = NATIVE_PX * (1 if torch.rand(1, generator=g).item() < 0.5 else 2)
    return scene(data.random_classes(n, g), g, (size,))[0]


def native_images(n: int, g: torch.Generator) -> torch.Tensor:
    from . import data
    from .cascade_spec import NATIVE_PX

    return scene(data.random_classes(n, g), g, (NATIVE_PX,))[0]


def encode(vae, x: torch.Tensor, g: torch.Generator | None = None):
    """(mean, std) of the posterior for pictures in [0, 1], or a sample of it when ``g`` is given."""
    mean, logvar = vae.quant_conv(vae.encoder(x * 2 - 1)).chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30, 20))
    if g is None:
        return mean, std
    return mean + std * torch.randn(mean.shape, generator=g)


def build_stage_c():
    import comfy.supported_models

    from .cascade_spec import STAGE_C_CONFIG

    config = comfy.supported_models.Stable_Cascade_C(dict(STAGE_C_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    return config.get_model({}, device=torch.device("cpu")).diffusion_model


def init_stage_c_(sc: torch.nn.Module) -> None:
    """Default layer init (ComfyUI's ops skip it), identity GlobalResponseNorms, a zero output layer."""
    from comfy.ldm.cascade.common import GlobalResponseNorm

    reset_parameters_(sc)
    with torch.no_grad():
        for m in sc.modules():
            if isinstance(m, GlobalResponseNorm):
                m.gamma.zero_()
                m.beta.zero_()
        sc.clf[1].weight.zero_()
        sc.clf[1].bias.zero_()


def sampling():
    """Stable Cascade's sampling at shift 1 (the schedule UltraPixel samples with)."""
    import comfy.model_sampling

    class Sampling(comfy.model_sampling.StableCascadeSampling, comfy.model_sampling.EPS):
        pass

    return Sampling(types.SimpleNamespace(sampling_settings={"shift": 1.0}))


def noised(x0: torch.Tensor, t: torch.Tensor, ms, g: torch.Generator):
    """(model input, r, sigma, eps) for clean latents x0 at times t, as ComfyUI's EPS model sees them."""
    sigma = ms.sigma(t).float().view(-1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=g)
    xc = (x0 + sigma * eps) / torch.sqrt(sigma ** 2 + 1)
    return xc, ms.timestep(sigma.view(-1)).float(), sigma, eps


def conditioning(text: torch.Tensor, label: torch.Tensor) -> dict:
    ctx = text[label]
    return {"clip_text": ctx, "clip_text_pooled": ctx.mean(1, keepdim=True),
            "clip_img": torch.zeros(label.shape[0], 1, 768)}


def noise_times(n: int, g: torch.Generator) -> torch.Tensor:
    """Training times t = 1 - (1 - u)^2: half of them above t = 0.71, where the composition is
    decided at the demo's latent spread (see cascade_spec.DATA_STD)."""
    return 1 - (1 - torch.rand(n, generator=g)) ** 2


def eps_loss(out: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Min-SNR-5 weighted ε loss, the SNR taken against the latents' spread."""
    from .cascade_spec import DATA_STD

    snr = DATA_STD ** 2 / sigma.view(-1) ** 2
    weight = torch.clamp(snr, max=5.0) / snr
    return (weight * (out - eps).pow(2).mean(dim=(1, 2, 3))).mean()


def cosine_lr(opt, base: float, step: int, total: int, warmup: int = 200) -> None:
    for group in opt.param_groups:
        group["lr"] = base * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))


def train_stage_c(args, latents, g: torch.Generator, checkpoint=None):
    from .cascade_spec import CLASSES, CONTEXT_DIM, CONTEXT_TOKENS

    classes, z_mean, z_std = latents
    sc = build_stage_c()
    init_stage_c_(sc)
    ms = sampling()
    text = torch.nn.Parameter(torch.randn(len(CLASSES) + 1, CONTEXT_TOKENS, CONTEXT_DIM, generator=g))
    ema = {k: v.detach().clone() for k, v in sc.state_dict().items()}
    ema_text = text.detach().clone()
    params = list(sc.parameters()) + [text]
    opt = torch.optim.AdamW(params, lr=args.stage_c_lr, weight_decay=0.01)
    n, empty = classes.shape[0], len(CLASSES)
    t0 = time.time()
    for step in range(args.stage_c_steps):
        idx = torch.randint(n, (args.stage_c_batch,), generator=g)
        x0 = z_mean[idx] + z_std[idx] * torch.randn(z_mean[idx].shape, generator=g)
        if torch.rand(1, generator=g).item() < 0.5:  # the data is mirror-symmetric up to shading
            x0 = x0.flip(-1)
        label = torch.where(torch.rand(idx.shape, generator=g) < 0.1, empty, text_rows(classes[idx]))
        xc, r, sigma, eps = noised(x0, noise_times(idx.shape[0], g), ms, g)
        loss = eps_loss(sc(xc, r, **conditioning(text, label)), eps, sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        cosine_lr(opt, args.stage_c_lr, step, args.stage_c_steps)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in sc.state_dict().items():
                ema[k].lerp_(v, 1 - decay) if v.is_floating_point() else ema[k].copy_(v)
            ema_text.lerp_(text, 1 - decay)
        if step % 200 == 0 or step == args.stage_c_steps - 1:
            log(f"stage C step {step}/{args.stage_c_steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
        if checkpoint and args.checkpoint_every and (step + 1) % args.checkpoint_every == 0 \
                and step + 1 < args.stage_c_steps:
            checkpoint(ema, ema_text)
    return ema, ema_text


def ultrapixel_modules(g: torch.Generator) -> torch.nn.ModuleDict:
    GuidanceFusionModule = kernels("ultrapixel").GuidanceFusionModule
    config = kernels("ultrapixel_config")
    INJECTION_POINTS, UltraPixelConfig = config.INJECTION_POINTS, config.UltraPixelConfig

    from .cascade_spec import POINT_CHANNELS, ULTRAPIXEL_MODULE

    modules = torch.nn.ModuleDict()
    for point in INJECTION_POINTS:
        module = GuidanceFusionModule(UltraPixelConfig(ind=POINT_CHANNELS[point], **ULTRAPIXEL_MODULE), generator=g)
        with torch.no_grad():  # SAN starts at u * (2 + a_s) + b_s = 0.1 u (see the module docstring)
            mapper = module.hr_norm.mapping.mapper
            mapper.weight.zero_()
            mapper.bias.zero_()
            mapper.bias[:module.config.ind] = -1.9
        modules[point] = module
    return modules


class Points:
    """Forward hooks on stage C's four UltraPixel points: capture the LR features or add ``u``."""

    def __init__(self, sc: torch.nn.Module, modules: torch.nn.ModuleDict):
        STAGE_C_BLOCKS = kernels("ultrapixel_config").STAGE_C_BLOCKS

        self.modules, self.mode, self.features = modules, None, {}
        self.g, self.t_emb = None, None
        for point, name in STAGE_C_BLOCKS.items():
            sc.get_submodule(name).register_forward_hook(self.hook(point))

    def hook(self, point: str):
        def run(_module, _args, out):
            if self.mode == "capture":
                self.features[point] = out.detach()
            elif self.mode == "inject":
                return out + self.modules[point](out, self.features[point], self.t_emb)
            return out
        return run


def train_ultrapixel(args, vae, sc_state: dict, text: torch.Tensor, g: torch.Generator) -> torch.nn.ModuleDict:
    r_embedding = kernels("ultrapixel_norm").r_embedding

    from .cascade_spec import CLASSES, NATIVE_PX

    sc = build_stage_c()
    sc.load_state_dict({k: v.float() for k, v in sc_state.items()})
    sc.eval().requires_grad_(False)
    vae.requires_grad_(False)
    text = text.float()
    ms = sampling()
    modules = ultrapixel_modules(g)
    points = Points(sc, modules)
    ema = {k: v.detach().clone() for k, v in modules.state_dict().items()}
    params = list(modules.parameters())
    opt = torch.optim.AdamW(params, lr=args.ultrapixel_lr, weight_decay=0.0)
    t0 = time.time()
    for step in range(args.ultrapixel_steps):
        k = SCALE_TURNS[step % len(SCALE_TURNS)]
        b = SCALES[k]
        classes = random_classes(b, g)
        lr_img, hr_img = scene(classes, g, (NATIVE_PX, NATIVE_PX * k))
        if torch.rand(1, generator=g).item() < 0.5:
            lr_img, hr_img = lr_img.flip(-1), hr_img.flip(-1)
        with torch.no_grad():
            z_lr, z_hr = encode(vae, lr_img, g), encode(vae, hr_img, g)
            # LR guidance: the clean LR latent re-noised to t = 0.05, one forward pass, conditional.
            xc, r, _, _ = noised(z_lr, torch.full((b,), 0.05), ms, g)
            points.mode = "capture"
            sc(xc, r, **conditioning(text, text_rows(classes)))
        label = torch.where(torch.rand(b, generator=g) < 0.1, len(CLASSES), text_rows(classes))
        xc, r, sigma, eps = noised(z_hr, noise_times(b, g), ms, g)
        points.mode, points.t_emb = "inject", r_embedding(r, 64)
        loss = eps_loss(sc(xc, r, **conditioning(text, label)), eps, sigma)
        points.mode = None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        cosine_lr(opt, args.ultrapixel_lr, step, args.ultrapixel_steps, warmup=50)
        opt.step()
        decay = min(args.ultrapixel_ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, v in modules.state_dict().items():
                ema[name].lerp_(v, 1 - decay)
        if step % 25 == 0 or step == args.ultrapixel_steps - 1:
            log(f"ultrapixel step {step}/{args.ultrapixel_steps} ({k}x, batch {b}) loss {loss.item():.4f} "
                f"({time.time() - t0:.0f} s)")
    modules.load_state_dict(ema)
    return modules


def save(tensors: dict, path: Path, meta: dict, dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    save_file({k: v.detach().to(dtype).contiguous() for k, v in tensors.items()}, str(part), metadata=meta)
    part.replace(path)
    log(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")


def main(argv=None) -> int:
    from .cascade_spec import ULTRAPIXEL_FILE, VAE_DDCONFIG, VAE_EMBED_DIM, WEIGHTS_FILE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder (its model classes are used)")
    p.add_argument("--cascade", type=Path, default=ROOT / "demo" / WEIGHTS_FILE, help="stage C + decoder file")
    p.add_argument("--ultrapixel", type=Path, default=ROOT / "demo" / ULTRAPIXEL_FILE, help="UltraPixel modules file")
    p.add_argument("--phase", choices=["all", "stage-c", "ultrapixel"], default="all",
                   help="all: train everything; stage-c: stage C and the modules on the decoder in --cascade; "
                        "ultrapixel: only the modules, on the stage C in --cascade")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vae-steps", type=int, default=1000)
    p.add_argument("--vae-batch", type=int, default=12)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=1e-4)
    p.add_argument("--images", type=int, default=8000)
    p.add_argument("--stage-c-steps", type=int, default=2400)
    p.add_argument("--stage-c-batch", type=int, default=48)
    p.add_argument("--stage-c-lr", type=float, default=6e-4)
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="also write --cascade (the EMA so far) every this many stage-C steps (0: only at the end)")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--ultrapixel-steps", type=int, default=720)
    p.add_argument("--ultrapixel-lr", type=float, default=1e-3)
    p.add_argument("--ultrapixel-ema", type=float, default=0.99)
    args = p.parse_args(argv)

    boot_comfy(args.comfyui)
    sys.path.insert(1, str(ROOT))  # the pack's kernels (pure PyTorch)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)

    def phase_generator(k: int) -> torch.Generator:  # one per phase, so each can be rerun alone
        return torch.Generator().manual_seed(args.seed + k)

    from comfy.ldm.models.autoencoder import AutoencoderKL
    from safetensors.torch import load_file

    from .cascade_spec import CLASSES, DATA_STD, LATENT_SCALE, NATIVE_PX

    settings = json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                           if k not in ("comfyui", "cascade", "ultrapixel")})
    meta = {"classes": json.dumps(list(CLASSES)), "seed": str(args.seed), "training": settings}
    if args.phase != "ultrapixel":
        if args.phase == "all":
            g = phase_generator(0)
            vae = train_vae(args, g, VAE_DDCONFIG, VAE_EMBED_DIM, images=vae_images)
            normalise_latent_(vae, g, latent_scale=LATENT_SCALE / DATA_STD, images=native_images)
        else:  # the decoder of --cascade
            vae = AutoencoderKL(ddconfig=dict(VAE_DDCONFIG), embed_dim=VAE_EMBED_DIM)
            vae.load_state_dict({k[4:]: v.float() for k, v in load_file(str(args.cascade)).items()
                                 if k.startswith("vae.")})
            vae.eval()
        g = phase_generator(1)
        with torch.no_grad():
            classes = torch.cat([random_classes(64, g) for _ in range(args.images // 64)])
            posterior = [encode(vae, scene(c, g, (NATIVE_PX,))[0]) for c in classes.split(64)]
        latents = (classes, torch.cat([m for m, _ in posterior]), torch.cat([s for _, s in posterior]))
        log(f"encoded {classes.numel()} pictures")

        def save_cascade(sc_state: dict, text: torch.Tensor) -> None:
            tensors = {f"vae.{k}": v for k, v in vae.state_dict().items()}
            tensors.update({f"stage_c.{k}": v for k, v in sc_state.items()})
            tensors["text.embeddings"] = text
            save(tensors, args.cascade, meta, torch.float16)

        save_cascade(*train_stage_c(args, latents, g, checkpoint=save_cascade))
    state = load_file(str(args.cascade))
    vae = AutoencoderKL(ddconfig=dict(VAE_DDCONFIG), embed_dim=VAE_EMBED_DIM)
    vae.load_state_dict({k[4:]: v.float() for k, v in state.items() if k.startswith("vae.")})
    sc_state = {k[8:]: v for k, v in state.items() if k.startswith("stage_c.")}
    modules = train_ultrapixel(args, vae.eval(), sc_state, state["text.embeddings"], phase_generator(2))
    CHECKPOINT_PREFIXES = kernels("ultrapixel_config").CHECKPOINT_PREFIXES

    release = {f"module.{CHECKPOINT_PREFIXES[point]}{k}": v
               for point, module in modules.items() for k, v in module.state_dict().items()}
    save(release, args.ultrapixel, meta, torch.float32)
    return 0


if __name__ == "__main__":
    sys.exit(main())
