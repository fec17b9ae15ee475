"""Schema helpers shared by the node modules: expert inputs hidden behind the frontend's "advanced".

ComfyUI 0.33+ accepts ``advanced=True`` on V3 inputs (``comfy_api.latest.io.Input``; the Int,
Float, Boolean, Combo and String inputs forward it) and its frontend then folds those widgets away
until "show advanced" is clicked. Older ComfyUI (0.3.75, the CI pin) has no such parameter and
would raise ``TypeError``, so the flag is passed only where every widget input class takes it::

    io.Int.Input("band", ..., **advanced())

On an older ComfyUI the input is simply shown like any other.
"""
from __future__ import annotations

import inspect

from comfy_api.latest import io

WIDGET_INPUTS = (io.Int.Input, io.Float.Input, io.Boolean.Input, io.Combo.Input, io.String.Input)


def takes_advanced() -> bool:
    """Does every widget input class of this ComfyUI accept ``advanced``?"""
    return all("advanced" in inspect.signature(cls.__init__).parameters for cls in WIDGET_INPUTS)


ADVANCED_KWARGS: dict = {"advanced": True} if takes_advanced() else {}
"""What :func:`advanced` adds to an input's keyword arguments on this ComfyUI."""


def advanced() -> dict:
    """Keyword arguments marking a V3 input as advanced (expert-only), or none where unsupported.

    Read when a schema is defined, so a test can swap :data:`ADVANCED_KWARGS`.
    """
    return dict(ADVANCED_KWARGS)


def keep_detail_input() -> io.Boolean.Input:
    """The ``keep_detail`` switch of the cascade nodes (``_stage.reencode(keep_detail=...)``); optional, so
    prompts saved before it existed still run (as off)."""
    return io.Boolean.Input(
        "keep_detail", default=False, optional=True,
        tooltip="On = keeps the model's own fine texture (grain, fabric, tiny patterns) that the resize between "
                "stages washes out; try on when results look flat or soft. Off = the paper's stage input. "
                "UltraRes addition: the broad latent content comes from the previous stage's latent itself "
                "(which still carries the texture of every cell), the sharp edges from the resized image. "
                "Costs one blur of the latent (and one VAE encode at the input size when an IMAGE is given); "
                "off reproduces earlier results exactly.")
