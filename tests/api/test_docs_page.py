"""The interactive docs work in a real browser, with nothing loaded from another host.

A real server serves the app; headless Chromium (Debian's ``chromium``, which
scripts/test installs) loads ``/docs`` and ``/redoc`` under the
Content-Security-Policy that the pages are sent with, which names no host but the
page's own, and checks that they list every operation of ``/openapi.json``.
Chromium logs every blocked or failed load to its console; any such line fails
the test. The page is loaded as ``http://ecswatch.test:<port>``, a name that only
Chromium maps to the loopback address, so that it sees a server elsewhere, as an
operator's browser does, rather than ``localhost``. One more test drives Swagger
UI's "Authorize" and "Try it out" through Chromium's DevTools protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from service.api.app import OPENAPI_TAGS, create_app
from service.config import Settings, load_settings
from service.readiness import RoleStatus
from service.roles.api import serve_api
from service.runtime import Runtime, open_runtime
from tests.api.conftest import READ_TOKEN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on PATH: scripts/test installs Debian's chromium, "
    "which could not be installed on this machine",
)
HOST = "ecswatch.test"
# Sources a docs page's policy may allow: its own origin and content it carries or
# makes itself (inline styles, data: images, blob: workers).
SAME_ORIGIN_SOURCES = {"'self'", "'none'", "'unsafe-inline'", "data:", "blob:"}
# ReDoc's menu links its maker's logo from their CDN, whatever its options.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
# Chromium's console lines: "[...:INFO:CONSOLE:12] "message", source: url (12)".
CONSOLE_LINE = re.compile(r":CONSOLE[:(]\d+\)?\] (.*)")


class DocsDom(HTMLParser):
    """What a rendered docs page shows: element ids, Swagger UI's operation paths and summaries."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.paths: set[str] = set()
        self.summaries: list[str] = []
        self.classes: set[str] = set()
        self._in_summary = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        self.classes.update(classes)
        if attributes.get("id"):
            self.ids.add(str(attributes["id"]))
        if "opblock-summary-path" in classes and attributes.get("data-path"):
            self.paths.add(str(attributes["data-path"]))
        if "opblock-summary-description" in classes:
            self._in_summary = True
            self.summaries.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_summary = False

    def handle_data(self, data: str) -> None:
        if self._in_summary:
            self.summaries[-1] += data


class PageUrls(HTMLParser):
    """Every URL a page's HTML refers to (``src``, ``href`` and ``data-openapi-url``)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url", "data-openapi-url") and value is not None:
                self.urls.append(value)


def operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"method": method, "path": path, **operation}
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def chromium(profile: Path, *arguments: str) -> tuple[str, ...]:
    """A headless Chromium command line with a profile of its own under ``profile``."""
    assert CHROMIUM is not None
    return (
        CHROMIUM,
        "--headless",
        # The page is ecswatch's own; Chromium's sandbox does not run as root (CI).
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
        *arguments,
    )


async def load_in_chromium(url: str, profile: Path) -> tuple[str, list[str]]:
    """The DOM of ``url`` once its scripts ran, and Chromium's console messages."""
    process = await asyncio.create_subprocess_exec(
        *chromium(
            profile,
            "--enable-logging=stderr",
            "--log-level=0",
            # Virtual time: the page's timers run as fast as its loads allow, and
            # the DOM is dumped once this much of it passed with nothing to load.
            "--virtual-time-budget=30000",
            "--dump-dom",
            url,
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(profile)},
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    console = [m.group(1) for m in CONSOLE_LINE.finditer(stderr.decode(errors="replace"))]
    return stdout.decode(), console


def assert_only_same_origin(policy: str) -> None:
    """``policy`` lets the page load from its own origin only."""
    directives = [d.split() for d in policy.split(";") if d.strip()]
    assert ["default-src", "'self'"] in directives, policy
    for name, *sources in directives:
        assert set(sources) <= SAME_ORIGIN_SOURCES, (name, sources)


def assert_nothing_blocked(console: list[str], *, allowed: str | None = None) -> None:
    """No load was blocked or failed and no script error was logged, but ``allowed``."""
    problems = [
        line
        for line in console
        if ("Content Security Policy" in line or "Failed to load" in line or "Error" in line)
        and not (allowed and allowed in line)
    ]
    assert problems == [], problems


@pytest.fixture
async def served(runtime: Runtime) -> AsyncIterator[tuple[str, int]]:
    """The app behind a real server on a free port: (base URL as Chromium sees it, port)."""
    stop = asyncio.Event()
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        serve_api(runtime, stop, host="127.0.0.1", port=0, roles=RoleStatus(), started=started)
    )
    await asyncio.wait({started, serving}, return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        serving.result()  # raises why it could not serve
    port = started.result()
    try:
        yield f"http://{HOST}:{port}", port
    finally:
        stop.set()
        await serving


async def openapi_document(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@needs_chromium
@pytest.mark.timeout(300)
async def test_swagger_ui_shows_every_operation_offline(
    served: tuple[str, int], tmp_path: Path
) -> None:
    base, port = served
    document = await openapi_document(port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        policy = (await client.get("/docs")).headers["content-security-policy"]
    assert_only_same_origin(policy)

    dom, console = await load_in_chromium(f"{base}/docs", tmp_path / "chromium")

    assert_nothing_blocked(console)
    page = DocsDom()
    page.feed(dom)
    expected = operations(document)
    assert page.paths == {op["path"] for op in expected}
    for op in expected:
        (tag,) = op["tags"]
        # Swagger UI's id of an operation: its tag (spaces as _) and operationId.
        assert f"operations-{tag.replace(' ', '_')}-{op['operationId']}" in page.ids, op
    assert sorted(page.summaries) == sorted(op["summary"] for op in expected)
    # A section for every declared tag, and the button that takes a token.
    for tag in OPENAPI_TAGS:
        assert f"operations-tag-{tag['name'].replace(' ', '_')}" in page.ids, tag
    assert "authorize" in page.classes


@needs_chromium
@pytest.mark.timeout(300)
async def test_redoc_shows_every_operation_offline(served: tuple[str, int], tmp_path: Path) -> None:
    base, port = served
    document = await openapi_document(port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        policy = (await client.get("/redoc")).headers["content-security-policy"]
    assert_only_same_origin(policy)

    dom, console = await load_in_chromium(f"{base}/redoc", tmp_path / "chromium")

    # ReDoc's menu always shows its maker's logo from their CDN; the policy blocks
    # that one image and ReDoc leaves it out. Anything else blocked fails.
    assert_nothing_blocked(console, allowed=f"Loading the image '{REDOC_LOGO}'")
    assert any(REDOC_LOGO in line for line in console), "the policy no longer blocks it?"
    page = DocsDom()
    page.feed(dom)
    for tag in OPENAPI_TAGS:
        # ReDoc's id of a tag's section (spaces as -).
        assert f"tag/{tag['name'].replace(' ', '-')}" in page.ids, tag
    for op in operations(document):
        # ReDoc's id of an operation section.
        assert f"operation/{op['operationId']}" in page.ids, op
        assert op["summary"] in dom, op


# Drives Swagger UI as a person would: GET /v1/clusters with "Try it out" before
# and after entering the token under "Authorize"; answers both status codes.
AUTHORIZE_FLOW = """
(async (token) => {
  const op = "#operations-clusters-list_clusters_v1_clusters_get";
  const find = async (selector) => {
    for (let i = 0; i < 600; i++) {
      const found = document.querySelector(selector);
      if (found) return found;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error("nothing matches " + selector);
  };
  const execute = async () => {
    document.querySelector(op + " .btn-clear")?.click();
    (await find(op + " .execute")).click();
    const status = await find(op + " .live-responses-table tbody .response-col_status");
    return status.textContent.trim();
  };
  (await find(op + " .opblock-summary-control")).click();
  (await find(op + " .try-out__btn")).click();
  const before = await execute();
  (await find(".auth-wrapper .authorize")).click();
  const field = await find(".modal-ux input");
  // React reads the value through the native setter and an input event.
  Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(field, token);
  field.dispatchEvent(new Event("input", { bubbles: true }));
  (await find(".modal-ux .modal-btn.authorize")).click();
  (await find(".modal-ux .btn-done")).click();
  const after = await execute();
  return [before, after];
})
"""


async def run_in_chromium(url: str, profile: Path, function: str, *args: object) -> Any:
    """Load ``url`` in Chromium and answer ``function(*args)`` run in the page (DevTools)."""
    process = await asyncio.create_subprocess_exec(
        *chromium(
            profile,
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "HOME": str(profile)},
    )
    try:
        # Chromium writes the port it chose (and the browser's path) to this file.
        active_port = profile / "DevToolsActivePort"
        for _ in range(600):
            if active_port.exists() and active_port.read_text().count("\n") >= 1:
                break
            assert process.returncode is None, "Chromium exited"
            await asyncio.sleep(0.1)
        port = int(active_port.read_text().split()[0])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            (page,) = [t for t in targets if t["type"] == "page"]
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = iter(range(1, 1000))
                events: list[str] = []

                async def call(method: str, **params: object) -> dict[str, Any]:
                    sent = next(ids)
                    await ws.send_json({"id": sent, "method": method, "params": params})
                    async for message in ws:
                        answer: dict[str, Any] = json.loads(message.data)
                        if answer.get("id") == sent:
                            assert "result" in answer, answer
                            return dict(answer["result"])
                        events.append(str(answer.get("method")))
                    raise AssertionError(f"DevTools closed before answering {method}")

                await call("Page.enable")
                await call("Page.navigate", url=url)
                while "Page.loadEventFired" not in events:
                    await call("Runtime.evaluate", expression="1")  # reads pending events
                    await asyncio.sleep(0.05)
                result = await call(
                    "Runtime.evaluate",
                    expression=f"({function})(...{json.dumps(list(args))})",
                    awaitPromise=True,
                    returnByValue=True,
                )
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]
    finally:
        process.terminate()
        await process.wait()


@needs_chromium
@pytest.mark.timeout(300)
async def test_swagger_ui_authorize_sends_the_bearer_token(
    served: tuple[str, int], tmp_path: Path
) -> None:
    base, _ = served
    before, after = await run_in_chromium(
        f"{base}/docs", tmp_path / "chromium", AUTHORIZE_FLOW, READ_TOKEN
    )
    assert (before, after) == ("401", "200")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_pages_refer_only_to_their_own_origin(
    anonymous: httpx.AsyncClient, page: str
) -> None:
    response = await anonymous.get(page)
    assert response.status_code == 200
    urls = PageUrls()
    urls.feed(response.text)
    assert urls.urls, response.text
    for url in urls.urls:
        # A path on the same host: "/x", never "//host/x" or "https://host/x".
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        assert (await anonymous.get(url)).status_code == 200, url


async def test_api_docs_off_serves_no_docs(settings: Settings) -> None:
    off = load_settings(
        database_url=settings.database_url, data_dir=settings.data_dir, api_docs=False
    )
    async with open_runtime(off, pool_size=1) as runtime:
        app = create_app(runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"):
                assert (await client.get(path)).status_code == 404, path
            assert (await client.get("/healthz")).status_code == 200


def test_api_docs_reads_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().api_docs is True
    clean_env.setenv("ECSWATCH_API_DOCS", "false")
    assert load_settings().api_docs is False
