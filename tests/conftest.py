"""Test-wide setup: make the pack importable as the package ``ultrares``.

The checkout folder may have any name (ComfyUI users clone it as ``ComfyUI-UltraRes`` or
``ultrares``), so the package is registered from its ``__init__.py`` instead of by folder name.
"""
import importlib.util
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]


def _register_pack(name: str = "ultrares"):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_register_pack()


def pytest_addoption(parser):
    parser.addoption(
        "--comfyui", default=None,
        help="ComfyUI folder to test against (default: $ULTRARES_COMFYUI). Built by tests/host/build_host.sh.")
