"""Train the embedded demo model from scratch on CPU, reproducibly from a seed.

    python -m demo.train --comfyui PATH/TO/ComfyUI [--seed 0] [--out demo/ultrares_demo.safetensors]

(run from the pack's root with the Python that runs ComfyUI; ``scripts/build_host.sh`` prints
a pinned one). Three phases, all on the procedural images of :mod:`demo.data`:

1. the VAE (ComfyUI's ``AutoencoderKL``) on random 64² crops: L1 + L1 of image gradients + a
   small KL term; then its latent is rescaled per channel to zero mean and the variance SDXL's
   latent format expects;
2. ``--images`` training images are encoded once (posterior mean and std kept);
3. the UNet (ComfyUI's ``SDXL`` model config) with ε-prediction on ComfyUI's own noise schedule,
   min-SNR-5 weighting, 10 % empty-prompt dropout for classifier-free guidance, AdamW with a
   cosine schedule and an EMA of the weights (the EMA is what is saved).

The defaults take about 35 minutes on 2 CPU cores. The weights are written in fp16.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def boot_comfy(comfy_dir: Path) -> None:
    """Import ComfyUI's model code on the CPU (no server, no custom nodes)."""
    sys.path.insert(0, str(comfy_dir))
    import comfy.options

    comfy.options.enable_args_parsing()
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.cli_args  # noqa: F401


def reset_parameters_(module: torch.nn.Module) -> None:
    """PyTorch's default initialisation for every layer (ComfyUI's ops skip it on purpose)."""
    for m in module.modules():
        for base in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(m, base):
                base.reset_parameters(m)
                break


def log(msg: str) -> None:
    print(f"[demo.train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def demo_images(n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` training images of the SDXL-class demo model (native size)."""
    from .data import random_classes, render

    return render(random_classes(n, g), g)


def train_vae(args, g: torch.Generator, ddconfig: dict | None = None, embed_dim: int | None = None,
              images=demo_images):
    """ComfyUI's ``AutoencoderKL`` trained on random 64² crops of ``images(batch, g)``."""
    from comfy.ldm.models.autoencoder import AutoencoderKL

    from .spec import VAE_DDCONFIG, VAE_EMBED_DIM

    vae = AutoencoderKL(ddconfig=dict(ddconfig or VAE_DDCONFIG), embed_dim=embed_dim or VAE_EMBED_DIM)
    reset_parameters_(vae)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    crop = 64
    t0 = time.time()
    for step in range(args.vae_steps):
        batch = images(args.vae_batch, g)
        oy, ox = (torch.randint(0, batch.shape[-1] - crop + 1, (2,), generator=g) // 8 * 8).tolist()
        x = batch[..., oy:oy + crop, ox:ox + crop] * 2 - 1
        mean, logvar = vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)
        logvar = logvar.clamp(-30, 20)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        rec = vae.decoder(vae.post_quant_conv(z))
        grad = lambda t: (t[..., 1:, :] - t[..., :-1, :], t[..., :, 1:] - t[..., :, :-1])  # noqa: E731
        loss_grad = sum(F.l1_loss(a, b) for a, b in zip(grad(rec), grad(x)))
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = F.l1_loss(rec, x) + loss_grad + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = args.vae_lr * 0.5 * (1 + math.cos(math.pi * step / args.vae_steps))
        opt.step()
        if step % 100 == 0 or step == args.vae_steps - 1:
            log(f"vae step {step}/{args.vae_steps} loss {loss.item():.4f} kl {kl.item():.3f} "
                f"({time.time() - t0:.0f} s)")
    return vae.eval()


@torch.no_grad()
def normalise_latent_(vae, g: torch.Generator, n: int = 512, latent_scale: float | None = None,
                      images=demo_images, latent_shift: float = 0.0) -> None:
    """Fold a per-channel affine map into quant_conv/post_quant_conv so that ``(latent - latent_shift) ·
    latent_scale`` (the model's latent format's ``process_in``; SDXL's scale and no shift by default)
    has zero mean and unit variance."""
    from .spec import LATENT_SCALE

    latent_scale = LATENT_SCALE if latent_scale is None else latent_scale
    means = []
    for _ in range(n // 64):
        x = images(64, g) * 2 - 1
        means.append(vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)[0])
    z = torch.cat(means)
    mu, sd = z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))
    k = 1.0 / (latent_scale * sd)                       # new z = k (z - mu) + shift
    c = mu.numel()
    qw, qb = vae.quant_conv.weight, vae.quant_conv.bias  # rows: [mean (c), logvar (c)]
    qw[:c] *= k.view(-1, 1, 1, 1)
    qb[:c] = (qb[:c] - mu) * k + latent_shift
    qb[c:] += 2 * torch.log(k)
    pw, pb = vae.post_quant_conv.weight, vae.post_quant_conv.bias  # post(z) = W ((z - shift)/k + mu) + b
    pb += (pw[:, :, 0, 0] @ (mu - latent_shift / k))
    pw /= k.view(1, -1, 1, 1)
    log(f"latent per-channel mean {mu.tolist()} std {sd.tolist()} -> scale {(1 / k).tolist()}")


@torch.no_grad()
def encode_dataset(vae, n: int, g: torch.Generator):
    from .data import random_classes, render

    classes = random_classes(n, g)
    mean, std = [], []
    t0 = time.time()
    for i in range(0, n, 64):
        x = render(classes[i:i + 64], g) * 2 - 1
        m, lv = vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)
        mean.append(m)
        std.append(torch.exp(0.5 * lv.clamp(-30, 20)))
    log(f"encoded {n} images in {time.time() - t0:.0f} s")
    return classes, torch.cat(mean), torch.cat(std)


def build_unet(unet_config: dict | None = None, arch: str = "sdxl"):
    """A ComfyUI ``model_base`` model on the CPU, fp32: ComfyUI's ``SDXL`` config of ``unet_config``
    (spec.UNET_CONFIG when None), or with ``arch="flux"`` its ``Flux`` config (a transformer)."""
    import dataclasses

    import comfy.ldm.flux.model
    import comfy.supported_models

    from .spec import UNET_CONFIG

    unet_config = dict(unet_config or UNET_CONFIG)
    if arch == "flux":
        # ComfyUI 0.33+ adds FluxParams.txt_ids_dims; Flux.1 checkpoints detect it as [].
        if "txt_ids_dims" in {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}:
            unet_config["txt_ids_dims"] = []
        config = comfy.supported_models.Flux(unet_config)
    else:
        config = comfy.supported_models.SDXL(unet_config)
    config.set_inference_dtype(torch.float32, None)
    return config.get_model({}, device=torch.device("cpu"))


def size_embeddings(model, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's size embedding (``encode_adm`` less the pooled prompt) of each distinct row of ``sizes``
    (``[n, 6]``: width, height, crop_w, crop_h, target_width, target_height in px), and each row's index."""
    from .spec import CONTEXT_DIM

    keys = ("width", "height", "crop_w", "crop_h", "target_width", "target_height")
    unique, row = sizes.unique(dim=0, return_inverse=True)
    with torch.no_grad():
        adm = torch.cat([model.encode_adm(pooled_output=torch.zeros(1, CONTEXT_DIM), **dict(zip(keys, u.tolist())))
                         for u in unique])
    return adm[:, CONTEXT_DIM:], row


def _new_prompts(n_classes: int, g: torch.Generator) -> torch.nn.Parameter:
    """The learned prompt table: ``n_classes`` + 1 (the empty prompt, last) rows of ``CONTEXT_TOKENS`` tokens."""
    from .spec import CONTEXT_DIM, CONTEXT_TOKENS

    return torch.nn.Parameter(torch.randn(n_classes + 1, CONTEXT_TOKENS, CONTEXT_DIM, generator=g))


def _draw_batch(args, data, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indices, clean latents drawn from their posteriors, their classes) of one training batch."""
    classes, z_mean, z_std = data
    idx = torch.randint(classes.shape[0], (args.unet_batch,), generator=g)
    x0 = z_mean[idx] + z_std[idx] * torch.randn(z_mean[idx].shape, generator=g)
    return idx, x0, classes[idx]


def fit(args, g: torch.Generator, net: torch.nn.Module, text: torch.nn.Parameter,
        loss_of: Callable[[int], torch.Tensor], what: str):
    """AdamW (200-step warm-up, cosine decay, grad clip 1) on ``net`` and the prompt table ``text`` for
    ``args.unet_steps`` steps of ``loss_of(step)``; returns the EMA state dict and the EMA prompt table."""
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    ema_text = text.detach().clone()
    params = list(net.parameters()) + [text]
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    t0 = time.time()
    for step in range(args.unet_steps):
        loss = loss_of(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        warm = min(1.0, (step + 1) / 200)
        for group in opt.param_groups:
            group["lr"] = args.unet_lr * warm * 0.5 * (1 + math.cos(math.pi * step / args.unet_steps))
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].lerp_(v, 1 - decay) if v.is_floating_point() else ema[k].copy_(v)
            ema_text.lerp_(text, 1 - decay)
        if step % 200 == 0 or step == args.unet_steps - 1:
            log(f"{what} step {step}/{args.unet_steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    return ema, ema_text


def train_unet(args, data, g: torch.Generator, unet_config: dict | None = None, sizes: torch.Tensor | None = None,
               flip: bool = True, n_classes: int | None = None):
    """The UNet's EMA state dict and the EMA prompt table. ``sizes`` (``[n, 6]``, see :func:`size_embeddings`)
    is each training latent's micro-conditioning, spec.SIZE_CONDITIONING for all when None; ``flip``
    mirrors half of the batches (only right for mirror-symmetric data without crop conditioning);
    ``n_classes`` prompts are learned (spec.CLASSES' count when None), plus the empty one."""
    from .spec import CLASSES, LATENT_SCALE, SIZE_CONDITIONING

    model = build_unet(unet_config)
    unet = model.diffusion_model
    reset_parameters_(unet)
    with torch.no_grad():  # zero the last layer of every residual branch, as in the original UNet
        for name, m in unet.named_modules():
            if name == "out.2" or name.endswith("out_layers.3") or name.endswith("proj_out"):
                m.weight.zero_()
                m.bias.zero_()
    n_classes = n_classes or len(CLASSES)
    text = _new_prompts(n_classes, g)
    if sizes is None:
        sizes = torch.tensor([[SIZE_CONDITIONING[k] for k in ("width", "height", "crop_w", "crop_h", "target_width",
                                                             "target_height")]]).expand(data[0].shape[0], -1)
    size_adm, size_row = size_embeddings(model, sizes)
    sigmas = model.model_sampling.sigmas.float()

    def loss_of(step: int) -> torch.Tensor:
        idx, x0, label = _draw_batch(args, data, g)
        x0 = x0 * LATENT_SCALE
        if flip and torch.rand(1, generator=g).item() < 0.5:  # the data is mirror-symmetric up to shading
            x0 = x0.flip(-1)
        label = torch.where(torch.rand(idx.shape, generator=g) < 0.1, n_classes, label)
        t = torch.randint(0, sigmas.numel(), idx.shape, generator=g)
        sigma = sigmas[t].view(-1, 1, 1, 1)
        eps = torch.randn(x0.shape, generator=g)
        xc = (x0 + sigma * eps) / torch.sqrt(sigma ** 2 + 1)
        ctx = text[label]
        y = torch.cat([ctx.mean(1), size_adm[size_row[idx]]], dim=1)
        out = unet(xc, timesteps=t.float(), context=ctx, y=y)
        snr = 1.0 / sigma.view(-1) ** 2
        weight = torch.clamp(snr, max=5.0) / snr
        return (weight * (out - eps).pow(2).mean(dim=(1, 2, 3))).mean()

    return fit(args, g, unet, text, loss_of, "unet")


def train_flow(args, data, g: torch.Generator, dit_config: dict, n_classes: int):
    """A Flux-class DiT (ComfyUI's ``Flux`` config of ``dit_config``) by rectified flow: the EMA state
    dict and the EMA prompt table.

    ``x_σ = (1 - σ)·x0 + σ·ε`` in the latent format's space, the target ``v = ε - x0`` (ComfyUI's CONST
    sampling decodes ``x0 = x_σ - σ·v``), σ logit-normal (Esser et al., arXiv:2403.03206, §3.1) through the
    model's own time shift, uniform weighting; 10 % empty prompt, pooled prompt = the tokens' mean.
    """
    model = build_unet(dit_config, arch="flux")
    dit = model.diffusion_model
    reset_parameters_(dit)
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if name.endswith(".scale"):  # RMSNorm gains (ComfyUI leaves them uninitialised)
                p.fill_(1.0)
        dit.final_layer.linear.weight.zero_()  # start from v = 0, as DiT zero-initialises its output
        dit.final_layer.linear.bias.zero_()
    text = _new_prompts(n_classes, g)
    latent_format, sampling = model.latent_format, model.model_sampling

    def loss_of(step: int) -> torch.Tensor:
        idx, x0, label = _draw_batch(args, data, g)
        x0 = latent_format.process_in(x0)
        label = torch.where(torch.rand(idx.shape, generator=g) < 0.1, n_classes, label)
        sigma = sampling.sigma(torch.sigmoid(torch.randn(idx.shape, generator=g))).view(-1, 1, 1, 1)
        eps = torch.randn(x0.shape, generator=g)
        ctx = text[label]
        v = dit((1 - sigma) * x0 + sigma * eps, sigma.view(-1), context=ctx, y=ctx.mean(1))
        return (v - (eps - x0)).pow(2).mean()

    iadd = torch.Tensor.__iadd__
    # ComfyUI's Flux blocks add their residuals in place (``img += ...``, fine for inference), which
    # autograd refuses; while training, ``a += b`` rebinds ``a`` to ``a + b`` instead (same values).
    torch.Tensor.__iadd__ = torch.Tensor.__add__
    try:
        return fit(args, g, dit, text, loss_of, "dit")
    finally:
        torch.Tensor.__iadd__ = iadd


def arg_parser(description: str, out: Path) -> argparse.ArgumentParser:
    """The command line of a trainer (``out``: the default weights file), with the demo model's defaults."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comfyui", type=Path, required=True, help="ComfyUI folder (its model classes are used)")
    p.add_argument("--out", type=Path, default=out)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--vae-batch", type=int, default=12)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=1e-4)
    p.add_argument("--images", type=int, default=12000)
    p.add_argument("--unet-steps", type=int, default=4500)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.999)
    return p


def start(args) -> torch.Generator:
    """Boot ComfyUI, make torch deterministic with ``args.threads`` threads; the seeded generator."""
    boot_comfy(args.comfyui)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(args.seed)


def save_model(args, vae, unet: dict, text: torch.Tensor, classes, **meta: str) -> None:
    """Write ``vae.*``, ``unet.*`` and ``text.embeddings`` in fp16 to ``args.out`` (through a ``.part``
    file renamed when complete), with the classes, the seed, the training args and ``meta`` as metadata."""
    from safetensors.torch import save_file

    tensors = {f"vae.{k}": v for k, v in vae.state_dict().items()}
    tensors.update({f"unet.{k}": v for k, v in unet.items()})
    tensors["text.embeddings"] = text
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}
    meta = {"classes": json.dumps(list(classes)), "seed": str(args.seed),
            "training": json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                    if k not in ("comfyui", "out")}), **meta}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    part = args.out.with_suffix(".part")
    save_file(tensors, str(part), metadata=meta)
    part.replace(args.out)
    log(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")


def main(argv=None) -> int:
    args = arg_parser(__doc__, ROOT / "demo" / "ultrares_demo.safetensors").parse_args(argv)
    g = start(args)
    from .spec import CLASSES

    vae = train_vae(args, g)
    normalise_latent_(vae, g)
    data = encode_dataset(vae, args.images, g)
    unet, text = train_unet(args, data, g)
    save_model(args, vae, unet, text, CLASSES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
