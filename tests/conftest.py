"""Test-wide setup: the pack importable as the package ``ultrares``, and the ``--comfyui`` option.

The harness (``tests/harness``) is importable as ``harness``: pytest puts ``tests/`` on
``sys.path`` (``pythonpath`` in pyproject.toml).
"""
from __future__ import annotations

from harness.pack import register_pack

register_pack()


def pytest_addoption(parser):
    parser.addoption(
        "--comfyui", default=None,
        help="ComfyUI folder to test against (default: $ULTRARES_COMFYUI). Built by scripts/build_host.sh.")
