"""moto in server mode on loopback, and SQS helpers shared by the demo, the CLI and tests."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from service.aws.setup import create_queue_with_dlq

__all__ = ["MotoServer", "create_queue_with_dlq"]

# Body that stops moto from advancing ECS tasks towards STOPPED on every describe_tasks
# call (see RIG-NOTES); `/moto-api/reset` leaves this setting in place.
_PIN_ECS_TASKS = {
    "model_name": "ecs::task",
    "transition": {"progression": "manual", "times": 1_000_000_000},
}


#: ECS operations moto does not implement, answered as ECS answers an account that
#: has no such record: ECS's service deployments (docs/events.md, "Service
#: deployments"). The JSON 1.1 target prefix of ECS.
_ECS_TARGET = "AmazonEC2ContainerServiceV20141113"
_MAX_BODY = 1024 * 1024


def _no_service_deployments(operation: str, body: dict[str, Any]) -> dict[str, Any]:
    if operation == "ListServiceDeployments":
        return {"serviceDeployments": []}
    key, arns_key = (
        ("serviceDeployments", "serviceDeploymentArns")
        if operation == "DescribeServiceDeployments"
        else ("serviceRevisions", "serviceRevisionArns")
    )
    arns = body.get(arns_key)
    missing = [
        {"arn": str(a), "reason": "MISSING"} for a in (arns if isinstance(arns, list) else [])
    ]
    return {key: [], "failures": missing}


_UNIMPLEMENTED = frozenset(
    {"ListServiceDeployments", "DescribeServiceDeployments", "DescribeServiceRevisions"}
)


def _answer_unimplemented(app: Any) -> Any:
    """moto's WSGI app, with :data:`_UNIMPLEMENTED` answered instead of a 500."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        prefix, _, operation = str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")
        if prefix != _ECS_TARGET or operation not in _UNIMPLEMENTED:
            return app(environ, start_response)
        length = min(int(environ.get("CONTENT_LENGTH") or 0), _MAX_BODY)
        try:
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
        except ValueError:
            body = {}
        payload = json.dumps(
            _no_service_deployments(operation, body if isinstance(body, dict) else {})
        ).encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/x-amz-json-1.1"),
                ("Content-Length", str(len(payload))),
            ],
        )
        return [payload]

    return wsgi


class _Handler(MotoRequestHandler):
    def send_response(self, code: int, message: str | None = None) -> None:
        # moto's responses carry `server: amazon.com`; the stdlib adds a second Server
        # header, which strict HTTP parsers reject (aiohttp's client in asyncio debug
        # mode fails every AWS call). Same as the stdlib method minus that header.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())


class MotoServer:
    """moto in server mode (as ``ThreadedMotoServer``) on 127.0.0.1 with an OS-assigned port.

    moto keeps its backends in process-global state: every client pointed at
    :attr:`endpoint_url` sees the same accounts, and :meth:`reset` wipes them all.
    """

    def __init__(self) -> None:
        self._httpd: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind a free port and serve in a daemon thread; the port is bound on return."""
        if self._httpd is not None:
            raise RuntimeError("MotoServer already started")
        # werkzeug installs its own stderr handler and logs every request at INFO when
        # nobody configured its logger; that would drown the demo's output.
        werkzeug_log = logging.getLogger("werkzeug")
        if werkzeug_log.level == logging.NOTSET:
            werkzeug_log.setLevel(logging.WARNING)
        # What ThreadedMotoServer does, with our handler (see _Handler) and port 0.
        app = _answer_unimplemented(DomainDispatcherApplication(create_backend_app))
        self._httpd = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Handler)
        # A short poll interval keeps stop() (and so test teardown) quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="moto-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (werkzeug closes it when serve_forever ends)."""
        if self._httpd is not None and self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd = self._thread = None

    @property
    def endpoint_url(self) -> str:
        """Base URL to use as ``AWS_ENDPOINT_URL`` / ``endpoint_url``."""
        if self._httpd is None:
            raise RuntimeError("MotoServer is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def reset(self) -> None:
        """Delete every resource in every moto backend."""
        self._post("/moto-api/reset")

    def pin_ecs_tasks(self) -> None:
        """Keep ECS tasks in their current state instead of moving one step per describe."""
        self._post("/moto-api/state-manager/set-transition", _PIN_ECS_TASKS)

    def _post(self, path: str, body: dict[str, Any] | None = None) -> None:
        request = urllib.request.Request(
            self.endpoint_url + path,
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
