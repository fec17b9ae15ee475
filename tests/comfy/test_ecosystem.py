"""The pack through the ecosystem's real clients, offline: the Comfy Registry's CLI and ComfyUI-Manager.

* ``comfy node validate`` (comfy-cli) passes on a clean clone, and fails or warns on broken copies;
  the publish request comfy-cli would send carries the pack's id, publisher, version and the rest;
* ComfyUI-Manager's ``cm-cli install <git URL>`` installs the committed pack from a local clone
  into a fresh ComfyUI tree, and that ComfyUI then serves all of the pack's nodes;
* the archive the Registry publishes (comfy-cli's ``zip_files``, honouring ``.comfyignore``) holds
  the pack and none of the developer folders; its file list is written to
  ``out/registry_archive_files.txt``.

The clients are pinned in ``harness/ecosystem-tools.lock.txt`` and installed once, from PyPI, into
a cached venv (``harness/ecosystem_tools.py``); each runs without network (``unshare --net``). A
missing tool fails these tests; ``ULTRARES_SKIP_ECOSYSTEM=1`` skips them explicitly.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from harness.comfy_host import PACK_ROOT, comfy_dir_option
from harness.comfy_server import comfy_server, get_json
from harness.ecosystem_tools import (
    REGISTRY_CLIENT,
    SKIP_ENV,
    ToolError,
    clean_clone,
    client_env,
    copy_comfyui,
    head_commit,
    manager_python,
    pinned,
    run_client,
    tools_venv,
)

pytestmark = pytest.mark.skipif(os.environ.get(SKIP_ENV, "") not in ("", "0"),
                                reason=f"{SKIP_ENV} is set: the ecosystem client tests are skipped on request")

PACK_NODES = {
    "UltraRes_DemoCascade", "UltraRes_DemoDiT", "UltraRes_DemoModel", "UltraRes_DemoPrompt",
    "UltraRes_FreeScaleRestrainedDilation", "UltraRes_FreeScaleScaleFusion", "UltraRes_FreeScaleSelfCascadeSampler",
    "UltraRes_FreeScaleUpscale", "UltraRes_PixelsmithSampler", "UltraRes_PixelsmithUpscale", "UltraRes_SaveLargeImage",
    "UltraRes_UltraPixelApply", "UltraRes_UltraPixelINRUpscale", "UltraRes_UltraPixelLRGuidance",
    "UltraRes_UltraPixelLoader", "UltraRes_UltraPixelScaleAwareNorm", "UltraRes_UltraPixelStageC",
}
# The folder ComfyUI-Manager clones a git URL into is the URL's last component.
REPO_NAME = "ComfyUI-UltraRes"


@pytest.fixture(scope="module")
def tools():
    try:
        return tools_venv()
    except ToolError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def clone(tmp_path):
    return clean_clone(tmp_path / REPO_NAME)


def client(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    try:
        return run_client(cmd, cwd, env)
    except ToolError as e:
        pytest.fail(str(e), pytrace=False)


def comfy(tools: Path, checkout: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    """The comfy-cli command line (``comfy ...``), offline, in ``checkout``."""
    return client([str(tools / "bin" / "python"), "-m", "comfy_cli", "--skip-prompt", "--no-json", *args],
                  checkout, client_env(home))


def registry_client(tools: Path, checkout: Path, home: Path, command: str) -> dict:
    proc = client([str(tools / "bin" / "python"), str(REGISTRY_CLIENT), command], checkout, client_env(home))
    assert proc.returncode == 0, proc.stdout
    return json.loads(proc.stdout.strip().splitlines()[-1])


def validator_findings(proc: subprocess.CompletedProcess) -> list[str]:
    """What ``comfy node validate`` objected to: a failing exit, its warnings, its security findings.

    comfy-cli 1.23 fails (exit 1) only on an unreadable pyproject.toml or an empty version; an
    invalid classifier or ``requires-comfyui`` is a "Warning:" (the Registry then drops that field),
    and exec/eval or two statements on a line are "Security warnings" (soon errors, it says).
    """
    out = proc.stdout
    findings = [f"exit {proc.returncode}"] if proc.returncode != 0 else []
    findings += [line.strip() for line in out.splitlines() if line.strip().startswith(("Warning", "Error"))]
    if "Security warnings found" in out:
        findings.append("security warnings: " + out.split("Security warnings found:", 1)[1].strip()[:2000])
    if proc.returncode == 0 and "All validation checks passed" not in out:
        findings.append("no 'All validation checks passed' line")
    return findings


def committed_files(repo: Path, commit: str) -> list[str]:
    """The files of ``commit`` (NUL-separated: names with spaces or non-ASCII characters stay whole)."""
    out = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "-z", "--name-only", commit],
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.split("\0") if f]


def edit_pyproject(checkout: Path, pattern: str, replacement: str) -> None:
    path = checkout / "pyproject.toml"
    text, n = re.subn(pattern, replacement, path.read_text(), count=1, flags=re.M)
    assert n == 1, f"pattern {pattern!r} not in pyproject.toml"
    path.write_text(text)


def test_registry_validator_passes_on_the_pack(tools, clone, tmp_path):
    proc = comfy(tools, clone, tmp_path / "home", "node", "validate")
    print(f"comfy-cli {pinned('comfy-cli')}: comfy node validate (clean clone of {head_commit(clone)[:12]})")
    print(proc.stdout)
    assert validator_findings(proc) == [], proc.stdout

    sent = registry_client(tools, clone, tmp_path / "home", "request")
    print("publish request (token left out):", json.dumps(sent, indent=1))
    assert sent["ok"], sent
    node, version = sent["node"], sent["node_version"]
    assert sent["path"] == "/publishers/ultrares/nodes/ultrares/versions"
    assert node["id"] == "ultrares" and node["name"].startswith("UltraRes")
    assert node["description"] and node["icon"].startswith("https://")
    assert json.loads(node["license"]) == {"text": "GPL-3.0-only"}
    assert node["repository"].startswith("https://github.com/")
    # Dropped (empty) when a classifier or requires-comfyui is malformed.
    assert node["supported_os"] == ["OS Independent"]
    assert node["supported_accelerators"] == ["GPU :: NVIDIA CUDA"]
    assert node["supported_comfyui_version"] == ">=0.3.75"
    assert re.fullmatch(r"\d+\.\d+\.\d+", version["version"]), version
    assert version["dependencies"] == []


@pytest.mark.parametrize("broken, pattern, replacement, expected", [
    ("no version", r'^version = ".*"$', "", "exit 1"),
    ("unparseable", r"^\[tool\.comfy\]$", "[tool.comfy", "exit 1"),
    ("bad accelerator classifier", r"GPU :: NVIDIA CUDA", "GPU :: CUDA", "Warning: Invalid Environment classifier"),
    ("bad requires-comfyui", r'^requires-comfyui = ".*"$', 'requires-comfyui = "0.3"',
     "Warning: Invalid requires-comfyui"),
])
def test_registry_validator_rejects_a_broken_pyproject(tools, clone, tmp_path, broken, pattern, replacement, expected):
    edit_pyproject(clone, pattern, replacement)
    proc = comfy(tools, clone, tmp_path / "home", "node", "validate")
    findings = validator_findings(proc)
    assert any(f.startswith(expected) for f in findings), f"{broken}: {findings}\n{proc.stdout}"


def test_registry_validator_flags_eval(tools, clone, tmp_path):
    """Its security check (ruff S102/S307/E702 over the checkout) is live: an eval() is reported."""
    (clone / "nodes" / "ecosystem_probe.py").write_text('value = eval("1 + 1")\n')
    proc = comfy(tools, clone, tmp_path / "home", "node", "validate")
    assert any(f.startswith("security warnings") and "S307" in f for f in validator_findings(proc)), proc.stdout


@pytest.mark.parametrize("broken, pattern, expected", [
    ("no PublisherId", r'^PublisherId = ".*"$', "Publisher ID is required"),
    ("no project name", r'^name = ".*"$', "Project name is required"),
])
def test_registry_publish_refuses_missing_ids(tools, clone, tmp_path, broken, pattern, expected):
    """``comfy node validate`` (1.23) does not check these; ``publish`` refuses them before sending anything."""
    edit_pyproject(clone, pattern, "")
    sent = registry_client(tools, clone, tmp_path / "home", "request")
    assert not sent["ok"] and expected in sent["error"], sent


def test_manager_installs_the_pack_from_git_and_comfyui_loads_it(pytestconfig, tools, tmp_path):
    comfy_dir = comfy_dir_option(pytestconfig).resolve()
    source = clean_clone(tmp_path / "git" / REPO_NAME)
    tree = copy_comfyui(comfy_dir, tmp_path / "ComfyUI")
    assert not any((tree / "custom_nodes").glob("*/__init__.py")), "the ComfyUI copy already has a pack"
    # Manager's documented offline switch; the pip package reads only its bundled node lists anyway,
    # and the network namespace makes any other attempt fail.
    (tree / "user" / "__manager").mkdir(parents=True)
    (tree / "user" / "__manager" / "config.ini").write_text("[default]\nnetwork_mode = offline\n")
    url = f"file://localhost{source}"  # cm-cli takes only URLs with a host part as git URLs
    python = manager_python(tmp_path / "cm-cli-env", tools)
    proc = client([str(python), "-m", "cm_cli", "install", url], tmp_path,
                  client_env(tmp_path / "home", COMFYUI_PATH=str(tree), PIP_NO_INDEX="1"))
    log = re.sub(r"(?m)^\s*(\d+%\||\d+it \[).*\n", "", proc.stdout)  # git clone progress bars
    print(f"comfyui-manager {pinned('comfyui-manager')}: cm-cli install {url}\n{log}")
    assert proc.returncode == 0, log
    assert "[INSTALLED]" in log and "ERROR" not in log and "Traceback" not in log, log

    installed = tree / "custom_nodes" / REPO_NAME
    assert head_commit(installed) == head_commit(PACK_ROOT), "Manager did not install the committed HEAD"
    missing = [f for f in committed_files(PACK_ROOT, "HEAD") if not (installed / f).is_file()]
    assert not missing, f"committed files missing from the Manager install: {missing[:20]}"

    with comfy_server(tree, tmp_path / "server", {}) as (base, work):
        info = get_json(base + "/object_info")
        server_log = (work / "server.log").read_text()
    ours = {k: v for k, v in info.items() if k.startswith("UltraRes")}
    assert set(ours) == PACK_NODES, f"{sorted(set(ours) ^ PACK_NODES)}\n{server_log[-4000:]}"
    modules = {v["python_module"] for v in ours.values()}
    assert modules == {f"custom_nodes.{REPO_NAME}"}, modules
    assert "IMPORT FAILED" not in server_log and "Cannot import" not in server_log, server_log[-4000:]
    assert re.search(rf"seconds: .*custom_nodes/{REPO_NAME}\s*$", server_log, re.M), server_log[-4000:]


def test_registry_archive_file_list(tools, clone, tmp_path):
    result = registry_client(tools, clone, tmp_path / "home", "archive")
    assert result["ok"], result
    files: dict[str, int] = result["files"]
    listing = "\n".join(f"{size:>10}  {name}" for name, size in sorted(files.items()))
    header = (f"Files in the Comfy Registry archive (comfy-cli {pinned('comfy-cli')} zip_files, as `comfy node "
              f"publish` builds it) of commit {head_commit(clone)}: {len(files)} files, "
              f"{sum(files.values())} bytes\n")
    print(header + listing)
    out = Path(os.environ.get("ULTRARES_ARTIFACTS", PACK_ROOT / "out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "registry_archive_files.txt").write_text(header + listing + "\n")

    leaked = sorted(n for n in files if n.split("/")[0] in {"tests", "scripts", ".ci", "out", ".git"}
                    or "__pycache__" in n.split("/"))
    assert not leaked, f"developer files in the published archive: {leaked}"
    for name in ("__init__.py", "pyproject.toml", "LICENSE", "README.md", "requirements.txt",
                 "demo/ultrares_demo.safetensors"):
        assert name in files, f"{name} is not in the archive"
    folders = ["nodes", "kernels", "example_workflows"] + (["web"] if (clone / "web").is_dir() else [])
    for folder in folders:
        assert any(n.startswith(folder + "/") for n in files), f"{folder}/ is not in the archive"
    # Every committed file of those folders ships, and nothing else beside the committed files.
    committed = set(committed_files(clone, "HEAD"))
    assert set(files) <= committed, sorted(set(files) - committed)
    for folder in folders + ["demo"]:
        dropped = sorted(n for n in committed if n.startswith(folder + "/") and n not in files)
        assert not dropped, f"committed files of {folder}/ left out of the archive: {dropped}"
