"""Shared set-up of the benchmarks: boot ComfyUI, build the SDXL-class model, meter the calls.

* CPU: the tests' in-process host (``tests/harness/comfy_host.py``, forces ``--cpu``) with the tiny
  seeded SDXL-class UNet of the test fixtures.
* CUDA: ComfyUI's modules imported the same way without ``--cpu``, and a randomly initialised
  full-size SDXL UNet built from ComfyUI's own SDXL model class (no weight file), fp16.
"""
from __future__ import annotations

import importlib
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[2]
# The one path set-up of the benchmark scripts (each imports this module first): the harness
# package lives in tests/harness.
sys.path.insert(0, str(ROOT / "tests"))
from harness.comfy_host import FIXTURE_PACK, PACK_ROOT, ComfyHost  # noqa: E402
from harness.pack import register_pack  # noqa: E402

# SDXL base UNet as ComfyUI's model detection reports it for sd_xl_base_1.0.
SDXL_BASE_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
    "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
    "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
    "context_dim": 2048, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def boot(comfy_dir: Path, cuda: bool, module: str):
    """Import ComfyUI and the pack; return (the pack's ``nodes.<module>``, fixtures module or None)."""
    if not cuda:
        work = Path(tempfile.mkdtemp(prefix="ultrares_bench_"))
        host = ComfyHost.boot(comfy_dir, work, packs={"ultrares": PACK_ROOT, "ultrares_testing": FIXTURE_PACK})
        package = next(c.__module__ for c in host.node_classes.values()
                       if c.__module__.endswith(f".nodes.{module}"))
        return (sys.modules[package],
                host.module_of("UltraResTest_TinyCheckpoint"))
    sys.path.insert(0, str(comfy_dir))
    import comfy.options

    comfy.options.enable_args_parsing()
    sys.argv = [str(comfy_dir / "main.py"), "--disable-api-nodes"]
    import comfy.cli_args  # noqa: F401
    import utils.extra_config  # noqa: F401  (before anything imports ComfyUI's `nodes`)

    register_pack()
    return importlib.import_module(f"ultrares.nodes.{module}"), None


def sdxl_model(cuda: bool, fixtures):
    """(ModelPatcher, positive, negative) with random text conditioning of the model's widths."""
    import comfy.model_patcher
    import comfy.supported_models

    if not cuda:
        patcher = fixtures.tiny_models.tiny_unet("sdxl", seed=0)
        ctx, pooled = 64, 64
    else:
        config = comfy.supported_models.SDXL(dict(SDXL_BASE_UNET))
        config.set_inference_dtype(torch.float16, None)
        device = torch.device("cuda")
        model = config.get_model({}, device=device)
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            for p in model.diffusion_model.parameters():
                p.normal_(0.0, 0.02, generator=gen)
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))
        ctx, pooled = 2048, 1280
    gen = torch.Generator().manual_seed(1)

    def cond():
        return [[torch.randn(1, 77, ctx, generator=gen), {"pooled_output": torch.randn(1, pooled, generator=gen)}]]

    return patcher, cond(), cond()


class RssPeak:
    """Peak resident memory of this process, sampled in a thread while the ``with`` block runs.

    ``base`` is the level at entry, ``peak`` the highest level seen (at least ``base``).
    """

    def __init__(self, interval: float = 0.002):
        self.proc = psutil.Process()
        self.interval = interval
        self.base = self.peak = self.proc.memory_info().rss

    def __enter__(self):
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.base) / 2**20


class Meter:
    """Diffusion-model calls, rows and time inside them (as a keyed wrapper); peak RSS (``RssPeak``).

    ``base_rss`` is the level when the meter is made, ``peak_rss`` the highest seen since.
    """

    def __init__(self, cuda: bool):
        self.cuda, self.calls, self.rows, self.inside = cuda, 0, 0, 0.0
        self._rss = RssPeak(interval=0.005)
        self.base_rss = self._rss.base

    @property
    def peak_rss(self) -> int:
        return max(self.base_rss, self._rss.peak)

    def wrapper(self, executor, *args, **kwargs):
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()  # a time budget can stop a run
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = executor(*args, **kwargs)
        if self.cuda:
            torch.cuda.synchronize()
        self.inside += time.perf_counter() - start
        self.calls += 1
        self.rows += int(args[0].shape[0])
        return out

    def __enter__(self):
        self._rss.__enter__()
        return self

    def __exit__(self, *exc):
        self._rss.__exit__(*exc)
