"""API-format graph builders shared by the in-process tests (ComfyUI's own GraphBuilder)."""
from __future__ import annotations


def txt2img(kind: str = "sdxl", seed: int = 1, size: int = 64, steps: int = 3, model_patch=None,
            probe: bool = False, sampler: str = "euler", scheduler: str = "normal"):
    """Tiny checkpoint -> (optional patch node) -> KSampler -> VAE decode -> SaveImage.

    ``model_patch`` is ``(class_type, inputs)`` of a node taking ``model`` and returning MODEL.
    Returns (graph dict, ids of the interesting nodes).
    """
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="")
    ckpt = g.node("UltraResTest_TinyCheckpoint", kind=kind, seed=0)
    model = ckpt.out(0)
    patch = None
    if model_patch is not None:
        class_type, inputs = model_patch
        patch = g.node(class_type, model=model, **inputs)
        model = patch.out(0)
    if probe:
        model = g.node("UltraResTest_ModelProbe", model=model, tag="ksampler").out(0)
    pos = g.node("CLIPTextEncode", clip=ckpt.out(1), text="a lighthouse on a cliff, detailed")
    neg = g.node("CLIPTextEncode", clip=ckpt.out(1), text="blurry")
    latent = g.node("EmptyLatentImage", width=size, height=size, batch_size=1)
    ks = g.node("KSampler", model=model, positive=pos.out(0), negative=neg.out(0),
                latent_image=latent.out(0), seed=seed, steps=steps, cfg=5.0,
                sampler_name=sampler, scheduler=scheduler, denoise=1.0)
    dec = g.node("VAEDecode", samples=ks.out(0), vae=ckpt.out(2))
    save = g.node("SaveImage", images=dec.out(0), filename_prefix="ultrares_test")
    ids = {"ckpt": ckpt.id, "ksampler": ks.id, "decode": dec.id, "save": save.id,
           "patch": patch.id if patch else None}
    return g.finalize(), ids
