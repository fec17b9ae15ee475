"""Write the subgraph blueprints ``subgraphs/<name>.json`` by converting nodes of the shipped workflows.

    python scripts/make_blueprints.py [--comfyui DIR]     # host venv python

ComfyUI serves every ``subgraphs/*.json`` of a pack as a blueprint in the node library
("Subgraph Blueprints"): one node that stands for a group of nodes. Each blueprint here is made
the way an artist makes one, by the real frontend's own "Convert to Subgraph" on the nodes of a
shipped workflow, then saved in the format the frontend's "Publish" writes, with a description.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

# The one path set-up of this entry point: the harness package lives in tests/harness.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness.comfy_server import comfy_server  # noqa: E402
from harness.frontend import load_workflow, open_frontend  # noqa: E402
from harness.pack import PACK_ROOT, WORKFLOW_DIR  # noqa: E402

# name: (source workflow, node ids to wrap, widget overrides {node id: {index: value}}, description)
BLUEPRINTS = {
    "Pixelsmith x2 x2 stage (4x upscale, SDXL settings)": (
        "Pixelsmith upscale - SDXL 1024 to 4K (4096 px), two x2 stages", [6, 7], {6: {1: 0, 2: 0}, 7: {1: 0, 2: 0}},
        "Two Pixelsmith x2 stages in one node: feed the base latent, model, VAE and prompts; get a latent and an "
        "image 4x the base size, one object and new detail (SDXL settings: 50 steps, cfg 7.5, slider 20 then 30)."),
    "FreeScale stage (SDXL 1024 to 4096, tiled decode)": (
        "FreeScale upscale - SDXL 1024 to 4K (4096 px)", [7, 8], {},
        "FreeScale's self-cascade 1024 -> 2048 -> 4096 and a tiled decode in one node: feed a 1024 px base latent "
        "from an SDXL model (FreeU with FreeScale's values recommended), get the 4096 px image."),
    "UltraPixel 4K (stage C, stage B, stage A decode)": (
        "UltraPixel - Stable Cascade at 4K (4096 px)", [8, 9, 10, 11, 12], {},
        "UltraPixel at 4096 px in one node: stage C with UltraPixel's guidance, stage B conditioning and sampling, "
        "tiled stage A decode. Feed the stage C and B models, the UltraPixel weights, the prompts and stage A."),
}


def make_blueprint(page, workflow: dict, ids: list[int], overrides: dict, name: str, description: str) -> dict:
    for node in workflow["nodes"]:
        for index, value in overrides.get(node["id"], {}).items():
            node["widgets_values"][index] = value
    state = load_workflow(page, workflow)
    if state["missing"]:
        raise SystemExit(f"{name}: missing node types {state['missing']}")
    blueprint = page.evaluate("""([ids, name]) => {
        const nodes = new Set(ids.map(id => app.graph.getNodeById(id)));
        const {node} = app.graph.convertToSubgraph(nodes);
        node.title = name;
        node.subgraph.name = name;
        const {nodes: serialised, subgraphs} = app.canvas._serializeItems([node]);
        // As JSON text: that drops the undefined fields (Playwright would turn them into nulls, which
        // the frontend's workflow schema rejects).
        return JSON.stringify({revision: 0, last_node_id: node.id, last_link_id: 0, nodes: serialised, links: [],
                               version: 0.4, definitions: {subgraphs}});
    }""", [ids, name])
    blueprint = json.loads(blueprint)
    blueprint["extra"] = {"BlueprintDescription": description}
    return blueprint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", default=os.environ.get("ULTRARES_COMFYUI"),
                        required=not os.environ.get("ULTRARES_COMFYUI"))
    args = parser.parse_args()
    out = PACK_ROOT / "subgraphs"
    out.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ultrares-blueprints-"))
    with comfy_server(Path(args.comfyui).resolve(), work, {"ultrares": PACK_ROOT}) as (base, _):
        with open_frontend(base) as page:
            for name, (source, ids, overrides, description) in BLUEPRINTS.items():
                workflow = json.loads((WORKFLOW_DIR / f"{source}.json").read_text())
                blueprint = make_blueprint(page, workflow, ids, overrides, name, description)
                path = out / f"{name}.json"
                path.write_text(json.dumps(blueprint, indent=1, ensure_ascii=False) + "\n")
                print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
