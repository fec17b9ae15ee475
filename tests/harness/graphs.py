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


# The embedded demo model (native size 128 px), shared by tests/comfy/test_demo_model.py and
# tests/benchmarks/bench_quality.py.
DEMO_NATIVE = 128
DEMO_METHODS = ("direct", "lanczos", "pixelsmith-faithful", "pixelsmith-fast", "freescale-normal", "freescale-fast",
                "pixelsmith-faithful+detail", "pixelsmith-fast+detail", "freescale-normal+detail",
                "freescale-fast+detail")
# DiT-only variants (a UNet refuses them): Pixelsmith with each patch's RoPE at its place in the image.
DIT_METHODS = ("pixelsmith-faithful+global", "pixelsmith-fast+global")


# ``model_file`` value naming the shipped DiT demo (UltraRes Demo DiT) instead of a file.
DEMO_DIT = "UltraRes_DemoDiT"


def _prompt(model_file: str | None) -> tuple[list, list]:
    """(positive, negative) links of the demo graphs: Demo Prompt's, or the benchmark model node's."""
    return (["model", 2], ["model", 3]) if model_file else (["prompt", 0], ["prompt", 1])


def demo_base_graph(samples: int, seed: int, steps: int, cfg: float, object_class: str,
                    model_file: str | None = None, native: int = DEMO_NATIVE) -> dict:
    """Demo model + prompt -> ``samples`` base images at ``native``² (latent ``base``, images saved by
    ``base_save``). ``model_file``: a benchmark model of ``demo/train_bench.py`` in place of the demo model,
    or :data:`DEMO_DIT` for the shipped DiT demo."""
    pos, neg = _prompt(model_file)
    if model_file == DEMO_DIT:
        loader = {"model": {"class_type": DEMO_DIT, "inputs": {"object": object_class}}}
    elif model_file:
        loader = {"model": {"class_type": "UltraResTest_BenchModel", "inputs": {
            "path": model_file, "object": object_class, "width": 0, "height": 0}}}
    else:
        loader = {"model": {"class_type": "UltraRes_DemoModel", "inputs": {}},
                  "prompt": {"class_type": "UltraRes_DemoPrompt", "inputs": {"object": object_class}}}
    return {
        **loader,
        "empty": {"class_type": "EmptyLatentImage",
                  "inputs": {"width": native, "height": native, "batch_size": samples}},
        "base": {"class_type": "KSampler", "inputs": {
            "model": ["model", 0], "positive": pos, "negative": neg, "latent_image": ["empty", 0],
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "base_image": {"class_type": "VAEDecode", "inputs": {"samples": ["base", 0], "vae": ["model", 1]}},
        "base_save": {"class_type": "SaveImage", "inputs": {"images": ["base_image", 0], "filename_prefix": "base"}},
    }


def demo_method_graph(method: str, scale: int, samples: int, seed: int, steps: int, cfg: float,
                      sliders: tuple[float, float] = (0.8, 0.9), model_file: str | None = None,
                      native: int = DEMO_NATIVE, cosine_scale: float = 2.0) -> dict:
    """Nodes (ids prefixed ``<method>.``) taking the base of :func:`demo_base_graph` to ``scale`` ×
    its side with ``method``; the images are saved by node ``<method>.save``.

    Pixelsmith is a cascade of ×2 Upscale stages (slider = ``sliders[0]`` of the steps on the first
    stage, ``sliders[1]`` on later ones; patch = the native size in image px); FreeScale Upscale goes
    through every ×2 size (``cosine_scale``: its detail strength, the paper's 2 by default). A
    ``+detail`` suffix turns the methods' ``keep_detail`` on, ``+global`` Pixelsmith's global positions
    (DiTs). ``model_file`` / ``native``: as for :func:`demo_base_graph`.
    """
    side, stages = native * scale, scale.bit_length() - 1
    name, (method, _, extra) = method, method.partition("+")
    keep_detail = extra == "detail"
    positions = "global" if extra == "global" else "local"
    pos, neg = _prompt(model_file)
    m = f"{name}."
    common = {"model": ["model", 0], "positive": pos, "negative": neg,
              "seed": seed, "steps": steps, "cfg": cfg}
    if method == "direct":
        nodes = {
            m + "empty": {"class_type": "EmptyLatentImage",
                          "inputs": {"width": side, "height": side, "batch_size": samples}},
            m + "sample": {"class_type": "KSampler", "inputs": dict(
                common, latent_image=[m + "empty", 0], sampler_name="euler", scheduler="normal", denoise=1.0)},
            m + "image": {"class_type": "VAEDecode", "inputs": {"samples": [m + "sample", 0], "vae": ["model", 1]}},
        }
        image = [m + "image", 0]
    elif method == "lanczos":
        nodes = {m + "image": {"class_type": "ImageScale", "inputs": {
            "image": ["base_image", 0], "upscale_method": "lanczos", "width": side, "height": side,
            "crop": "disabled"}}}
        image = [m + "image", 0]
    elif method.startswith("pixelsmith"):
        nodes, source = {}, ["base", 0]
        for i in range(stages):
            nodes[f"{m}stage{i}"] = {"class_type": "UltraRes_PixelsmithUpscale", "inputs": dict(
                common, vae=["model", 1], latent=source, scale_by=2.0, target_width=0, target_height=0,
                slider=round(steps * sliders[min(i, 1)]), patch_size=native, band=16,
                mode=method.split("-")[1], patch_batch=0, crop_conditioning="fixed", state_device="auto",
                decode_image=i == stages - 1, keep_detail=keep_detail, positions=positions)}
            source = [f"{m}stage{i}", 0]
        image = [f"{m}stage{stages - 1}", 1]  # the last stage's decoded IMAGE
    else:
        sizes = ", ".join(str(native * 2 ** (i + 1)) for i in range(stages))
        nodes = {
            m + "upscale": {"class_type": "UltraRes_FreeScaleUpscale", "inputs": dict(
                common, vae=["model", 1], latent=["base", 0], resolutions=sizes, cosine_scale=cosine_scale,
                cosine_scale_bg=1.0, fast_mode=method.endswith("fast"), dilation=True, freeu=True,
                keep_detail=keep_detail)},
            m + "image": {"class_type": "VAEDecode", "inputs": {"samples": [m + "upscale", 0], "vae": ["model", 1]}},
        }
        image = [m + "image", 0]
    nodes[m + "save"] = {"class_type": "SaveImage",
                         "inputs": {"images": image, "filename_prefix": f"{name.replace('+', '_')}_{scale}x"}}
    return nodes
