"""The pack's folders, and registering the checkout as the package ``ultrares``.

The checkout folder may have any name (ComfyUI users clone it as ``ComfyUI-UltraRes`` or
``ultrares``), so the package is registered from its ``__init__.py`` instead of by folder name.
This module imports nothing from the harness or ComfyUI: the kernel-isolation test loads it by
file path in a bare interpreter.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACK_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_PACK = PACK_ROOT / "tests" / "fixtures" / "ultrares_testing"
# The shipped workflows (ComfyUI's Templates browser reads this folder; the file name is the card's title).
WORKFLOW_DIR = PACK_ROOT / "example_workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.json"))
DEMO_WORKFLOW = WORKFLOW_DIR / ("Demo on CPU - Pixelsmith, FreeScale and UltraPixel vs direct sampling "
                                "(no downloads).json")


def register_pack(name: str = "ultrares") -> ModuleType:
    """Import the checkout as package ``name`` (once per process) and return it."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
