"""UltraRes V3 nodes: one module per concept, each exporting the tuple ``NODES``.

This file only collects them for ComfyUI (modules in sorted name order), so adding a node
module needs no edit here.
"""
from __future__ import annotations

import importlib
import pkgutil

from comfy_api.latest import ComfyExtension, io


def all_nodes() -> list[type[io.ComfyNode]]:
    found: list[type[io.ComfyNode]] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "NODES", ()))
    return found


class UltraResExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return all_nodes()
