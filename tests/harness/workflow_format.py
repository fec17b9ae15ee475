"""Convert a ComfyUI workflow saved by the frontend (UI format) into an API-format prompt.

The UI format stores widget values positionally (``widgets_values``) and wires as ``links``;
the API format names every input. The mapping needs the node schemas of the running host
(``INPUT_TYPES``), so it is done here against ComfyUI's live node registry. Handles reroutes,
primitive nodes, notes, muted and bypassed nodes and the extra ``control_after_generate`` and
upload widgets the frontend adds. Subgraphs and group nodes are refused with a clear message.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .comfy_host import WorkflowError

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
VIRTUAL_NODES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
MODE_MUTED, MODE_BYPASSED = 2, 4


class WorkflowFormatError(ValueError):
    pass


def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def widget_layout(node_cls) -> list[tuple[str, bool, str | None]]:
    """For each input in schema order: (name, has a widget, extra frontend widget after it).

    The extra widget is ``"control"`` (the seed's ``control_after_generate`` combo) or
    ``"upload"`` (an upload button); the frontend saves its value in ``widgets_values`` right
    after the input's own value.
    """
    spec = node_cls.INPUT_TYPES()
    layout = []
    for section in ("required", "optional"):
        for name, value in (spec.get(section) or {}).items():
            kind = value[0]
            options = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
            widget = not options.get("forceInput") and (isinstance(kind, list) or kind in WIDGET_TYPES)
            extra = None
            if widget and kind == "INT" and options.get("control_after_generate", name in ("seed", "noise_seed")):
                extra = "control"
            elif widget and (options.get("image_upload") or options.get("video_upload") or options.get("audio_upload")):
                extra = "upload"
            layout.append((name, widget, extra))
    return layout


def ui_to_api(workflow: dict, node_classes: dict[str, type]) -> dict[str, dict]:
    """Return the API prompt for ``workflow``; raise :class:`WorkflowFormatError` on problems."""
    if workflow.get("definitions", {}).get("subgraphs"):
        raise WorkflowFormatError("workflows with subgraphs are not supported; unpack the subgraphs first")
    nodes = {str(n["id"]): n for n in workflow["nodes"]}
    links = {int(link[0]): link for link in workflow.get("links", [])}
    missing = sorted({n["type"] for n in nodes.values()
                      if n["type"] not in node_classes and n["type"] not in VIRTUAL_NODES
                      and n.get("mode", 0) != MODE_MUTED})
    if missing:
        raise WorkflowFormatError(
            f"missing node types: {', '.join(missing)}. Install the packs that provide them "
            "(ComfyUI Manager: 'Install Missing Custom Nodes').")

    def source_of(link_id: int | None, want_type: str | None = None):
        """Resolve a link to (node id, slot) of a real node, or None if it carries a widget value."""
        if link_id is None:
            return None
        link = links.get(int(link_id))
        if link is None:
            raise WorkflowFormatError(f"link {link_id} is referenced but not defined")
        src = nodes[str(link[1])]
        slot = int(link[2])
        if src["type"] == "Reroute":
            return source_of(src["inputs"][0].get("link"), want_type)
        if src["type"] == "PrimitiveNode":
            return None
        if src.get("mode", 0) == MODE_BYPASSED:
            link_type = link[5] if len(link) > 5 else want_type
            for inp in src.get("inputs", []):
                if inp.get("type") == link_type and inp.get("link") is not None:
                    return source_of(inp["link"], link_type)
            raise WorkflowFormatError(
                f"bypassed node {src['id']} ({src['type']}) has no {link_type} input to pass through")
        if src.get("mode", 0) == MODE_MUTED:
            raise WorkflowFormatError(f"node {src['id']} ({src['type']}) is muted but its output is used")
        return [str(src["id"]), slot]

    prompt: dict[str, dict] = {}
    for node_id, node in nodes.items():
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASSED):
            continue
        linked = {inp["name"]: inp.get("link") for inp in node.get("inputs", [])}
        values = node.get("widgets_values") or []
        if isinstance(values, dict):
            raise WorkflowFormatError(f"node {node_id} ({node['type']}): dict widget values are not supported")
        inputs: dict[str, Any] = {}
        cursor = 0
        for name, widget, extra in widget_layout(node_classes[node["type"]]):
            if widget:
                if cursor < len(values):
                    inputs[name] = values[cursor]
                cursor += 1 + (extra is not None)
            src = source_of(linked.get(name))
            if src is not None:
                inputs[name] = src
        prompt[node_id] = {"class_type": node["type"], "inputs": inputs,
                           "_meta": {"title": node.get("title") or node["type"]}}
    return prompt


def load_prompt(path: Path, host) -> dict:
    """The API-format prompt of a workflow file (UI format converted with ``host``'s node schemas)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WorkflowError(f"cannot read workflow {path}: {e}") from e
    if is_ui_workflow(data):
        return ui_to_api(data, host.node_classes)
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return data
    raise WorkflowError(f"{path} is neither a UI-format workflow nor an API-format prompt")


def model_files(workflow: dict) -> list[str]:
    """The model files a UI workflow's loaders name in ``properties.models`` (download metadata)."""
    return sorted({m["name"] for n in workflow["nodes"] for m in n.get("properties", {}).get("models", [])})
