"""In-process ComfyUI: booted once per test session with ``--cpu``, the pack and the test fixtures."""
from __future__ import annotations

import pytest

from harness.comfy_host import FIXTURE_PACK, PACK_ROOT, ComfyHost, comfy_dir_option
from harness.records import cleared_records


@pytest.fixture(scope="session")
def host(pytestconfig, tmp_path_factory) -> ComfyHost:
    return ComfyHost.boot(comfy_dir_option(pytestconfig), tmp_path_factory.mktemp("comfy"),
                          packs={"ultrares": PACK_ROOT, "ultrares_testing": FIXTURE_PACK})


@pytest.fixture
def probe_records(host):
    """Calls recorded by ``UltraResTest_ModelProbe``."""
    yield from cleared_records(host, "UltraResTest_ModelProbe", "PROBE_RECORDS")


@pytest.fixture
def records(host):
    """Calls recorded by ``UltraResTest_FreeScaleProbe``."""
    yield from cleared_records(host, "UltraResTest_FreeScaleProbe", "FREESCALE_RECORDS")


@pytest.fixture
def ultrapixel_records(host):
    """Latents, guidance and models recorded by ``UltraResTest_RecordUltraPixel``."""
    yield from cleared_records(host, "UltraResTest_RecordUltraPixel", "ULTRAPIXEL_RECORDS")


@pytest.fixture
def stage_c_probes(host):
    """Stage-C calls seen by ``UltraResTest_StageCProbe``."""
    yield from cleared_records(host, "UltraResTest_StageCProbe", "STAGE_C_PROBE_RECORDS")
