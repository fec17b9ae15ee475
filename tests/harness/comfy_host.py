"""Boot a real ComfyUI in this process and run API-format graphs through its executor.

Used by the in-process tests, the headless workflow runner and the benchmarks. ComfyUI keeps
module-global state (node registry, model management), so there is one host per process.

    host = ComfyHost.boot(comfy_dir, work_dir, packs={"ultrares": PACK_ROOT})
    result = host.run(prompt)            # validation + PromptExecutor, like the /prompt route
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from .pack import FIXTURE_PACK, PACK_ROOT

__all__ = ["FIXTURE_PACK", "PACK_ROOT", "ComfyHost", "RunResult", "WorkflowError", "comfy_dir_option",
           "format_validation_error", "image_tensor"]


def comfy_dir_option(config) -> Path:
    """The ComfyUI folder a pytest run tests against: ``--comfyui`` or ``$ULTRARES_COMFYUI``."""
    import pytest

    value = config.getoption("--comfyui") or os.environ.get("ULTRARES_COMFYUI")
    if not value:
        raise pytest.UsageError(
            "no ComfyUI to test against: pass --comfyui DIR or set ULTRARES_COMFYUI "
            "(scripts/build_host.sh builds one; see README 'For developers')")
    return Path(value)


class WorkflowError(RuntimeError):
    """A graph could not be validated or executed; the message is meant for the user."""


@dataclasses.dataclass
class RunResult:
    prompt_id: str
    outputs: dict[str, Any]          # node id -> UI output dict (images, text, ...)
    executed: set[str]               # node ids that ran (not served from cache)
    cached: set[str]                 # node ids served from ComfyUI's cache
    messages: list[tuple[str, dict]]  # executor status messages, in order


class ComfyHost:
    _booted: ComfyHost | None = None

    def __init__(self, comfy_dir: Path, work_dir: Path, server, executor_cls):
        self.comfy_dir = comfy_dir
        self.work_dir = work_dir
        self.server = server
        self._executor_cls = executor_cls
        self.executor = None
        self.reset_cache()
        self.events: list[tuple[str, dict]] = []

    @classmethod
    def boot(cls, comfy_dir: str | os.PathLike, work_dir: str | os.PathLike,
             packs: dict[str, Path] | None = None, extra_args: list[str] | None = None) -> ComfyHost:
        """Import ComfyUI from ``comfy_dir`` with ``--cpu`` and load ``packs`` as custom nodes.

        ``packs`` maps a folder name to a pack directory; each is linked into a private
        ``custom_nodes`` folder under ``work_dir``, so nothing else beside the pack is scanned.
        Output, input, temp and user folders also live under ``work_dir``, keeping the cached
        ComfyUI tree clean.
        """
        if cls._booted is not None:
            return cls._booted
        comfy_dir = Path(comfy_dir).resolve()
        work_dir = Path(work_dir).resolve()
        if not (comfy_dir / "main.py").is_file():
            raise WorkflowError(f"not a ComfyUI folder (no main.py): {comfy_dir}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        custom = work_dir / "custom_nodes"
        custom.mkdir(parents=True, exist_ok=True)
        for name, path in (packs or {}).items():
            link = custom / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(Path(path).resolve(), target_is_directory=True)
        dirs = {d: work_dir / d for d in ("output", "input", "temp", "user")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)

        sys.path.insert(0, str(comfy_dir))
        import comfy.options

        comfy.options.enable_args_parsing()
        # --cpu must be parsed before comfy.model_management is imported. PyTorch's SDPA is the
        # attention ComfyUI picks on NVIDIA; on CPU it would default to the much slower
        # sub-quadratic path.
        sys.argv = [str(comfy_dir / "main.py"), "--cpu", "--disable-api-nodes",
                    "--use-pytorch-cross-attention", *(extra_args or [])]
        import comfy.cli_args  # noqa: F401
        import folder_paths
        import utils.extra_config  # noqa: F401  (before `nodes`, which shadows `utils`)

        folder_paths.set_output_directory(str(dirs["output"]))
        folder_paths.set_input_directory(str(dirs["input"]))
        folder_paths.set_temp_directory(str(dirs["temp"]))
        folder_paths.set_user_directory(str(dirs["user"]))
        folder_paths.folder_names_and_paths["custom_nodes"] = ([str(custom)], set())

        import execution
        import server

        import nodes

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        prompt_server = server.PromptServer(loop)
        loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        # ComfyUI names a pack's module after its folder path; a pack that failed to import
        # registers no node from that path.
        modules = {c.__module__ for c in nodes.NODE_CLASS_MAPPINGS.values()}
        failed = sorted(name for name in packs or {}
                        if not any(m.startswith(str(custom / name)) for m in modules))
        if failed:
            raise WorkflowError(f"custom node pack(s) failed to load: {failed} (see the log above)")
        host = cls(comfy_dir, work_dir, prompt_server, execution.PromptExecutor)
        prompt_server.send_sync = host._record  # keep events in-process, nothing to send to
        cls._booted = host
        return host

    def _record(self, event, data, sid=None):
        self.events.append((event, data))

    @property
    def node_classes(self) -> dict[str, type]:
        import nodes

        return nodes.NODE_CLASS_MAPPINGS

    def module_of(self, node_id: str):
        """The Python module that defines the registered node ``node_id``."""
        return sys.modules[self.node_classes[node_id].__module__]

    def reset_cache(self) -> None:
        """Forget every cached node output (a fresh executor, as after a server restart)."""
        from comfy.cli_args import args

        # ComfyUI's classic cache, with the cache_args main.py passes for it (0.3.75 reads
        # "lru"/"ram"; 0.33.0 also reads "ram_inactive", and its --cache-ram became a list).
        self.executor = self._executor_cls(self.server, cache_type=False,
                                           cache_args={"lru": args.cache_lru, "ram": 0.0, "ram_inactive": 0.0})

    def validate(self, prompt: dict) -> list[str]:
        """Run ComfyUI's own prompt validation; return the output node ids to execute.

        Strict where ComfyUI's /prompt route is lenient: ComfyUI runs the valid outputs and only
        reports the node errors of invalid branches; here any node error raises ``WorkflowError``,
        so no graph can silently skip the node it was meant to run.
        """
        import execution

        ok, error, outputs, node_errors = asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, None))
        if not ok or node_errors:
            raise WorkflowError(format_validation_error(error or {}, node_errors, prompt))
        return outputs

    def run(self, prompt: dict, extra_data: dict | None = None) -> RunResult:
        """Validate ``prompt`` and execute it with ComfyUI's ``PromptExecutor``."""
        outputs_to_run = self.validate(prompt)
        prompt_id = str(uuid.uuid4())
        self.events = []
        # A client id makes the executor report progress events ("executing", "progress", ...).
        extra = {"client_id": "ultrares-harness", **(extra_data or {})}
        self.executor.execute(prompt, prompt_id, extra, outputs_to_run)
        messages = list(self.executor.status_messages)
        if not self.executor.success:
            err = next((d for e, d in messages if e in ("execution_error", "execution_interrupted")), {})
            if err.get("exception_type") is None and err:
                raise InterruptedError(f"execution interrupted at node {err.get('node_id')} ({err.get('node_type')})")
            raise WorkflowError(
                f"node {err.get('node_id')} ({err.get('node_type')}) failed: "
                f"{err.get('exception_type')}: {err.get('exception_message')}\n{''.join(err.get('traceback', []))}")
        cached = set(next((d["nodes"] for e, d in messages if e == "execution_cached"), []))
        executed = {d["node"] for e, d in self.events if e == "executing" and d.get("node")}
        return RunResult(prompt_id, dict(self.executor.history_result.get("outputs", {})),
                         executed, cached, messages)

    def saved_images(self, result: RunResult, node_id: str):
        """The images a Save Image node wrote in ``result``, as written: uint8 [B, H, W, 3].

        The one way the harness reads outputs back; ``image_tensor`` turns them into [B, 3, H, W].
        """
        import numpy as np
        from PIL import Image

        out = self.work_dir / "output"
        return np.stack([np.asarray(Image.open(out / f["subfolder"] / f["filename"]).convert("RGB"))
                         for f in result.outputs[node_id]["images"]])


def image_tensor(images):
    """uint8 [B, H, W, 3] images (``ComfyHost.saved_images``) as a float [B, 3, H, W] tensor in [0, 1]."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def format_validation_error(error: dict, node_errors: dict, prompt: dict) -> str:
    default = "Prompt has node errors" if node_errors else "invalid prompt"
    lines = [f"{error.get('message', default)}: {error.get('details', '')}".rstrip(": ")]
    for node_id, info in (node_errors or {}).items():
        class_type = prompt.get(node_id, {}).get("class_type", "?")
        for e in info.get("errors", []):
            lines.append(f"  node {node_id} ({class_type}): {e.get('message')}: {e.get('details')}")
    return "\n".join(lines)
