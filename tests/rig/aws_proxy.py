"""A counting, throttling HTTP proxy in front of moto: stubbing AWS at the wire.

Every request is forwarded to moto unchanged; the proxy counts it by signing
service (from the SigV4 credential scope: ``ecs``, ``monitoring``,
``elasticloadbalancing``, ``codedeploy``, ``sqs``) and operation (from
``X-Amz-Target``, the RPC v2 path, or the query ``Action``), and each call by
scope: the region of its SigV4 credential scope
(``Credential=AKID/date/REGION/service/aws4_request``) and the account of its
access key. moto, like AWS, gives credentials from ``sts:AssumeRole`` the account
of the role; the proxy learns the same from every ``AssumeRole`` it forwards (the
role's account, the answer's ``AccessKeyId``), and any other key is moto's default
account. :meth:`throttle` makes the next N calls of an operation (or of every
operation) answer the way AWS does when it throttles, in every scope or in one
account and/or region;
:meth:`rewrite` edits the JSON answers of an operation (a state moto cannot reach,
such as a CodeDeploy deployment that failed). :meth:`deny_account` answers
``sts:AssumeRole`` into an account with STS's real ``AccessDenied`` (moto cannot
refuse one account while serving the others). ECS's service deployment
operations, which moto lacks, are answered by :attr:`service_deployments`
(:mod:`tests.rig.service_deployments`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

from tests.rig.service_deployments import OPERATIONS as SERVICE_DEPLOYMENT_OPERATIONS
from tests.rig.service_deployments import ApiError, ServiceDeploymentStore

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_REGION = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/[^/]+/aws4_request")
_RPC_V2 = re.compile(r"/service/[^/]+/operation/([A-Za-z0-9]+)")
_ACCESS_KEY = re.compile(r"Credential=([^/]+)/\d{8}/")
_ANSWERED_KEY = re.compile(rb"<AccessKeyId>([^<]+)</AccessKeyId>")
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}
#: The account moto serves to credentials it did not issue by ``AssumeRole``.
MOTO_DEFAULT_ACCOUNT = "123456789012"
#: A throttling rule's key: operation, account, region (None: any).
_Rule = tuple[str | None, str | None, str | None]


class AwsProxy:
    """Forwards 127.0.0.1:<port> to ``target``; counts and optionally throttles calls."""

    def __init__(self, target: str) -> None:
        self._target = target.rstrip("/")
        self.calls: Counter[tuple[str, str]] = Counter()
        self.throttled: Counter[tuple[str, str]] = Counter()
        #: Throttled answers by scope (account, region).
        self.throttled_scopes: Counter[tuple[str, str]] = Counter()
        self._throttle: dict[_Rule, int] = {}
        #: Access key -> account, from the ``AssumeRole`` answers forwarded.
        self._key_accounts: dict[str, str] = {}
        self._rewrite: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self._denied: set[str] = set()
        self._denied_operations: set[tuple[str, str]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0
        self.service_deployments = ServiceDeploymentStore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> AwsProxy:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        # moto answers "connection: close": a fresh connection per request.
        self._session = aiohttp.ClientSession(
            auto_decompress=False, connector=aiohttp.TCPConnector(force_close=True)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def throttle(
        self,
        operation: str | None,
        times: int,
        *,
        account: str | None = None,
        region: str | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``operation`` (None: of any operation) with
        a throttling error; only calls of ``account`` and/or ``region`` when given (AWS
        throttles per account and region), else calls of every scope."""
        self._throttle[operation, account, region] = times

    def scope_of(self, request: web.Request) -> tuple[str, str]:
        """The (account, region) a request is signed for ("?" for a part not found)."""
        authorization = request.headers.get("Authorization", "")
        key = _ACCESS_KEY.search(authorization)
        signed = _REGION.search(authorization)
        account = MOTO_DEFAULT_ACCOUNT if key is None else self.account_of(key.group(1))
        return account, signed.group(1) if signed else "?"

    def account_of(self, access_key: str) -> str:
        """The account moto serves to ``access_key``."""
        return self._key_accounts.get(access_key, MOTO_DEFAULT_ACCOUNT)

    def _throttles(self, operation: str, scope: tuple[str, str]) -> bool:
        """Whether a throttling rule takes this call (and counts it down)."""
        account, region = scope
        for (op, acc, reg), left in self._throttle.items():
            matches = op in (None, operation) and acc in (None, account) and reg in (None, region)
            if left > 0 and matches:
                self._throttle[op, acc, reg] = left - 1
                return True
        return False

    def rewrite(self, operation: str, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Pass every JSON answer of ``operation`` through ``edit`` on its way back."""
        self._rewrite[operation] = edit

    def deny_account(self, account: str) -> None:
        """Refuse every ``sts:AssumeRole`` into ``account`` (HTTP 403 AccessDenied)."""
        self._denied.add(account)

    def deny_operation(self, operation: str, region: str) -> None:
        """Answer ``operation`` signed for ``region`` with AccessDeniedException (JSON)."""
        self._denied_operations.add((operation, region))

    def count(self, operation: str, service: str | None = None) -> int:
        return sum(
            n for (s, op), n in self.calls.items() if op == operation and service in (None, s)
        )

    def reset(self) -> None:
        self.calls.clear()
        self.throttled.clear()
        self.throttled_scopes.clear()
        self._throttle.clear()
        self._rewrite.clear()
        self._denied.clear()
        self._denied_operations.clear()
        self.service_deployments = ServiceDeploymentStore()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        service, operation = _identify(request, body)
        self.calls[service, operation] += 1
        if self._throttle and self._throttles(operation, scope := self.scope_of(request)):
            self.throttled[service, operation] += 1
            self.throttled_scopes[scope] += 1
            return _throttling(request)
        signed = _REGION.search(request.headers.get("Authorization", ""))
        if signed and (operation, signed.group(1)) in self._denied_operations:
            return web.json_response(
                {"__type": "AccessDeniedException", "message": f"not authorized: {operation}"},
                status=400,
                headers={"x-amzn-ErrorType": "AccessDeniedException"},
            )
        role = ""
        if operation == "AssumeRole":
            role = (parse_qs(body.decode(errors="replace")).get("RoleArn") or [""])[0]
            if role.split(":")[4:5] and role.split(":")[4] in self._denied:
                return _access_denied(role)
        if service == "ecs" and operation in SERVICE_DEPLOYMENT_OPERATIONS:
            self.service_deployments.asked.append((operation, signed.group(1) if signed else "?"))
            return _json_answer(self.service_deployments, operation, body)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method, self._target + request.path_qs, headers=headers, data=body
        ) as upstream:
            payload = await upstream.read()
            if role and upstream.status == 200:
                self._learn_key(role, payload)
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            edit = self._rewrite.get(operation)
            if edit is not None and upstream.status == 200:
                payload = json.dumps(edit(json.loads(payload))).encode()
                out.pop("Content-Encoding", None)
                out.pop("content-encoding", None)
                out = {k: v for k, v in out.items() if k.lower() != "x-amz-crc32"}
            return web.Response(status=upstream.status, body=payload, headers=out)

    def _learn_key(self, role: str, payload: bytes) -> None:
        answered = _ANSWERED_KEY.search(payload)
        parts = role.split(":")
        if answered and len(parts) > 4 and parts[4]:
            self._key_accounts[answered.group(1).decode()] = parts[4]


def _identify(request: web.Request, body: bytes) -> tuple[str, str]:
    scope = _SCOPE.search(request.headers.get("Authorization", ""))
    service = scope.group(1) if scope else "?"
    target = request.headers.get("X-Amz-Target")
    if target:
        return service, target.rpartition(".")[2]
    rpc = _RPC_V2.search(request.path)
    if rpc:
        return service, rpc.group(1)
    action = parse_qs(body.decode(errors="replace")).get("Action") or request.query.getall(
        "Action", []
    )
    return service, (action[0] if action else "?")


def _access_denied(role: str) -> web.Response:
    """STS's answer when the caller may not assume ``role``."""
    return web.Response(
        status=403,
        content_type="text/xml",
        text=(
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            "<Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::"
            "123456789012:user/ecswatch is not authorized to perform: sts:AssumeRole on"
            f" resource: {role}</Message></Error><RequestId>ecswatch-test</RequestId>"
            "</ErrorResponse>"
        ),
    )


def _json_answer(store: ServiceDeploymentStore, operation: str, body: bytes) -> web.Response:
    """An ECS JSON 1.1 answer from ``store``: 200 with the shape, or 400 with ``__type``."""
    try:
        answer = store.answer(operation, json.loads(body or b"{}"))
    except ApiError as exc:
        return web.json_response(
            {"__type": exc.code, "message": exc.message},
            status=400,
            headers={"x-amzn-ErrorType": exc.code},
            content_type="application/x-amz-json-1.1",
        )
    return web.json_response(answer, content_type="application/x-amz-json-1.1")


def _throttling(request: web.Request) -> web.Response:
    if request.headers.get("X-Amz-Target"):  # JSON protocols (ECS, CodeDeploy, SQS)
        return web.json_response(
            {"__type": "ThrottlingException", "message": "Rate exceeded"},
            status=400,
            headers={"x-amzn-ErrorType": "ThrottlingException"},
            content_type="application/x-amz-json-1.1",
        )
    return web.Response(  # query protocol (ELBv2)
        status=400,
        content_type="text/xml",
        text=(
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
            "<Message>Rate exceeded</Message></Error><RequestId>ecswatch-test</RequestId>"
            "</ErrorResponse>"
        ),
    )
