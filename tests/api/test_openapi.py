"""The OpenAPI document describes what the API really sends."""

from __future__ import annotations

from typing import Any

import httpx

OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}
PROBLEM = {"$ref": "#/components/schemas/Problem"}


async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


async def test_every_route_has_a_model_and_an_example(anonymous: httpx.AsyncClient) -> None:
    document = await openapi(anonymous)
    for method, path, operation in operations(document):
        if path in ("/healthz", "/readyz"):
            continue  # the probes answer fixed shapes described in their summaries
        success = {c: r for c, r in operation["responses"].items() if c.startswith("2")}
        assert len(success) == 1, (method, path)
        code, response = next(iter(success.items()))
        if code == "204":
            continue
        content = response["content"]
        media = content.get("application/json") or content.get("text/plain")
        assert media is not None, (method, path)
        assert "example" in media, (method, path)
        if "application/json" in content:
            assert "$ref" in media["schema"], (method, path)
        assert operation.get("summary"), (method, path)


async def test_errors_are_documented_as_problems(anonymous: httpx.AsyncClient) -> None:
    document = await openapi(anonymous)
    for method, path, operation in operations(document):
        responses = operation["responses"]
        assert "422" not in responses, (method, path)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "400" in responses, (method, path)
        for code, response in responses.items():
            if int(code) >= 400 and response.get("content"):
                where = (method, path, code)
                assert list(response["content"]) == ["application/problem+json"], where
                problem = response["content"]["application/problem+json"]
                assert problem["schema"] == PROBLEM, where
                assert problem["example"]["status"] == int(code), where
        if path.startswith("/v1/"):
            assert operation["security"] == [{"bearerAuth": []}], (method, path)
            assert "401" in responses
            assert "WWW-Authenticate" in responses["401"]["headers"]
        else:
            assert path in OPEN_PATHS
            assert "security" not in operation
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


async def test_admin_routes_document_403(anonymous: httpx.AsyncClient) -> None:
    document = await openapi(anonymous)
    for method, path, operation in operations(document):
        admin = path.startswith(("/v1/webhooks", "/v1/quarantine"))
        assert ("403" in operation["responses"]) == admin, (method, path)


async def test_docs_are_served(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/docs")
    assert response.status_code == 200
    assert "/openapi.json" in response.text
