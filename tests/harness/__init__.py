"""The UltraRes test harness: one importable package for the tests, benchmarks and scripts.

* ``pack``: the pack's folders and ``register_pack`` (the checkout as package ``ultrares``);
* ``comfy_host``: a real ComfyUI booted in this process (``ComfyHost``), graphs run through its
  validation and executor, saved images read back;
* ``comfy_server`` / ``frontend``: a real ComfyUI server (main.py) and its frontend in chromium;
* ``workflow_format``: UI-format workflows to API-format prompts; ``demo_loaders``: the tiny
  seeded stand-ins for model loaders (``--demo``);
* ``graphs`` / ``ultrapixel_graphs``: API-format graph builders; ``records``: fixture records.

pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in pyproject.toml), so tests write
``from harness.comfy_host import ComfyHost``. Entry points outside pytest (``scripts/``,
``tests/benchmarks/``) add ``tests/`` themselves, once, at their top.
"""
