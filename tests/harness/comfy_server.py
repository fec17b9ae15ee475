"""Start a real ComfyUI server (main.py) with given packs, as users run it."""
from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, data: dict | None = None):
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


@contextlib.contextmanager
def comfy_server(comfy_dir: Path, work: Path, packs: dict[str, Path]):
    """Yield (base_url, work_dir); the server log is ``work/server.log``."""
    for d in ("custom_nodes", "output", "user", "temp", "input"):
        (work / d).mkdir(parents=True, exist_ok=True)
    for name, path in packs.items():
        (work / "custom_nodes" / name).symlink_to(Path(path).resolve(), target_is_directory=True)
    config = work / "extra_model_paths.yaml"
    config.write_text(f"ultrares_test:\n    custom_nodes: {work / 'custom_nodes'}\n")
    port = free_port()
    log_path = work / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--disable-api-nodes", "--use-pytorch-cross-attention",
             "--listen", "127.0.0.1", "--port", str(port), "--extra-model-paths-config", str(config),
             "--output-directory", str(work / "output"), "--user-directory", str(work / "user"),
             "--temp-directory", str(work / "temp"), "--input-directory", str(work / "input"),
             "--database-url", "sqlite:///:memory:"],
            cwd=comfy_dir, stdout=log, stderr=subprocess.STDOUT,
            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while True:
                try:
                    get_json(base + "/system_stats")
                    break
                except OSError as e:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError("ComfyUI server did not start:\n" + log_path.read_text()[-3000:]) from e
                    time.sleep(0.5)
            yield base, work
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
