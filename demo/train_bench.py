"""Train a benchmark model (:mod:`demo.bench_models`) from scratch on CPU, reproducibly from a seed.

    python -m demo.train_bench --comfyui PATH/TO/ComfyUI [--model bench_crops|bench_pair] [--seed 0] [--out PATH]

(run from the pack's root with the Python that runs ComfyUI, as ``demo.train``; ``--out`` defaults to
``tests/benchmarks/models/<model>.safetensors``). The phases and losses are those of
:mod:`demo.train`, whose functions do the work, on the model's samples (``bench_crops``: half whole
64 px scenes, half 64 px crops of larger scenes at random offsets; ``bench_pair``: whole 64 px
pictures of two objects):

1. the VAE on those samples, its latent then normalised to SDXL's latent scale;
2. ``--images`` samples are encoded once, each with its micro-conditioning (scene size, crop
   offset, native target size) as SDXL trains it (Podell et al., arXiv:2307.01952, §2.2);
3. the UNet (ComfyUI's ``SDXL`` config, ``bench_models.UNET_CONFIG``) with each latent's own size
   embedding from ComfyUI's ``SDXL.encode_adm`` and no mirroring for crops (a mirrored crop would need
   another crop offset); ε-prediction, min-SNR-5, 10 % empty-prompt dropout, AdamW + cosine, EMA saved.

The file holds ``vae.*``, ``unet.*`` and ``text.embeddings`` in fp16, as the demo model's, with the
architecture and the native conditioning in its metadata. The defaults (6.3 M-parameter UNet, 6000 steps
of 64 latents) take about 40 minutes on one CPU core (0.4 s a VAE step, 0.3 s a UNet step), roughly 25-30 on two.
"""
from __future__ import annotations

import json
import sys
import time

import torch

from . import bench_models as bm
from .train import ROOT, arg_parser, log, normalise_latent_, save_model, start, train_flow, train_unet, train_vae

MODELS_DIR = ROOT / "tests" / "benchmarks" / "models"


@torch.no_grad()
def encode_samples(vae, n: int, g: torch.Generator, training_samples):
    """``n`` training samples encoded: (classes, posterior mean, posterior std, size conditioning ``[n, 6]``)."""
    out = []
    t0 = time.time()
    for i in range(0, n, 64):
        x, classes, sizes = training_samples(min(64, n - i), g)
        mean, logvar = vae.quant_conv(vae.encoder(x * 2 - 1)).chunk(2, dim=1)
        out.append((classes, mean, torch.exp(0.5 * logvar.clamp(-30, 20)), sizes))
    log(f"encoded {n} samples in {time.time() - t0:.0f} s")
    return [torch.cat(parts) for parts in zip(*out)]


def main(argv=None) -> int:
    p = arg_parser(__doc__, None)
    p.add_argument("--model", default=bm.NAME, choices=list(bm.MODELS))
    p.set_defaults(vae_steps=None, images=16000, unet_steps=6000)  # vae_steps: the model's own by default
    args = p.parse_args(argv)
    spec = bm.MODELS[args.model]
    args.vae_steps = args.vae_steps or spec.vae_steps
    args.out = args.out or MODELS_DIR / f"{args.model}.safetensors"
    g = start(args)

    def images(n: int, g: torch.Generator) -> torch.Tensor:
        return spec.samples(n, g)[0]

    vae = train_vae(args, g, ddconfig=spec.vae_ddconfig, embed_dim=spec.latent_channels, images=images)
    if spec.arch == "flux":
        import comfy.latent_formats

        flux = comfy.latent_formats.Flux()
        normalise_latent_(vae, g, latent_scale=flux.scale_factor, images=images, latent_shift=flux.shift_factor)
    else:
        normalise_latent_(vae, g, latent_scale=bm.LATENT_SCALE, images=images)
    classes, mean, std, sizes = encode_samples(vae, args.images, g, spec.samples)
    if spec.arch == "flux":
        unet, text = train_flow(args, (classes, mean, std), g, spec.unet_config, len(spec.classes))
    else:
        unet, text = train_unet(args, (classes, mean, std), g, unet_config=spec.unet_config, sizes=sizes,
                                flip=spec.flip, n_classes=len(spec.classes))
    save_model(args, vae, unet, text, spec.classes, model=spec.name, native_px=str(bm.NATIVE_PX), arch=spec.arch,
               unet_config=json.dumps(spec.unet_config), vae_ddconfig=json.dumps(spec.vae_ddconfig),
               vae_embed_dim=str(spec.latent_channels), size_conditioning=json.dumps(bm.SIZE_CONDITIONING))
    return 0


if __name__ == "__main__":
    sys.exit(main())
