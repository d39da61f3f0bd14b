"""The interactive API docs: Swagger UI at ``/docs`` and ReDoc at ``/redoc``.

FastAPI's own pages load Swagger UI and ReDoc from a public CDN and their favicon
from FastAPI's website, so they stay blank with no internet access, behind a proxy
that blocks CDNs, or under a strict Content-Security-Policy. These pages load every
file from ecswatch itself: Swagger UI's and ReDoc's builds as the
``fastapi-offline`` package ships them, and Swagger UI's start-up script from
``static/``. They run no inline script, and each is sent with a policy that lets
the browser load nothing from another host (docs/api.md, "Interactive docs").
"""

from __future__ import annotations

from html import escape

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
# The builds of Swagger UI and ReDoc (and FastAPI's favicon), then ecswatch's own files.
ASSET_PACKAGES: list[str | tuple[str, str]] = [
    ("fastapi_offline", "static"),
    ("service.api", "static"),
]

# Each page may load from its own origin only (no host is named). Swagger UI's
# stylesheet draws its icons as data: images; ReDoc writes its styles into <style>
# elements (styled-components), failing to start without 'unsafe-inline' styles,
# and runs its search in a worker made from a blob: URL of its own.
SWAGGER_UI_POLICY = "default-src 'self'; img-src 'self' data:"
REDOC_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "worker-src 'self' blob:"
)

_SWAGGER_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Swagger UI</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/swagger-init.js"></script>
</body>
</html>
"""

_REDOC_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - ReDoc</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
<style>body {{ margin: 0; }}</style>
</head>
<body>
<redoc spec-url="{openapi}"></redoc>
<script src="{assets}/redoc.standalone.js"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs``, ``/redoc`` and their files on ``app`` (whose OpenAPI URL is set)."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("the docs pages need the app's OpenAPI document")
    app.mount(ASSETS_URL, StaticFiles(packages=ASSET_PACKAGES), name="docs-assets")

    def render(template: str) -> str:
        return template.format(
            title=escape(app.title), assets=escape(ASSETS_URL), openapi=escape(openapi_url)
        )

    swagger_ui, redoc = render(_SWAGGER_PAGE), render(_REDOC_PAGE)

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui_page() -> HTMLResponse:
        return HTMLResponse(swagger_ui, headers={"Content-Security-Policy": SWAGGER_UI_POLICY})

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc_page() -> HTMLResponse:
        return HTMLResponse(redoc, headers={"Content-Security-Policy": REDOC_POLICY})
