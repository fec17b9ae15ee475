"""UltraRes: 4K-to-gigapixel image generation for ComfyUI (Pixelsmith, FreeScale, UltraPixel).

ComfyUI loads this package as a custom node pack and calls ``comfy_entrypoint``. Nothing here
imports ComfyUI at module level, so ``kernels/`` can be imported and tested without a host.
"""

# Served by ComfyUI at /extensions/<this folder's name>/: the node help pages (web/docs/<node_id>.md)
# that the frontend's node help panel asks for by the pack's folder name. pyproject.toml's
# [tool.comfy] web registers the same folder under the project name; this line covers clones into a
# folder of another name (ComfyUI-Manager installs from git into "ComfyUI-UltraRes").
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """Return the pack's V3 extension (called by ComfyUI's custom-node loader)."""
    from .nodes import UltraResExtension

    return UltraResExtension()
