"""In-process ComfyUI: booted once per test session with ``--cpu``, the pack and the test fixtures."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))
from comfy_host import FIXTURE_PACK, PACK_ROOT, ComfyHost  # noqa: E402


def comfy_dir_option(config) -> Path:
    value = config.getoption("--comfyui") or os.environ.get("ULTRARES_COMFYUI")
    if not value:
        raise pytest.UsageError(
            "no ComfyUI to test against: pass --comfyui DIR or set ULTRARES_COMFYUI "
            "(tests/host/build_host.sh builds one; see README 'Run the tests')")
    return Path(value)


@pytest.fixture(scope="session")
def host(pytestconfig, tmp_path_factory) -> ComfyHost:
    return ComfyHost.boot(comfy_dir_option(pytestconfig), tmp_path_factory.mktemp("comfy"),
                          packs={"ultrares": PACK_ROOT, "ultrares_testing": FIXTURE_PACK})


def cleared_records(host, node_id: str, name: str):
    """Yield the (cleared) record list ``name`` of the test-fixture module defining ``node_id``."""
    records = getattr(host.module_of(node_id), name)
    records.clear()
    yield records
    records.clear()


@pytest.fixture
def probe_records(host):
    yield from cleared_records(host, "UltraResTest_ModelProbe", "PROBE_RECORDS")


@pytest.fixture
def records(host):
    """Calls recorded by ``UltraResTest_FreeScaleProbe``."""
    yield from cleared_records(host, "UltraResTest_FreeScaleProbe", "FREESCALE_RECORDS")
