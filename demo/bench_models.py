"""Three benchmark models, "crops", "pair" and "dit", trained by :mod:`demo.train_bench`.

Independent models for the quality benchmarks, so that their results cannot be tuned to the demo
model of :mod:`demo.spec`.

**crops**: an SDXL-class model trained on random crops with SDXL's micro-conditioning. It is
built and used like the demo model (ComfyUI's ``AutoencoderKL`` and ``SDXL`` UNet, one learned
prompt per class, the same file layout) but differs from it in what matters for high-resolution sampling:

* crop and size conditioning as SDXL trains it (Podell et al., arXiv:2307.01952, §2.2
  micro-conditioning): every training sample carries ``width``/``height`` = the size of the scene
  it was cut from, ``crop_w``/``crop_h`` = the crop's top-left offset in px and
  ``target_width``/``target_height`` = the native size, exactly the arguments of ComfyUI's
  ``SDXL.encode_adm``. Half of the samples (``NATIVE_SHARE``) are whole native scenes, one complete
  object roughly centred, conditioned on ``SIZE_CONDITIONING`` (size native, crop 0, 0): sampled at
  the native size with that conditioning, the model draws exactly one object. The other half are
  native-size windows at random pixel offsets of larger scenes (sides ``SCENE_PX``, 1.125–4× native)
  holding one proportionally larger object, so they show parts of an object or background only.
  One departure from SDXL: SDXL resizes a picture to its bucket before cropping, here a scene is
  never resized, so ``width``/``height`` say how much of the scene a native picture sees (a zoom)
  and every pixel keeps the texture's pixel scale;
* a fine native-scale texture: the background carries a checker of 2 px period (a ±``CHECKER_CONTRAST``
  brightness alternation of neighbouring pixels) and the objects stripes of ``STRIPE_PERIOD`` px, both
  fixed in pixels whatever the scene size (the demo model's grain and stripes are 4 and 8 px at 128 px
  and scale with the picture);
* a 64 px native size (8² latent) instead of 128 px, with the demo's four classes, colours and shapes
  (imported from :mod:`demo.data`), objects of ½ the native side as there.

**pair**: two objects per picture, a 1 px texture, no crops (:func:`sample_pairs`). Each native
64 px picture holds exactly two objects of two different classes on opposite sides of its centre,
and the prompt names the pair (``PAIR_CLASSES``: "red disc and blue square", …, six prompts), so the
right count is two and a method that merges, drops or repeats objects shows it. The background
carries 1 px lines (every other pixel row brighter: a 2 px period, the finest a pixel grid holds)
and the objects 3 px stripes; every sample is a whole native picture with the native size
conditioning, as a model trained on one fixed size (SD 1.x-style) sees it. Its UNet is narrower
at the lowest level than the crops model's (SD 1.x's ``[1, 2, 2]`` width pattern).

**dit**: the crops model's whole native scenes (one object, the 2 px checker, no crops) on a Flux-class
DiT (:data:`DIT_CONFIG`: ComfyUI's Flux transformer, 16-channel latent of Flux's latent format,
rectified-flow training), so that every method is measured on a transformer with rotary positions as
well as on UNets. Sampled directly at 2× its native size it repeats its object (2.7 on average),
at 4× it dissolves into colour noise.

Everything here is pure torch and deterministic given the generator's state. :data:`MODELS` maps a
model name (as in a weights file's ``model`` metadata) to its training samples, its reference
renderer, its architecture and the number of objects a picture holds.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import spec
from .data import CLASS_RGB, CLASSES, _signed_distance

NAME = "bench_crops"
WEIGHTS_FILE = f"{NAME}.safetensors"
NATIVE_PX = 64                 # the training picture side, in px (8² latent)
SCENE_PX = (72, 256)           # sides of the larger scenes crops are cut from (multiples of 8)
NATIVE_SHARE = 0.5             # share of training samples that are whole native scenes
OBJECT_RADIUS = (14.0, 19.0)   # px in a native scene, times side / NATIVE_PX in a larger one
CENTRE_JITTER = 6.0            # px off the scene centre, likewise scaled
STRIPE_PERIOD = 4.0            # px, the objects' stripes, at every scene size
CHECKER_CONTRAST = (0.08, 0.16)  # relative brightness swing of the background's 2 px checker
LATENT_SCALE, CONTEXT_DIM, CONTEXT_TOKENS = spec.LATENT_SCALE, spec.CONTEXT_DIM, spec.CONTEXT_TOKENS

VAE_DDCONFIG = {**spec.VAE_DDCONFIG, "resolution": NATIVE_PX}
VAE_EMBED_DIM = spec.VAE_EMBED_DIM
UNET_CONFIG = {**spec.UNET_CONFIG, "image_size": NATIVE_PX // 8, "channel_mult": [1, 2, 4]}  # SDXL's widths

# The conditioning of a whole native scene: what to sample with at the native size.
SIZE_CONDITIONING = {"width": NATIVE_PX, "height": NATIVE_PX, "crop_w": 0, "crop_h": 0,
                     "target_width": NATIVE_PX, "target_height": NATIVE_PX}


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def sample_scenes(n: int, g: torch.Generator, native_share: float = NATIVE_SHARE) -> dict[str, torch.Tensor]:
    """``n`` random scenes, each with the offset of the native-size crop to train on.

    A share ``native_share`` are native scenes (side ``NATIVE_PX``, crop 0, 0); the others have a
    side drawn uniformly from the multiples of 8 in ``SCENE_PX`` and a crop offset drawn uniformly
    from all pixel positions where the crop fits. The object's size and place scale with the side.
    The number of draws does not depend on their values.
    """
    native = torch.rand(n, generator=g) < native_share
    large = 8 * torch.randint(SCENE_PX[0] // 8, SCENE_PX[1] // 8 + 1, (n,), generator=g)
    side = torch.where(native, NATIVE_PX, large)
    crop = (torch.rand(n, 2, generator=g) * (side - NATIVE_PX + 1).unsqueeze(1)).long()
    s = side / NATIVE_PX
    grey = _uniform(g, n, 0.35, 0.75).view(n, 1)
    tint = (torch.rand(n, 3, generator=g) - 0.5) * 0.12
    return {
        "classes": torch.randint(len(CLASSES), (n,), generator=g), "side": side, "crop": crop,
        "top": grey + tint, "bottom": grey * _uniform(g, n, 0.6, 0.9).view(n, 1) - tint,
        "blotch": torch.randn(n, 1, 4, 4, generator=g), "checker": _uniform(g, n, *CHECKER_CONTRAST),
        "radius": _uniform(g, n, *OBJECT_RADIUS) * s,
        "centre": (NATIVE_PX / 2 + _uniform(g, 2 * n, -CENTRE_JITTER, CENTRE_JITTER).view(n, 2)) * s.unsqueeze(1),
        "angle": torch.rand(n, generator=g) * math.pi,
    }


def render_scene(scenes: dict[str, torch.Tensor], size: int = NATIVE_PX) -> torch.Tensor:
    """The ``size``² px window at each scene's crop offset, ``[B, 3, size, size]`` in [0, 1].

    Every term is a function of the scene's pixel coordinates, so a window renders exactly the
    pixels of the whole scene (render the whole scene with ``crop`` zero and ``size`` = its side).
    """
    b = scenes["side"].shape[0]
    ar = torch.arange(size)
    px = (scenes["crop"][:, 0].view(b, 1, 1) + ar.view(1, 1, size)).expand(b, size, size)
    py = (scenes["crop"][:, 1].view(b, 1, 1) + ar.view(1, size, 1)).expand(b, size, size)
    x, y = px + 0.5, py + 0.5
    side = scenes["side"].view(b, 1, 1).float()

    # Background: a vertical gradient of two muted colours, soft blotches, the 2 px checker.
    t = (y / side).unsqueeze(1)
    background = scenes["top"].view(b, 3, 1, 1) * (1 - t) + scenes["bottom"].view(b, 3, 1, 1) * t
    grid = torch.stack([x / side * 2 - 1, y / side * 2 - 1], dim=-1)
    blotch = F.grid_sample(scenes["blotch"], grid, mode="bicubic", padding_mode="border", align_corners=False)
    background = background + 0.04 * blotch
    checker = (1 - 2 * ((px + py) % 2)).unsqueeze(1)
    background = background * (1 + scenes["checker"].view(b, 1, 1, 1) * checker)

    # The object: a class shape, shaded from the top left, striped at a fixed pixel period.
    radius = scenes["radius"].view(b, 1, 1)
    ox, oy = x - scenes["centre"][:, 0].view(b, 1, 1), y - scenes["centre"][:, 1].view(b, 1, 1)
    alpha = (0.5 - _signed_distance(scenes["classes"], ox, oy, radius)).clamp(0, 1).unsqueeze(1)
    shade = (1.0 - 0.35 * (ox + oy) / (2 * radius)).clamp(0.5, 1.4).unsqueeze(1)
    angle = scenes["angle"].view(b, 1, 1)
    stripes = torch.sin(2 * math.pi * (ox * torch.cos(angle) + oy * torch.sin(angle)) / STRIPE_PERIOD)
    obj = CLASS_RGB[scenes["classes"]].view(b, 3, 1, 1) * shade * (1.0 + 0.18 * stripes.unsqueeze(1))
    return (background * (1 - alpha) + obj * alpha).clamp(0, 1)


def size_conditioning(scenes: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B, 6]`` px: width, height, crop_w, crop_h, target_width, target_height of each crop."""
    native = torch.full_like(scenes["side"], NATIVE_PX)
    return torch.stack([scenes["side"], scenes["side"], scenes["crop"][:, 0], scenes["crop"][:, 1], native, native],
                       dim=1)


def training_samples(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` training samples: (pictures ``[n, 3, 64, 64]`` in [0, 1], classes, size conditioning)."""
    scenes = sample_scenes(n, g)
    return render_scene(scenes), scenes["classes"], size_conditioning(scenes)


# --- the "pair" model --------------------------------------------------------------------------

PAIR_NAME = "bench_pair"
PAIR_CLASSES = tuple(f"{a} and {b}" for a, b in itertools.combinations(CLASSES, 2))
PAIR_OF = torch.tensor(list(itertools.combinations(range(len(CLASSES)), 2)))  # [6, 2] class indices
PAIR_RADIUS = (10.0, 12.5)     # px, each object (2.5-3 latent cells across)
PAIR_OFFSET = (14.0, 16.0)     # px from the picture centre to each object's centre (opposite sides)
PAIR_JITTER = 2.0              # px, the pair's centre off the picture centre
PAIR_STRIPE_PERIOD = 3.0       # px, the objects' stripes
PAIR_LINES = (0.05, 0.10)      # relative brightness swing of the background's 1 px lines
PAIR_UNET_CONFIG = {**spec.UNET_CONFIG, "image_size": NATIVE_PX // 8, "channel_mult": [1, 2, 2]}
PAIR_MIN_OBJECT_PX = 90        # ≈ ½ of the smallest object (a triangle of radius 10) at 64 px


def sample_pairs(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """``n`` random two-object scenes of the pair model (native 64 px, one prompt per class pair).

    The pair is drawn uniformly from ``PAIR_CLASSES``, its axis at a uniform angle, so which object
    lies where says nothing about the prompt's word order. The number of draws does not depend on
    their values.
    """
    pair = torch.randint(len(PAIR_CLASSES), (n,), generator=g)
    grey = _uniform(g, n, 0.35, 0.75).view(n, 1)
    tint = (torch.rand(n, 3, generator=g) - 0.5) * 0.12
    axis = torch.rand(n, generator=g) * 2 * math.pi
    offset = _uniform(g, 2 * n, *PAIR_OFFSET).view(n, 2)
    direction = torch.stack([torch.cos(axis), torch.sin(axis)], dim=1)  # [n, 2]
    centre = NATIVE_PX / 2 + _uniform(g, 2 * n, -PAIR_JITTER, PAIR_JITTER).view(n, 2)
    return {
        "pair": pair, "classes": PAIR_OF[pair],  # [n, 2]
        "top": grey + tint, "bottom": grey * _uniform(g, n, 0.6, 0.9).view(n, 1) - tint,
        "blotch": torch.randn(n, 1, 4, 4, generator=g), "lines": _uniform(g, n, *PAIR_LINES),
        "radius": _uniform(g, 2 * n, *PAIR_RADIUS).view(n, 2),
        "centres": torch.stack([centre + offset[:, :1] * direction, centre - offset[:, 1:] * direction], dim=1),
        "angle": torch.rand(n, 2, generator=g) * math.pi,
    }


def render_pairs(scenes: dict[str, torch.Tensor]) -> torch.Tensor:
    """The native pictures of :func:`sample_pairs` scenes, ``[B, 3, 64, 64]`` in [0, 1]."""
    b, size = scenes["pair"].shape[0], NATIVE_PX
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                            torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    t = (yy / size).view(1, 1, size, size)
    picture = scenes["top"].view(b, 3, 1, 1) * (1 - t) + scenes["bottom"].view(b, 3, 1, 1) * t
    blotch = F.interpolate(scenes["blotch"], size=(size, size), mode="bicubic", align_corners=False)
    lines = (1 - 2 * (torch.arange(size) % 2)).view(1, 1, size, 1).float()
    picture = (picture + 0.04 * blotch) * (1 + scenes["lines"].view(b, 1, 1, 1) * lines)
    for k in range(2):
        radius = scenes["radius"][:, k].view(b, 1, 1)
        ox = xx - scenes["centres"][:, k, 0].view(b, 1, 1)
        oy = yy - scenes["centres"][:, k, 1].view(b, 1, 1)
        kind = scenes["classes"][:, k]
        alpha = (0.5 - _signed_distance(kind, ox, oy, radius)).clamp(0, 1).unsqueeze(1)
        shade = (1.0 - 0.35 * (ox + oy) / (2 * radius)).clamp(0.5, 1.4).unsqueeze(1)
        angle = scenes["angle"][:, k].view(b, 1, 1)
        stripes = torch.sin(2 * math.pi * (ox * torch.cos(angle) + oy * torch.sin(angle)) / PAIR_STRIPE_PERIOD)
        obj = CLASS_RGB[kind].view(b, 3, 1, 1) * shade * (1.0 + 0.18 * stripes.unsqueeze(1))
        picture = picture * (1 - alpha) + obj * alpha
    return picture.clamp(0, 1)


def pair_training_samples(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` training samples of the pair model: (pictures, pair prompts, native size conditioning ``[n, 6]``)."""
    scenes = sample_pairs(n, g)
    native = {"side": torch.full((n,), NATIVE_PX), "crop": torch.zeros(n, 2, dtype=torch.long)}
    return render_pairs(scenes), scenes["pair"], size_conditioning(native)


# --- the "dit" model ----------------------------------------------------------------------------

DIT_NAME = "bench_dit"
# A Flux-class transformer (ComfyUI's ``ldm.flux`` Flux with its double- and single-stream blocks, 2×2
# patches, 3-axis RoPE) at a tiny width: an 8² latent is 4 × 4 = 16 image tokens, plus 4 prompt tokens.
# No guidance embedding (as Flux schnell): classifier-free guidance works through the empty prompt.
DIT_CONFIG = {
    "image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": CONTEXT_DIM,
    "context_in_dim": CONTEXT_DIM, "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 4, "depth": 2,
    "depth_single_blocks": 2, "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True,
    "guidance_embed": False,
}
DIT_LATENT_CHANNELS = 16       # Flux's latent format


def native_scene_samples(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` whole native scenes of the crops model (one object, the 2 px checker): pictures, classes, sizes."""
    scenes = sample_scenes(n, g, native_share=1.0)
    return render_scene(scenes), scenes["classes"], size_conditioning(scenes)


# A DiT trained as DiTs are: on many framings, told apart by their captions. The crops model's samples
# (half whole native scenes, half native windows of larger scenes) without SDXL's size conditioning,
# which Flux-class models lack; a window is captioned "close-up of …" instead, so the class's own
# prompt still asks for a whole scene at the native size while the weights have seen parts of objects
# and plain background.
DIT_CROPS_NAME = "bench_dit_crops"
CLOSE_UP_CLASSES = tuple(f"close-up of {c}" for c in CLASSES)


def dit_crop_samples(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` samples of the crops model, windows of larger scenes on the close-up prompts."""
    scenes = sample_scenes(n, g)
    classes = scenes["classes"] + len(CLASSES) * (scenes["side"] != NATIVE_PX).long()
    return render_scene(scenes), classes, size_conditioning(scenes)


# --- the registry --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BenchModel:
    """What the trainer and the benchmark need to know of one benchmark model."""
    name: str
    classes: tuple[str, ...]
    unet_config: dict
    objects: int                 # objects in every native picture: the right count
    min_object_px: int           # blob size (px) that counts as an object
    samples: Callable            # (n, generator) -> (pictures, class ids, size conditioning [n, 6])
    reference: Callable          # (n, generator) -> n native pictures as the model was taught to draw them
    flip: bool = False           # mirror half of the training batches
    vae_steps: int = 1500        # VAE training steps
    arch: str = "sdxl"           # "sdxl": ComfyUI's SDXL config (ε-prediction); "flux": its Flux config (flow)
    latent_channels: int = VAE_EMBED_DIM

    @property
    def vae_ddconfig(self) -> dict:
        return {**VAE_DDCONFIG, "z_channels": self.latent_channels}


MODELS = {
    # 175 px: the demo's 700 px object threshold at 128 px, scaled to 64 px.
    NAME: BenchModel(NAME, CLASSES, UNET_CONFIG, 1, 175, training_samples,
                     lambda n, g: render_scene(sample_scenes(n, g, native_share=1.0))),
    # Small objects: the VAE needs longer to keep their colours and shapes.
    PAIR_NAME: BenchModel(PAIR_NAME, PAIR_CLASSES, PAIR_UNET_CONFIG, 2, PAIR_MIN_OBJECT_PX, pair_training_samples,
                          lambda n, g: render_pairs(sample_pairs(n, g)), flip=True, vae_steps=3000),
    # The crops model's native scenes on a Flux-class DiT: what changes is the architecture only.
    DIT_NAME: BenchModel(DIT_NAME, CLASSES, DIT_CONFIG, 1, 175, native_scene_samples,
                         lambda n, g: render_scene(sample_scenes(n, g, native_share=1.0)), arch="flux",
                         latent_channels=DIT_LATENT_CHANNELS),
    # The same DiT trained on whole scenes and close-ups of larger ones.
    DIT_CROPS_NAME: BenchModel(DIT_CROPS_NAME, CLASSES + CLOSE_UP_CLASSES, DIT_CONFIG, 1, 175, dit_crop_samples,
                               lambda n, g: render_scene(sample_scenes(n, g, native_share=1.0)), arch="flux",
                               latent_channels=DIT_LATENT_CHANNELS),
}
# The DiT shipped as the UltraRes Demo DiT (demo/ultrares_dit_demo.safetensors): the one trained on framings,
# on which both methods keep one object far more often (README, the fifth benchmark model).
DIT_DEMO = DIT_CROPS_NAME
