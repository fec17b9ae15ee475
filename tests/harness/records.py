"""Records written by the test-fixture nodes (module-level lists and dicts), cleared around a test."""
from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any


def cleared_records(host, node_id: str, *names: str) -> Iterator[Any]:
    """Yield the record store(s) ``names`` of the test-fixture module defining ``node_id``.

    Each store (a list or dict) is cleared before and after. One name yields that store; several
    yield a namespace with one attribute per name. Use it as the body of a pytest fixture:
    ``yield from cleared_records(host, "UltraResTest_ModelProbe", "PROBE_RECORDS")``.
    """
    module = host.module_of(node_id)
    stores = {name: getattr(module, name) for name in names}
    for store in stores.values():
        store.clear()
    yield stores[names[0]] if len(names) == 1 else SimpleNamespace(**stores)
    for store in stores.values():
        store.clear()
