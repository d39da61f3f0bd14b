"""SSRF guard for webhook URLs: refuse targets that resolve into private address space.

A webhook URL is chosen by an API caller but fetched by ecswatch from inside the
operator's network, so without a guard it is a way to reach the metadata service
(169.254.169.254), the database or any internal admin page. The guard runs twice:
at subscription time (the API answers 400) and again at send time in the
dispatcher, because DNS answers can change between the two (DNS rebinding). The
dispatcher should connect to one of the addresses returned by
:func:`check_webhook_url` rather than resolving the name again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from service.errors import InvalidInputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Resolves ``(host, port)`` to IP address strings; the default uses the event loop.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

#: A slow resolver must not hold an API request (or a dispatcher slot) for long.
RESOLVE_TIMEOUT_S = 5.0

_ALLOWED_SCHEMES = ("http", "https")


class WebhookUrlRefusedError(InvalidInputError):
    """The webhook URL is malformed or resolves to an address ecswatch will not call."""

    problem_type = "webhook-url-refused"
    title = "Webhook URL refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, param="url")


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, through the running loop's resolver."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # ::ffff:127.0.0.1 reaches 127.0.0.1; judge the embedded IPv4 address.
        address = address.ipv4_mapped
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        # Shared (CGNAT), documentation, benchmarking and other special ranges.
        ("not globally routable", not address.is_global),
    )
    for reason, hit in checks:
        if hit:
            return reason
    return None


async def check_webhook_url(
    url: str,
    *,
    allow_private: bool,
    resolver: Resolver | None = None,
) -> list[IPAddress]:
    """Validate ``url`` and return the addresses it resolves to.

    Raises :class:`WebhookUrlRefusedError` for a scheme other than http/https, a
    missing host, a host that does not resolve, or (unless ``allow_private``) any
    resolved address that is loopback, private, link-local, reserved, multicast,
    unspecified or otherwise not globally routable. One bad address is enough:
    an attacker controls which of several A records a client picks.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlRefusedError(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _ALLOWED_SCHEMES:
        raise WebhookUrlRefusedError("the URL scheme must be http or https")
    host = parts.hostname
    if not host:
        raise WebhookUrlRefusedError("the URL has no host")
    port = port or (443 if scheme == "https" else 80)

    literal = _ip_literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        resolve = resolver or resolve_host
        try:
            names = await asyncio.wait_for(resolve(host, port), RESOLVE_TIMEOUT_S)
        except (OSError, TimeoutError, UnicodeError):
            raise WebhookUrlRefusedError(f"the host {host!r} does not resolve") from None
        addresses = [a for a in (_ip_literal(n) for n in names) if a is not None]
        if not addresses:
            raise WebhookUrlRefusedError(f"the host {host!r} does not resolve")

    if not allow_private:
        for address in addresses:
            reason = refusal_reason(address)
            if reason is not None:
                raise WebhookUrlRefusedError(
                    f"the host {host!r} resolves to {address}, which is {reason}; "
                    "set ECSWATCH_WEBHOOK_ALLOW_PRIVATE=true to allow such targets"
                )
    return addresses


def _ip_literal(host: str) -> IPAddress | None:
    try:
        # Drop an IPv6 zone ("fe80::1%eth0"): the address alone decides.
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
