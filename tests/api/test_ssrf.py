"""The SSRF guard of webhook URLs (service/alerts/ssrf.py), with tables of cases."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from service.alerts.ssrf import (
    Resolver,
    WebhookUrlRefusedError,
    check_webhook_url,
    refusal_reason,
)

REFUSED_ADDRESSES = [
    ("127.0.0.1", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.5", "private"),
    ("172.16.3.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "not globally routable"),
    ("::ffff:127.0.0.1", "loopback"),
    ("fd00::1", "private"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED_ADDRESSES)
def test_refusal_reasons(address: str, reason: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def fixed(*addresses: str) -> Resolver:
    """A resolver answering ``addresses`` for any host (DNS stand-in for rebinding cases)."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        return list(addresses)

    return resolve


async def test_one_private_answer_is_enough_to_refuse() -> None:
    with pytest.raises(WebhookUrlRefusedError, match=r"10\.0\.0\.1"):
        await check_webhook_url(
            "https://hooks.example.com/x",
            allow_private=False,
            resolver=fixed("93.184.215.14", "10.0.0.1"),
        )


async def test_public_answers_are_returned() -> None:
    addresses = await check_webhook_url(
        "https://hooks.example.com:8443/x", allow_private=False, resolver=fixed("93.184.215.14")
    )
    assert addresses == [ipaddress.ip_address("93.184.215.14")]


async def test_allow_private_still_needs_a_valid_url() -> None:
    assert await check_webhook_url("http://127.0.0.1:1/x", allow_private=True) == [
        ipaddress.ip_address("127.0.0.1")
    ]
    for url in ("file:///etc/passwd", "gopher://127.0.0.1/", "http://[::1/x", "http://:80/"):
        with pytest.raises(WebhookUrlRefusedError):
            await check_webhook_url(url, allow_private=True)


async def test_real_resolution_of_localhost_is_refused() -> None:
    with pytest.raises(WebhookUrlRefusedError, match="loopback"):
        await check_webhook_url("http://localhost:8080/", allow_private=False)


async def test_unresolvable_host_is_refused() -> None:
    with pytest.raises(WebhookUrlRefusedError, match="does not resolve"):
        await check_webhook_url("http://host.invalid/", allow_private=False, resolver=fixed())
