"""The OpenAPI document is valid as written, and so is every example in it.

The document is checked with ``openapi-spec-validator`` (OpenAPI 3.1), and each
example with ``jsonschema`` (2020-12, OpenAPI 3.1's dialect) against the schema it
illustrates, ``$ref`` resolved within the document: an example that loses a
required field on its way into the document (a null FastAPI leaves out) fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.api.openapi_document import build_document

BASE = "urn:ecswatch-openapi"


def _document() -> dict[str, Any]:
    return build_document()


def _pointer(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def examples(document: dict[str, Any]) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    """(where, pointer parts of the schema, example) for every example in the document."""
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        for i, example in enumerate(schema.get("examples") or []):
            yield f"schema {name} example {i}", ("components", "schemas", name), example
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            bodies = [("requestBody", operation.get("requestBody") or {})]
            bodies += [
                (f"responses/{status}", response)
                for status, response in (operation.get("responses") or {}).items()
            ]
            for where, holder in bodies:
                for media, content in (holder.get("content") or {}).items():
                    if "schema" not in content:
                        continue
                    base = ("paths", path, method, *where.split("/"), "content", media)
                    found = []
                    if "example" in content:
                        found.append(content["example"])
                    found += [e.get("value") for e in (content.get("examples") or {}).values()]
                    for example in found:
                        yield f"{method.upper()} {path} {where}", (*base, "schema"), example


def test_the_document_is_valid_openapi() -> None:
    validate(_document())


def test_every_example_validates_against_its_schema() -> None:
    document = _document()
    registry = Registry().with_resource(
        BASE, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    found = list(examples(document))
    assert len(found) > 40
    failures = []
    for where, parts, example in found:
        validator = Draft202012Validator({"$ref": BASE + "#" + _pointer(parts)}, registry=registry)
        errors = [e.message for e in validator.iter_errors(example)]
        if errors:
            failures.append(f"{where}: {errors[:2]}")
    assert failures == []


def test_the_check_catches_a_bad_example() -> None:
    document = _document()
    registry = Registry().with_resource(
        BASE, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    parts = ("components", "schemas", "Task")
    example = dict(document["components"]["schemas"]["Task"]["examples"][0])
    del example["arn"]
    validator = Draft202012Validator({"$ref": BASE + "#" + _pointer(parts)}, registry=registry)
    assert not validator.is_valid(example)


@pytest.mark.parametrize("schema", ["Task", "ContainerInstance"])
def test_required_fields_survive_into_the_examples(schema: str) -> None:
    component = _document()["components"]["schemas"][schema]
    for example in component["examples"]:
        assert set(component["required"]) <= set(example)


def test_each_problem_status_shows_an_example_of_its_own() -> None:
    document = _document()
    shown = 0
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for code, response in (operation.get("responses") or {}).items():
                problem = (response.get("content") or {}).get("application/problem+json")
                if not code.isdigit() or int(code) < 400 or problem is None:
                    continue  # /readyz answers its own 503 body
                example = problem.get("example")
                assert example is not None, f"{method.upper()} {path} {code}"
                assert example["status"] == int(code), f"{method.upper()} {path} {code}"
                shown += 1
    assert shown > 40
