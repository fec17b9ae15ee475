"""UltraRes Demo Model, Demo Prompt and Demo Cascade: the small trained models shipped inside the pack.

The weights (``demo/ultrares_demo.safetensors``, trained by ``demo/train.py``) hold a VAE and an
SDXL-class UNet built from ComfyUI's own classes, plus one learned "prompt" embedding per object
class. They exist so that anyone can see, on a CPU and without downloading a model, what the
pack's methods fix: run above its 128 px training size the model repeats its object, as SDXL does
above 1024 px. ``demo/ultrares_cascade_demo.safetensors`` and ``demo/ultrapixel_demo.safetensors``
(trained by ``demo/train_cascade.py``) do the same for UltraPixel: a tiny Stable Cascade stage C,
a decoder in place of stages B/A, and UltraPixel modules trained for that stage C.
``demo/ultrares_dit_demo.safetensors`` (trained by ``demo/train_bench.py``) is a Flux-class DiT: ComfyUI's
own Flux transformer, tiny, trained at 64 px, so every method can be seen on a DiT too.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import torch
from comfy_api.latest import io

from ..demo import bench_models, cascade_spec, spec
from ..kernels.weights_file import DamagedWeightsError, read_state_dict
from .ultrapixel_loader import ULTRAPIXEL_MODEL, UltraPixelModel, load_ultrapixel

DEMO = Path(__file__).resolve().parents[1] / "demo"
WEIGHTS = DEMO / spec.WEIGHTS_FILE
CASCADE_WEIGHTS = DEMO / cascade_spec.WEIGHTS_FILE
ULTRAPIXEL_WEIGHTS = DEMO / cascade_spec.ULTRAPIXEL_FILE
DIT = bench_models.MODELS[bench_models.DIT_DEMO]
DIT_WEIGHTS = DEMO / "ultrares_dit_demo.safetensors"


def _read_file(path: Path, trainer: str) -> dict[str, torch.Tensor]:
    """All tensors of one shipped weights file, through the pack's checked reader, so a missing,
    truncated or Git LFS pointer file is a message saying what to do, never a reader's error."""
    try:
        return read_state_dict(path, folder=f"the UltraRes pack's demo folder ({path.parent})")
    except DamagedWeightsError as e:
        raise type(e)(f"{e}. The demo weights ship inside UltraRes ({path.parents[1]}): reinstall the pack "
                      f"(in a git clone of it, run `git lfs pull` there), or retrain them with "
                      f"`python -m {trainer}`.") from None


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of ``state`` whose keys start with ``prefix``, the prefix dropped."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _read(prefix: str) -> dict[str, torch.Tensor]:
    """The demo model's tensors whose keys start with ``prefix``, the prefix dropped."""
    return _strip(_read_file(WEIGHTS, "demo.train"), prefix)


def _check_keys(what: str, module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected, found = set(module.state_dict()), set(state)
    if expected != found:
        raise ValueError(f"{path.name}: the {what} weights do not match the demo architecture "
                         f"(missing {sorted(expected - found)[:5]}, unexpected {sorted(found - expected)[:5]}).")


def _patcher(config, state: dict[str, torch.Tensor], what: str, path: Path) -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI model of ``config`` holding ``state``, loaded the way ComfyUI loads a checkpoint."""
    load_device = mm.get_torch_device()
    dtype = mm.unet_dtype(model_params=sum(v.numel() for v in state.values()),
                          supported_dtypes=config.supported_inference_dtypes)
    config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device, config.supported_inference_dtypes))
    model = config.get_model({}, "", device=mm.unet_offload_device())
    _check_keys(what, model.diffusion_model, state, path)
    model.diffusion_model.load_state_dict(state, strict=True)
    return comfy.model_patcher.ModelPatcher(model.eval(), load_device=load_device,
                                            offload_device=mm.unet_offload_device())


def _vae(state: dict[str, torch.Tensor], ddconfig: dict, embed_dim: int, path: Path) -> comfy.sd.VAE:
    vae = comfy.sd.VAE(sd=state, config={"params": {"ddconfig": dict(ddconfig), "embed_dim": embed_dim}})
    _check_keys("VAE", vae.first_stage_model, state, path)
    vae.latent_channels = ddconfig["z_channels"]  # ComfyUI assumes 4 for a VAE built from a config
    return vae


def load_demo_model() -> tuple[comfy.model_patcher.ModelPatcher, comfy.sd.VAE]:
    """(ModelPatcher of the UNet, ComfyUI VAE)."""
    state = _read_file(WEIGHTS, "demo.train")
    patcher = _patcher(comfy.supported_models.SDXL(dict(spec.UNET_CONFIG)), _strip(state, "unet."), "UNet", WEIGHTS)
    return patcher, _vae(_strip(state, "vae."), spec.VAE_DDCONFIG, spec.VAE_EMBED_DIM, WEIGHTS)


def load_demo_cascade() -> tuple[comfy.model_patcher.ModelPatcher, UltraPixelModel, comfy.sd.VAE, list, list]:
    """(stage C, UltraPixel modules, decoder VAE, positive, negative) of the Stable Cascade demo."""
    state = _read_file(CASCADE_WEIGHTS, "demo.train_cascade")
    config = comfy.supported_models.Stable_Cascade_C(dict(cascade_spec.STAGE_C_CONFIG))
    config.sampling_settings = {"shift": 1.0}  # trained at shift 1, UltraPixel's shift (the 3.6B default is 2)
    patcher = _patcher(config, _strip(state, "stage_c."), "stage C", CASCADE_WEIGHTS)
    vae = _vae(_strip(state, "vae."), cascade_spec.VAE_DDCONFIG, cascade_spec.VAE_EMBED_DIM, CASCADE_WEIGHTS)
    modules = load_ultrapixel(_read_file(ULTRAPIXEL_WEIGHTS, "demo.train_cascade"), ULTRAPIXEL_WEIGHTS.name,
                              folder=f"the UltraRes pack's demo folder ({ULTRAPIXEL_WEIGHTS.parent})")
    table = state["text.embeddings"].float()
    return patcher, modules, vae, _conditioning(table, 0), _conditioning(table, len(cascade_spec.CLASSES))


def _flux_config(dit_config: dict) -> comfy.supported_models.Flux:
    """ComfyUI's Flux model config of ``dit_config`` on this ComfyUI's ``FluxParams`` (newer releases add
    ``txt_ids_dims``, which Flux.1 checkpoints detect as ``[]``)."""
    import comfy.ldm.flux.model

    dit_config = dict(dit_config)
    if "txt_ids_dims" in {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}:
        dit_config["txt_ids_dims"] = []
    return comfy.supported_models.Flux(dit_config)


def load_demo_dit(object_class: str) -> tuple[comfy.model_patcher.ModelPatcher, comfy.sd.VAE, list, list]:
    """(Flux-class DiT, its VAE, positive, negative) of the DiT demo, for one of ``spec.CLASSES``."""
    if object_class not in spec.CLASSES:
        raise ValueError(f"object: expected one of {list(spec.CLASSES)}, got {object_class!r}.")
    state = _read_file(DIT_WEIGHTS, f"demo.train_bench --model {DIT.name} --out {DIT_WEIGHTS.relative_to(DEMO.parent)}")
    patcher = _patcher(_flux_config(DIT.unet_config), _strip(state, "unet."), "DiT", DIT_WEIGHTS)
    vae = _vae(_strip(state, "vae."), DIT.vae_ddconfig, DIT.latent_channels, DIT_WEIGHTS)
    table = state["text.embeddings"].float()
    return (patcher, vae, _conditioning(table, DIT.classes.index(object_class)),
            _conditioning(table, len(DIT.classes)))


def _conditioning(table: torch.Tensor, row: int, **extra) -> list:
    """CONDITIONING of one row of a learned prompt table: its tokens, pooled output = their mean."""
    tokens = table[row:row + 1]
    return [[tokens, {"pooled_output": tokens.mean(1), **extra}]]


def demo_conditioning(object_class: str) -> tuple[list, list]:
    """(positive, negative) CONDITIONING for one class: learned tokens, pooled = their mean."""
    if object_class not in spec.CLASSES:
        raise ValueError(f"object: expected one of {list(spec.CLASSES)}, got {object_class!r}.")
    table = _read("text.")["embeddings"].float()
    return (_conditioning(table, spec.CLASSES.index(object_class), **spec.SIZE_CONDITIONING),
            _conditioning(table, len(spec.CLASSES), **spec.SIZE_CONDITIONING))


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


class DemoCascade(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_DemoCascade",
            display_name="UltraRes Demo Cascade",
            category="UltraRes/Demo",
            description=(
                "Loads a tiny built-in Stable Cascade stage C with its own UltraPixel modules, so you can try "
                "UltraPixel Stage C on a CPU with no download; connect MODEL, ultrapixel_model, positive and "
                "negative to UltraPixel Stage C with lr_size 512 and width/height 1024 (2×) or 2048 (4×), then "
                "decode its stage_c output with this VAE. The stage C (ComfyUI's own StageC class in the 3.6B "
                "model's layout, ε-prediction, Stable Cascade schedule at shift 1) was trained on 96 px pictures "
                "of one red disc, i.e. a 12×12 stage-C latent, which Stable Cascade calls 512 px; sampled "
                "directly at 4× that it repeats the disc, as the real stage C does above 1024 px. Stages B and "
                "A are too big for a CPU demo, so a small VAE decodes the stage-C latent at 8 px per cell in "
                "their place (a 2048 px job decodes to 384 px). Models: this demo only. Cost: loads in well "
                "under a second; a 4× UltraPixel picture takes about 5 s on 2 CPU cores."),
            inputs=[],
            outputs=[
                io.Model.Output(display_name="MODEL",
                                tooltip="The demo stage C: connect it to UltraPixel Stage C or LR Guidance, or to a "
                                        "KSampler with a StableCascade_EmptyLatentImage for direct sampling (native "
                                        "size 512, i.e. a 12×12 latent)."),
                ULTRAPIXEL_MODEL.Output(display_name="ultrapixel_model",
                                        tooltip="The UltraPixel modules trained for this stage C: connect them where "
                                                "UltraPixel Loader's output would go."),
                io.Vae.Output(display_name="VAE",
                              tooltip="Decodes this stage C's latents to pictures (VAE Decode), 8 px per latent cell; "
                                      "stands in for Stable Cascade's stages B and A."),
                io.Conditioning.Output(display_name="positive",
                                       tooltip="Connect to positive: the learned prompt \"red disc\" (the model's "
                                               "only word)."),
                io.Conditioning.Output(display_name="negative",
                                       tooltip="Connect to negative: the empty prompt, for classifier-free guidance."),
            ],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(*load_demo_cascade())


class DemoDiT(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="UltraRes_DemoDiT",
            display_name="UltraRes Demo DiT (Flux-class)",
            category="UltraRes/Demo",
            description=(
                "Loads a tiny built-in Flux-class DiT with its VAE and prompt, so you can try Pixelsmith and "
                "FreeScale on a transformer on a CPU with no download; start with Empty SD3 Latent Image at 64×64 "
                "for the base image, cfg 4. It is ComfyUI's own Flux transformer (double- and single-stream "
                "blocks, 2×2 patches, rotary positions, 16-channel latent in Flux's format, rectified flow, no "
                "guidance embedding) at 1.8 M parameters, trained on 64×64 px pictures of one object on a 2 px "
                "checker and on 64 px close-ups of larger ones. Sampled directly at 2× or 4× it repeats the "
                "object. Models: this demo only. Cost: loads in well under a second; a 256² image takes seconds "
                "on a CPU."),
            inputs=[
                io.Combo.Input("object", options=list(spec.CLASSES), default=spec.CLASSES[0],
                               tooltip="Which object appears in the picture; try red disc."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL",
                                tooltip="The demo DiT: connect it to a sampler or an UltraRes node; it draws best at "
                                        "64 px (8×8 latent cells, 4×4 image tokens)."),
                io.Vae.Output(display_name="VAE", tooltip="Its VAE: 8× down, 16 channels, Flux's latent format."),
                io.Conditioning.Output(display_name="positive",
                                       tooltip="Connect to positive: the chosen object's learned prompt."),
                io.Conditioning.Output(display_name="negative",
                                       tooltip="Connect to negative: the empty prompt, for classifier-free guidance."),
            ],
        )

    @classmethod
    def execute(cls, object: str) -> io.NodeOutput:  # noqa: A002  (the input's name in the UI)
        return io.NodeOutput(*load_demo_dit(object))


NODES = (DemoModel, DemoPrompt, DemoCascade, DemoDiT)
