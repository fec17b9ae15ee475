"""UltraRes V3 nodes. One module per concept; this file only lists them for ComfyUI."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .freescale_fusion import FreeScaleScaleFusion


class UltraResExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


NODES: tuple[type[io.ComfyNode], ...] = (FreeScaleScaleFusion,)
