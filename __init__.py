"""UltraRes: 4K-to-gigapixel image generation for ComfyUI (Pixelsmith, FreeScale, UltraPixel).

ComfyUI loads this package as a custom node pack and calls ``comfy_entrypoint``. Nothing here
imports ComfyUI at module level, so ``kernels/`` can be imported and tested without a host.
"""


async def comfy_entrypoint():
    """Return the pack's V3 extension (called by ComfyUI's custom-node loader)."""
    from .nodes import UltraResExtension

    return UltraResExtension()
