"""UltraRes Demo Model and Demo Prompt: the small trained model shipped inside the pack.

The weights (``demo/ultrares_demo.safetensors``, trained by ``demo/train.py``) hold a VAE and an
SDXL-class UNet built from ComfyUI's own classes, plus one learned "prompt" embedding per object
class. They exist so that anyone can see, on a CPU and without downloading a model, what the
pack's methods fix: run above its 128 px training size the model repeats its object, as SDXL does
above 1024 px.
"""
from __future__ import annotations

from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import torch
from comfy_api.latest import io

from ..demo import spec
from ..kernels.weights_file import DamagedWeightsError, read_state_dict

WEIGHTS = Path(__file__).resolve().parents[1] / "demo" / spec.WEIGHTS_FILE


def _read(prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of the shipped weights whose keys start with ``prefix``, the prefix dropped.

    The whole file (a few MB) goes through the pack's checked reader, so a missing, truncated or
    Git LFS pointer file is a message saying what to do, never a reader's error.
    """
    try:
        state = read_state_dict(WEIGHTS, folder=f"the UltraRes pack's demo folder ({WEIGHTS.parent})")
    except DamagedWeightsError as e:
        raise type(e)(f"{e}. The demo weights ship inside UltraRes ({WEIGHTS.parents[1]}): reinstall the pack "
                      f"(in a git clone of it, run `git lfs pull` there), or retrain them with "
                      f"`python -m demo.train`.") from None
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _check_keys(what: str, module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected, found = set(module.state_dict()), set(state)
    if expected != found:
        raise ValueError(f"{WEIGHTS.name}: the {what} weights do not match the demo architecture "
                         f"(missing {sorted(expected - found)[:5]}, unexpected {sorted(found - expected)[:5]}).")


def load_demo_model() -> tuple[comfy.model_patcher.ModelPatcher, comfy.sd.VAE]:
    """(ModelPatcher of the UNet, ComfyUI VAE), loaded the way ComfyUI loads a checkpoint."""
    unet_sd = _read("unet.")
    config = comfy.supported_models.SDXL(dict(spec.UNET_CONFIG))
    load_device = mm.get_torch_device()
    dtype = mm.unet_dtype(model_params=sum(v.numel() for v in unet_sd.values()),
                          supported_dtypes=config.supported_inference_dtypes)
    config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device, config.supported_inference_dtypes))
    model = config.get_model({}, "", device=mm.unet_offload_device())
    _check_keys("UNet", model.diffusion_model, unet_sd)
    model.diffusion_model.load_state_dict(unet_sd, strict=True)
    patcher = comfy.model_patcher.ModelPatcher(model.eval(), load_device=load_device,
                                               offload_device=mm.unet_offload_device())

    vae_sd = _read("vae.")
    vae = comfy.sd.VAE(sd=vae_sd, config={"params": {"ddconfig": dict(spec.VAE_DDCONFIG),
                                                      "embed_dim": spec.VAE_EMBED_DIM}})
    _check_keys("VAE", vae.first_stage_model, vae_sd)
    return patcher, vae


def demo_conditioning(object_class: str) -> tuple[list, list]:
    """(positive, negative) CONDITIONING for one class: learned tokens, pooled = their mean."""
    if object_class not in spec.CLASSES:
        raise ValueError(f"object: expected one of {list(spec.CLASSES)}, got {object_class!r}.")
    table = _read("text.")["embeddings"].float()

    def cond(row: int) -> list:
        tokens = table[row:row + 1]
        return [[tokens, {"pooled_output": tokens.mean(1), **spec.SIZE_CONDITIONING}]]

    return cond(spec.CLASSES.index(object_class)), cond(len(spec.CLASSES))


class DemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_DemoModel",
            display_name="UltraRes Demo Model",
            category="UltraRes/Demo",
            description=(
                "Loads a tiny built-in model so you can try Pixelsmith and FreeScale on a CPU in seconds, "
                "with no download and no model folder; start with Empty Latent Image at 128×128 for the base "
                "image. It is a 2.8 M-parameter SDXL-class UNet and an 8× VAE built from ComfyUI's own "
                "classes, trained on 128×128 px pictures of one striped object (red disc, blue square, green "
                "triangle, yellow diamond). Use it with UltraRes Demo Prompt: sampled directly at 4× its size "
                "it repeats the object, as SDXL does above 1024 px; Pixelsmith and FreeScale fix that. "
                "Models: this demo model only (it ships inside the pack). Cost: loads in well under a second; "
                "a 512² image takes seconds on a CPU."),
            inputs=[],
            outputs=[
                io.Model.Output(display_name="MODEL",
                                tooltip="The demo model: connect it to a sampler or an UltraRes node; it draws best at "
                                        "128 px. An SDXL-class UNet (ε-prediction, SDXL noise schedule; native size 128 px)."),
                io.Vae.Output(display_name="VAE",
                              tooltip="The demo VAE: connect it wherever a VAE is asked for with the demo model. "
                                      "8× down, 4 channels, SDXL latent scale."),
            ],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(*load_demo_model())


class DemoPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_DemoPrompt",
            display_name="UltraRes Demo Prompt",
            category="UltraRes/Demo",
            description=(
                "Chooses which object the demo model draws; start with red disc. It is the demo model's "
                "'text encoder': returns the learned prompt embedding of the chosen class as positive "
                "conditioning and the empty prompt as negative, with SDXL size conditioning of 128×128 (the "
                "training size, as for SDXL at 1024² when upscaling). Use only with UltraRes Demo Model. "
                "Cost: none."),
            inputs=[
                io.Combo.Input("object", options=list(spec.CLASSES), default=spec.CLASSES[0],
                               tooltip="Which object appears in the picture; try red disc. These four classes are the demo model's whole vocabulary."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Connect to positive: makes the sampler draw the chosen object (its learned prompt embedding)."),
                io.Conditioning.Output(display_name="negative", tooltip="Connect to negative: the empty prompt, for classifier-free guidance."),
            ],
        )

    @classmethod
    def execute(cls, object: str) -> io.NodeOutput:  # noqa: A002  (the input's name in the UI)
        return io.NodeOutput(*demo_conditioning(object))


NODES = (DemoModel, DemoPrompt)
