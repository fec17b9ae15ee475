"""kernels/ is pure PyTorch: importable, and importing the pack works, without ComfyUI."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from harness import pack as harness_pack


def test_pack_and_kernels_import_without_comfyui():
    code = textwrap.dedent(f"""
        import importlib, importlib.util, pkgutil, sys
        # The harness's register_pack, loaded by file path (nothing of the caller's sys.path here).
        spec = importlib.util.spec_from_file_location("harness_pack", {harness_pack.__file__!r})
        harness_pack = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(harness_pack)
        pack = harness_pack.register_pack()
        import ultrares.kernels as k
        names = [m.name for m in pkgutil.iter_modules(k.__path__)]
        for name in names:
            importlib.import_module("ultrares.kernels." + name)
        leaked = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("comfy", "comfy_api", "comfy_extras", "nodes",
                                               "server", "folder_paths", "execution"))
        assert not leaked, leaked
        assert callable(pack.comfy_entrypoint)
        print(len(names))
    """)
    # -I: isolated mode, so nothing from the caller's sys.path (ComfyUI) can be found.
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 3, "the kernels package holds the method modules"
