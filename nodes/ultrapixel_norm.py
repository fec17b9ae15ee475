"""UltraPixel Scale-Aware Norm node: the SAN scale and the decoder guidance weight as settings.

UltraPixel (Ren et al., 2024, arXiv:2407.02158), Sec. 3.2, Eq. (4): the fused guidance u is
normalised with an affine map of the sinusoidal embedding of a scale sigma_s, which the official
code (catcathh/UltraPixel@e85d3bc ``modules/inr_fea_res_lite.py:289-397``) computes from the HR
token count as ``sqrt(log_576 N_H)``; the decoder guidance is weighted 0.3 / 0.5 / 0.7 by size
(``modules/model_4stage_lite.py:352-365``). This node only builds a
:class:`..kernels.ultrapixel.NormSettings`; UltraPixel Apply and UltraPixel Stage C apply it.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..kernels.ultrapixel import NormSettings
from ._checks import check_numbers
from .ultrapixel_patch import ULTRAPIXEL_NORM

SCALE_MODES = ("auto", "manual", "off")
STRENGTH_MODES = ("auto", "manual")


def norm_settings(scale: str, sigma_s: float, strength: str, decoder_strength: float) -> NormSettings:
    """The settings for the node's inputs; ValueError names a mode that is not offered."""
    if scale not in SCALE_MODES:
        raise ValueError(f"scale: expected one of {list(SCALE_MODES)}, got {scale!r}.")
    if strength not in STRENGTH_MODES:
        raise ValueError(f"strength: expected one of {list(STRENGTH_MODES)}, got {strength!r}.")
    return NormSettings(sigma_s=float(sigma_s) if scale == "manual" else None, san=scale != "off",
                        decoder_strength=float(decoder_strength) if strength == "manual" else None)


class UltraPixelScaleAwareNorm(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="UltraRes_UltraPixelScaleAwareNorm",
            display_name="UltraPixel Scale-Aware Norm",
            category="UltraRes/UltraPixel",
            description=(
                "Tunes how strongly and at which scale UltraPixel's guidance reshapes the high-resolution "
                "picture; leave both on auto for the paper's behaviour (the same pictures as without this "
                "node). Connect it to the norm input of UltraPixel Apply or UltraPixel Stage C. scale: the "
                "scale-aware norm's sigma_s (Eq. (4)): auto = from the target size, sqrt(log_576 of the "
                "stage-C token count), 1.10 at 2048², 1.20 at 4096²; manual = your value, e.g. the 4096² "
                "value at 2048² for the detail the modules add at 4K; off = no scale-aware norm (for "
                "comparison only: the modules were trained with it). strength: the weight of the decoder "
                "guidance: auto = the paper's 0.3 / 0.5 / 0.7 below 3072² / below 4096² / from 4096²; "
                "manual = your value (higher = closer to the low-resolution composition, lower = more "
                "freedom and detail). Models: Stable Cascade stage C with UltraPixel. Cost: none."),
            inputs=[
                io.Combo.Input("scale", options=list(SCALE_MODES), default="auto",
                               tooltip="auto = the paper's scale for the target size; manual = sigma_s below; "
                                       "off = skip the scale-aware norm (for comparison)."),
                io.Float.Input("sigma_s", default=1.2, min=0.1, max=4.0, step=0.001, round=0.00001,
                               tooltip="Used when scale is manual. The scale the norm believes it works at: "
                                       "1.10 = 2048², 1.16 = 3072², 1.20 = 4096² (sqrt(log_576 of the stage-C "
                                       "token count))."),
                io.Combo.Input("strength", options=list(STRENGTH_MODES), default="auto",
                               tooltip="auto = the paper's decoder weight 0.3 / 0.5 / 0.7 by target size; manual = "
                                       "decoder_strength below."),
                io.Float.Input("decoder_strength", default=0.5, min=0.0, max=2.0, step=0.01,
                               tooltip="Used when strength is manual. Higher = keeps the low-resolution "
                                       "composition more closely; lower = more freedom (0 = no decoder guidance). "
                                       "The encoder guidance always has weight 1."),
            ],
            outputs=[ULTRAPIXEL_NORM.Output(display_name="norm",
                                            tooltip="Connect to the norm input of UltraPixel Apply or UltraPixel "
                                                    "Stage C.")],
        )

    @classmethod
    def execute(cls, scale: str, sigma_s: float, strength: str, decoder_strength: float) -> io.NodeOutput:
        check_numbers(cls, locals())
        return io.NodeOutput(norm_settings(scale, sigma_s, strength, decoder_strength))


NODES = (UltraPixelScaleAwareNorm,)
