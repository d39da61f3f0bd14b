"""The OpenAPI document stays equivalent to the committed snapshot.

``openapi_snapshot.json`` was generated from the API before its list routes were
refactored onto one ``list_page`` helper. The only difference allowed is in the
component names of the page models (``ClusterPage``, or a generic ``Page[T]``
name): every page component is inlined where it is referenced, without its
name-derived ``title``, and the resolved structures are compared.

After a deliberate change of the API, regenerate the snapshot with
``.venv/bin/python -m tests.api.test_openapi_snapshot`` and review its diff.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import httpx

SNAPSHOT = Path(__file__).with_name("openapi_snapshot.json")
REF = "#/components/schemas/"
# ClusterPage, WebhookDeliveryPage, Page[Cluster] (pydantic: Page_Cluster_) ...
PAGE_NAME = re.compile(r"^(\w*Page|Page_\w+_)$")


def normalise(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with page components inlined (untitled) and removed from components."""
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    pages = {name for name in schemas if PAGE_NAME.match(name)}

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(REF) and ref[len(REF) :] in pages:
                inlined = {k: v for k, v in schemas[ref[len(REF) :]].items() if k != "title"}
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return resolve({**inlined, **rest})
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve({k: v for k, v in document.items() if k != "components"})
    components = dict(document.get("components", {}))
    components["schemas"] = {
        name: resolve(schema) for name, schema in schemas.items() if name not in pages
    }
    resolved["components"] = components
    return resolved


def _differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        found: list[str] = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                found.append(f"{where}/{key}: missing")
            elif key not in expected:
                found.append(f"{where}/{key}: unexpected")
            else:
                found.extend(_differences(expected[key], actual[key], f"{where}/{key}"))
        return found
    if expected != actual:
        return [f"{where}: {json.dumps(expected)[:200]} != {json.dumps(actual)[:200]}"]
    return []


async def test_openapi_matches_the_snapshot(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/openapi.json")
    assert response.status_code == 200
    expected = normalise(json.loads(SNAPSHOT.read_text()))
    actual = normalise(response.json())
    assert _differences(expected, actual) == []


def test_normalise_keeps_every_other_difference() -> None:
    """Page components may be renamed; a change inside one, or elsewhere, still shows."""
    document = json.loads(SNAPSHOT.read_text())
    schemas = document["components"]["schemas"]
    renamed = json.loads(
        json.dumps(document).replace(f'"{REF}ClusterPage"', f'"{REF}Page_Cluster_"')
    )
    renamed["components"]["schemas"]["Page_Cluster_"] = {
        **renamed["components"]["schemas"].pop("ClusterPage"),
        "title": "Page[Cluster]",
    }
    assert normalise(renamed) == normalise(document)
    changed = json.loads(json.dumps(document))
    changed["components"]["schemas"]["ClusterPage"]["required"] = ["items"]
    assert normalise(changed) != normalise(document)
    changed = json.loads(json.dumps(document))
    changed["components"]["schemas"]["Cluster"]["properties"].pop("name")
    assert normalise(changed) != normalise(document)
    assert "ClusterPage" in schemas


def _write_snapshot() -> None:  # pragma: no cover - run by hand
    from tests.api.openapi_document import build_document

    document = build_document()
    SNAPSHOT.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    _write_snapshot()
