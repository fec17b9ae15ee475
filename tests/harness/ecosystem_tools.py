"""The ecosystem's own clients, pinned and cached: the Comfy Registry's CLI and ComfyUI-Manager's.

``comfy-cli`` (``comfy node validate``, and the archive ``comfy node publish`` uploads) and
``comfyui-manager`` (its CLI ``cm-cli``) install from PyPI, exactly as ``ecosystem-tools.lock.txt``
beside this module pins them, into one venv cached next to the test host:
``${ULTRARES_CACHE:-~/.cache/ultrares}/ecosystem-tools-<hash of the lock and the interpreter>``.
Like ``scripts/build_host.sh`` it is built in a temporary folder and renamed into place only when
complete, under a file lock, so concurrent test runs share one build and an interrupted one never
looks finished.

Every client runs offline, inside a network namespace of its own (``unshare --net``: loopback only,
down), with a private ``HOME`` and telemetry off, so a client that tried the internet fails instead
of quietly succeeding.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from .pack import PACK_ROOT

LOCK = Path(__file__).with_name("ecosystem-tools.lock.txt")
# Runs inside the tools venv (comfy-cli's own functions; see that file).
REGISTRY_CLIENT = Path(__file__).with_name("ecosystem_registry_client.py")
SKIP_ENV = "ULTRARES_SKIP_ECOSYSTEM"


class ToolError(RuntimeError):
    """An ecosystem client could not be installed or started; the message says what to do."""


def pinned(name: str) -> str:
    """The version the lock pins for package ``name``."""
    for line in LOCK.read_text().splitlines():
        pkg, sep, version = line.partition("==")
        if sep and pkg.strip().lower() == name.lower():
            return version.strip()
    raise KeyError(f"{name} is not pinned in {LOCK}")


def _cache_dir() -> Path:
    return Path(os.environ.get("ULTRARES_CACHE") or Path.home() / ".cache" / "ultrares")


def tools_venv(python: str = sys.executable) -> Path:
    """The cached venv holding the pinned clients (built on first use, from PyPI only)."""
    key = hashlib.sha256(LOCK.read_bytes() + sys.version.encode()).hexdigest()[:16]
    cache = _cache_dir()
    venv = cache / f"ecosystem-tools-{key}"
    if (venv / ".complete").is_file():
        return venv
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".ecosystem-tools.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if (venv / ".complete").is_file():
            return venv
        work = Path(tempfile.mkdtemp(prefix=".build-ecosystem-", dir=cache))
        try:
            # `python -m venv` from the host's interpreter: the same CPython as ComfyUI runs on.
            _check([python, "-m", "venv", str(work)], "create the ecosystem tools venv")
            _check([str(work / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "-r", str(LOCK)],
                   f"install the pinned ecosystem clients from PyPI ({LOCK.name})")
            _check([str(work / "bin" / "python"), "-m", "pip", "check"], "check the locked clients' dependencies")
            shutil.rmtree(venv, ignore_errors=True)
            work.rename(venv)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        (venv / ".complete").touch()
    return venv


def _check(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(
            f"could not {what}: `{' '.join(cmd)}` exited {proc.returncode}\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}\n"
            f"These tests need PyPI once (the venv is cached), `unshare` (util-linux) and git; "
            f"set {SKIP_ENV}=1 to skip them explicitly.")


def offline(cmd: list[str]) -> list[str]:
    """``cmd`` run in a new network namespace (nothing but a downed loopback): no internet at all."""
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True) \
        if shutil.which("unshare") else None
    if probe is None or probe.returncode != 0:
        detail = "unshare not found" if probe is None else probe.stderr.strip()
        raise ToolError(
            f"cannot run the ecosystem clients without network: `unshare --net` failed ({detail}). "
            f"Run as root with util-linux installed (apt-get install util-linux), or set {SKIP_ENV}=1 "
            f"to skip these tests explicitly.")
    return ["unshare", "--net", "--", *cmd]


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """A bare environment for a client: a private HOME, telemetry off, no colour, wide lines."""
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "DO_NOT_TRACK": "1",
            "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200", "LANG": "C.UTF-8", **extra}


def run_client(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``cmd`` offline in ``cwd``; stdout and stderr together in ``.stdout``."""
    return subprocess.run(offline(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def clean_clone(dest: Path) -> Path:
    """A fresh ``git clone`` of the checkout's HEAD at ``dest``: the committed pack, nothing else."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _check(["git", "clone", "--quiet", "--no-local", str(PACK_ROOT), str(dest)], f"clone {PACK_ROOT}")
    return dest


def head_commit(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def copy_comfyui(src: Path, dest: Path) -> Path:
    """A throwaway copy of a ComfyUI tree (its code; no caches, tests or user data) to install into."""
    top_level_skip = {"tests", "tests-unit", "user", "output", "temp", ".git", "venv"}

    def ignore(folder, names):
        skip = {n for n in names if n == "__pycache__"}
        if Path(folder) == src:
            skip |= top_level_skip & set(names)
        return skip

    shutil.copytree(src, dest, symlinks=True, ignore=ignore)
    return dest


def manager_python(where: Path, tools: Path) -> Path:
    """A throwaway venv that sees the pinned clients first, then this ComfyUI environment's packages.

    cm-cli expects to run in ComfyUI's own environment (it lists and repairs that environment's pip
    packages: torch, comfyui-frontend-package). Here it runs in a venv of its own whose
    site-packages point (``.pth``) at the tools venv and then at the running interpreter's
    site-packages (the host's ComfyUI venv), so it sees what ComfyUI has, and anything it would pip
    install lands in this throwaway venv, never in the cached host.
    """
    _check([sys.executable, "-m", "venv", "--without-pip", str(where)], "create the cm-cli venv")
    python = where / "bin" / "python"
    site = Path(_purelib(python))
    (site / "00-ecosystem-tools.pth").write_text(_purelib(tools / "bin" / "python") + "\n")
    (site / "01-comfyui-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _purelib(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
