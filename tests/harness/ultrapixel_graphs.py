"""UltraPixel graph pieces shared by test_ultrapixel_nodes.py and test_ultrapixel_compat.py.

Graphs use the tiny Stable Cascade of ``UltraResTest_TinyCascade`` and its stock nodes. Records are
written by ``UltraResTest_RecordUltraPixel`` (``tiny_ultrapixel.py``) and
``UltraResTest_StageCProbe`` (``tiny_cascade_extras.py``) and reach the tests through the
``ultrapixel_records`` and ``stage_c_probes`` fixtures of ``tests/comfy/conftest.py``.
"""
from __future__ import annotations

STEPS = 2


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


def hr_graph(zero_output: bool = False, patched: bool = True, seed: int = 1, norm: dict | None = None):
    """LR guidance -> INR upscale -> (Apply, with UltraPixel Scale-Aware Norm inputs ``norm``) ->
    stock KSampler on the 256² HR latent; the result is recorded as ``hr``."""
    g = graph_builder()
    tc, pos, neg = cascade(g, neg_text="blurry")
    lr = g.node("UltraRes_UltraPixelLRGuidance", model=tc.out(0), positive=pos.out(0), negative=neg.out(0),
                **sampling(seed=seed))
    upm = g.node("UltraResTest_TinyUltraPixel", seed=0, zero_output=zero_output)
    inr = g.node("UltraRes_UltraPixelINRUpscale", ultrapixel_model=upm.out(0), guidance=lr.out(0),
                 width=256, height=256)
    model = tc.out(0)
    if patched:
        extra = {} if norm is None else {"norm": g.node("UltraRes_UltraPixelScaleAwareNorm", **norm).out(0)}
        model = g.node("UltraRes_UltraPixelApply", model=model, ultrapixel_model=upm.out(0), guidance=inr.out(0),
                       cfg_rescale=0.0, **extra).out(0)
    ks = g.node("KSampler", model=model, positive=pos.out(0), negative=neg.out(0), latent_image=inr.out(1),
                seed=seed, steps=STEPS, cfg=4.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    g.node("UltraResTest_RecordUltraPixel", tag="hr", latent=ks.out(0))
    return g.finalize()
