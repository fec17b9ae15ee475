"""UltraPixel Loader: the released added modules (four guidance modules) as an ULTRAPIXEL_MODEL.

UltraPixel (Ren et al., 2024, arXiv:2407.02158). The official code (catcathh/UltraPixel@e85d3bc
``train/train_t2i.py:262-281``) saves the four modules under ``module.64.*`` / ``module.65.*``.
The released ``ultrapixel_t2i.safetensors`` is really a PyTorch pickle, so the format is read
from the file's first bytes, never from its extension; pickles are loaded with
``weights_only=True``. Key names are checked strictly (the release's 168) and the module sizes
are read from the tensor shapes, so a tiny synthetic file for a tiny stage C loads the same way
as the real one. The checks and the loader live in ``kernels/ultrapixel_weights.py``; a damaged
file (truncated, a Git LFS pointer, a pickle of other objects) is reported by
``kernels/weights_file.py`` with its name, its folder and what to do.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import comfy.model_management
import folder_paths
import torch
from comfy_api.latest import io

from ..kernels.ultrapixel_config import UltraPixelConfig
from ..kernels.ultrapixel_weights import load_ultrapixel_modules
from ..kernels.weights_file import DamagedWeightsError
from ._schema import advanced

FOLDER = "ultrapixel"
# Where the authors publish the weights (named in the tooltip and in the missing-file message).
RELEASE_URL = "https://huggingface.co/roubaofeipi/UltraPixel"
ULTRAPIXEL_MODEL = io.Custom("ULTRAPIXEL_MODEL")
DTYPES = {"default": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def register_model_folder() -> None:
    """``models/ultrapixel`` as a model folder (extra_model_paths.yaml entries named ultrapixel add to it)."""
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))
    extensions = folder_paths.folder_names_and_paths[FOLDER][1]
    if not extensions:  # registered by us: list checkpoint files only
        extensions.update(folder_paths.supported_pt_extensions)


register_model_folder()


@dataclasses.dataclass(frozen=True, eq=False)
class UltraPixelModel:
    """The four loaded guidance modules (on the offload device) and how to run them.

    Never modified after loading: the patch nodes make a device/dtype copy per run.
    """

    modules: torch.nn.ModuleDict          # E0 E1 D0 D1 -> kernels.ultrapixel.GuidanceFusionModule
    configs: dict[str, UltraPixelConfig]
    name: str
    dtype: torch.dtype | None             # None: follow the stage-C model's compute dtype

    def channels(self) -> dict[str, int]:
        """Feature channels each module expects at its injection point."""
        return {p: c.ind for p, c in self.configs.items()}


def load_ultrapixel(source: str | os.PathLike[str] | Mapping[str, torch.Tensor], name: str,
                    dtype: torch.dtype | None = None, folder: str | None = None) -> UltraPixelModel:
    """Path or state dict -> :class:`UltraPixelModel` (strict; ValueError names keys on mismatch).

    ``folder`` names where the file lives in the messages about a damaged file (DamagedWeightsError).
    """
    modules, configs = load_ultrapixel_modules(source, dtype=dtype, folder=folder)
    modules = modules.to(comfy.model_management.unet_offload_device())
    return UltraPixelModel(modules=modules, configs=configs, name=name, dtype=dtype)


class UltraPixelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UltraRes_UltraPixelLoader",
            display_name="UltraPixel Loader",
            category="UltraRes/UltraPixel",
            description=(
                "Loads the UltraPixel add-on weights that let Stable Cascade draw at 2048 px and above; pick "
                "ultrapixel_t2i.safetensors and leave weight_dtype on default. Loads the UltraPixel (Ren et "
                "al., 2024) added modules: the four guidance modules "
                "(LR-guidance tokens, implicit-function upsampler, fusion, scale-aware norm) that "
                "sit after the first attention block of each Stable Cascade stage-C level. Put "
                "ultrapixel_t2i.safetensors (the release is a PyTorch pickle despite its name; "
                "converted real safetensors also work) in models/ultrapixel. Keys are checked "
                "strictly and mismatches are named. Models: Stable Cascade stage C 3.6B only "
                "(2048 channels; the 1B lite stage C is incompatible). Cost: about 105 M "
                "parameters, 211 MB in bf16; loading takes a second."),
            inputs=[
                io.Combo.Input("ultrapixel_name", options=folder_paths.get_filename_list(FOLDER),
                               tooltip="The UltraPixel weights file; pick ultrapixel_t2i.safetensors from "
                                       f"models/ultrapixel (download it from {RELEASE_URL}). Pickle or "
                                       "safetensors, detected from the file contents."),
                io.Combo.Input("weight_dtype", options=list(DTYPES), default="default",
                               tooltip="Leave on default; the others force one precision for these small modules. "
                                       "Compute dtype of the added modules: default = follow the stage-C model at "
                                       "sampling time (bf16 on most GPUs, fp32 on CPU).",
                               **advanced()),
            ],
            outputs=[ULTRAPIXEL_MODEL.Output(display_name="ultrapixel_model",
                                             tooltip="Connect to UltraPixel Stage C, INR Upscale or Apply. The four "
                                                     "UltraPixel guidance modules (E0, E1, D0, D1), for the UltraPixel "
                                                     "sampling nodes.")],
        )

    @classmethod
    def execute(cls, ultrapixel_name: str, weight_dtype: str) -> io.NodeOutput:
        path = folder_paths.get_full_path(FOLDER, ultrapixel_name)
        if path is None:
            raise ValueError(f"ultrapixel_name: {ultrapixel_name!r} is not in the models/ultrapixel folders "
                             f"({', '.join(folder_paths.get_folder_paths(FOLDER))}). Download "
                             f"ultrapixel_t2i.safetensors from {RELEASE_URL} into one of them.")
        if weight_dtype not in DTYPES:
            raise ValueError(f"weight_dtype: expected one of {list(DTYPES)}, got {weight_dtype!r}.")
        folder = f"models/ultrapixel ({os.path.dirname(path)})"
        try:
            model = load_ultrapixel(path, ultrapixel_name, DTYPES[weight_dtype], folder=folder)
        except DamagedWeightsError as e:  # names the file and its folder, says what to do
            raise type(e)(f"ultrapixel_name: {e}") from None
        except ValueError as e:
            raise ValueError(f"ultrapixel_name: {ultrapixel_name} is not a usable UltraPixel checkpoint.\n{e}") from e
        return io.NodeOutput(model)


NODES = (UltraPixelLoader,)
