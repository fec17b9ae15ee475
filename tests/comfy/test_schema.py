"""Every node the pack registers has the metadata a ComfyUI user relies on."""
from __future__ import annotations

import asyncio

import pytest


def pack_nodes():
    import ultrares

    extension = asyncio.run(ultrares.comfy_entrypoint())
    return asyncio.run(extension.get_node_list())


@pytest.fixture(scope="module")
def schemas(host):
    return [cls.GET_SCHEMA() for cls in pack_nodes()]


def test_pack_registers_nodes_with_unique_prefixed_ids(host, schemas):
    ids = [s.node_id for s in schemas]
    assert ids, "the pack registers at least one node"
    assert len(ids) == len(set(ids))
    for node_id in ids:
        assert node_id.startswith("UltraRes_"), node_id
        assert node_id in host.node_classes, f"{node_id} is not loaded by ComfyUI"


def test_every_node_is_documented(schemas):
    for s in schemas:
        assert s.display_name and s.display_name != s.node_id, s.node_id
        assert s.category.startswith("UltraRes/"), (s.node_id, s.category)
        assert s.description and len(s.description) > 80, f"{s.node_id}: description says what/when/models/cost"
        for item in [*s.inputs, *s.outputs]:
            assert item.tooltip, f"{s.node_id}: {item.id or item.io_type} has no tooltip"


def test_shipped_pack_does_not_register_test_nodes(schemas):
    assert not any(s.node_id.startswith("UltraResTest_") for s in schemas)
