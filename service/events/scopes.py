"""The scope (account, region) an event's resources live in (pure)."""

from __future__ import annotations

from service.events.arns import parse_arn
from service.events.models import NormalisedEvent


def event_scope(event: NormalisedEvent) -> tuple[str, str] | None:
    """(account, region) from the cluster's ARN, else the envelope's ``account`` and
    ``region``; None when neither says it."""
    parsed = parse_arn(event.cluster_arn)
    if parsed is not None and parsed.account and parsed.region:
        return parsed.account, parsed.region
    envelope = event.envelope
    if envelope.account and envelope.region:
        return envelope.account, envelope.region
    return None
