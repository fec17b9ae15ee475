"""UltraPixel graph pieces and record fixtures shared by test_ultrapixel_nodes.py and test_ultrapixel_compat.py.

Graphs use the tiny Stable Cascade of ``UltraResTest_TinyCascade`` and its stock nodes; records are
written by ``UltraResTest_RecordUltraPixel`` (``tiny_ultrapixel.py``) and
``UltraResTest_StageCProbe`` (``tiny_cascade_extras.py``). Test modules import the fixtures by name.
"""
from __future__ import annotations

import pytest

from conftest import cleared_records

STEPS = 2


@pytest.fixture
def ultrapixel_records(host):
    """Latents, guidance and models recorded by ``UltraResTest_RecordUltraPixel`` (cleared)."""
    yield from cleared_records(host, "UltraResTest_RecordUltraPixel", "ULTRAPIXEL_RECORDS")


@pytest.fixture
def stage_c_probes(host):
    """Stage-C calls seen by ``UltraResTest_StageCProbe`` (cleared)."""
    yield from cleared_records(host, "UltraResTest_StageCProbe", "STAGE_C_PROBE_RECORDS")


def graph_builder():
    from comfy_execution.graph_utils import GraphBuilder

    return GraphBuilder(prefix="")


def cascade(g, pos_text="a castle on a hill", neg_text=""):
    """Tiny stage C / B / CLIP and the two CLIPTextEncode prompts: (cascade node, positive, negative)."""
    tc = g.node("UltraResTest_TinyCascade", seed=0)
    pos = g.node("CLIPTextEncode", clip=tc.out(2), text=pos_text)
    neg = g.node("CLIPTextEncode", clip=tc.out(2), text=neg_text)
    return tc, pos, neg


def sampling(width=256, height=256, seed=1, steps=STEPS, cfg=4.0, cfg_rescale=0.7, shift=1.0):
    """The sampling inputs of UltraPixel LR Guidance / Stage C."""
    return dict(width=width, height=height, seed=seed, steps=steps, cfg=cfg, cfg_rescale=cfg_rescale, shift=shift)


def by_tag(records, tag):
    """The last record labelled ``tag``."""
    found = [r for r in records if r["tag"] == tag]
    assert found, f"no record {tag!r}"
    return found[-1]
