"""The ``slack`` webhook format: an alert as a Slack incoming-webhook message. Pure.

Slack accepts ``{"text": …, "blocks": […]}``; ``text`` is the notification and
fallback, the blocks carry the outcome, service, reason, rollback target, target groups
(blue/green) and ARN.

Every value that comes from an alert (and so from AWS: a stop reason, a service
name) is escaped for Slack (``&``, ``<``, ``>``), the top-level ``text`` included,
so a reason such as ``<!channel>`` or ``<https://evil|fix>`` is shown, never acted
on. Texts are cut, with an ellipsis, to Slack's limits (Block Kit reference):
:data:`SECTION_TEXT_MAX` for a section's text, :data:`FIELD_TEXT_MAX` for each of
at most :data:`FIELDS_MAX` fields, and all texts together to :data:`MESSAGE_MAX`,
well inside the 40,000 characters at which Slack truncates a message (longer block
texts in one message are refused as ``msg_blocks_too_long`` well before that), so
no alert is too long to send.
"""

from __future__ import annotations

import re
from typing import Any

#: A section block's ``text`` (Block Kit: 3,000 characters).
SECTION_TEXT_MAX = 3000
#: Each of a section block's ``fields`` (Block Kit: 2,000 characters)...
FIELD_TEXT_MAX = 2000
#: ...and at most ten of them.
FIELDS_MAX = 10
#: The top-level ``text`` (the notification; Slack truncates at 40,000).
TEXT_MAX = 3000
#: A context element's text.
CONTEXT_TEXT_MAX = 3000
#: Every text of one message together.
MESSAGE_MAX = 12_000
ELLIPSIS = "…"

_ICONS = {
    "deployment.failed": ":red_circle:",
    "deployment.rolled_back": ":leftwards_arrow_with_hook:",
    "deployment.stuck": ":hourglass:",
    "deployment.succeeded": ":large_green_circle:",
    "deployment.recovered": ":white_check_mark:",
    "task.failed_to_start": ":warning:",
    "service.placement_failure": ":warning:",
    "container_instance.disconnected": ":electric_plug:",
    "webhook.test": ":wave:",
}
# An entity cut short by truncation ("&am"), dropped rather than shown half.
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def escape(value: object) -> str:
    """Slack escaping of a text (``&``, ``<``, ``>``): no mention, link or command."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    """``text`` (already escaped) in at most ``limit`` characters, with an ellipsis
    when it was longer; never ends inside an entity."""
    if len(text) <= limit:
        return text
    head = _PARTIAL_ENTITY.sub("", text[: max(0, limit - len(ELLIPSIS))])
    return head + ELLIPSIS


def _field_limits(sizes: list[int], budget: int) -> list[int]:
    """Per-field limits that share ``budget``: short fields keep their length, the
    long ones split what is left evenly (each at most :data:`FIELD_TEXT_MAX`)."""
    limits = [0] * len(sizes)
    left, remaining = budget, len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: sizes[i]):
        share = max(1, left // remaining)
        limits[index] = min(sizes[index], share, FIELD_TEXT_MAX)
        left -= limits[index]
        remaining -= 1
    return limits


def slack_message(alert: dict[str, Any]) -> dict[str, Any]:
    """The Slack message of an alert body (the ``standard`` format's JSON)."""
    kind = str(alert.get("type") or "alert")
    summary = str(alert.get("summary") or kind)
    deployment = alert.get("deployment") or {}
    where = "/".join(str(p) for p in (alert.get("cluster"), alert.get("service")) if p)
    fields: list[tuple[str, object]] = [
        ("Outcome", deployment.get("outcome") or kind),
        ("Service", where or "-"),
    ]
    if deployment.get("id"):
        fields.append(("Deployment", deployment["id"]))
    if deployment.get("reason"):
        fields.append(("Reason", deployment["reason"]))
    if deployment.get("rollback_target"):
        fields.append(("Rollback target", deployment["rollback_target"]))
    names = [str(tg.get("name")) for tg in deployment.get("target_groups") or [] if tg.get("name")]
    if names:
        fields.append(("Target groups", ", ".join(names)))
    arn = alert.get("service_arn") or deployment.get("service_arn")
    if arn:
        fields.append(("ARN", arn))
    fields = fields[:FIELDS_MAX]
    icon = _ICONS.get(kind, ":bell:")
    # A failure's message leads with its classified cause (docs/alerts.md, "Why it failed").
    cause = (deployment.get("cause") or {}).get("summary")
    if cause:
        summary = f"{cause} — {summary}"

    text = cut(f"{icon} {escape(summary)}", TEXT_MAX)
    headline = f"{icon} *" + cut(escape(summary), SECTION_TEXT_MAX - len(icon) - 3) + "*"
    context = cut(f"ecswatch · {escape(kind)} · {escape(alert.get('id'))}", CONTEXT_TEXT_MAX)
    # The fields share what the other texts leave of the message's budget.
    heads = [f"*{name}*\n" for name, _ in fields]
    values = [escape(value) for _, value in fields]
    budget = MESSAGE_MAX - len(text) - len(headline) - len(context) - sum(map(len, heads))
    limits = _field_limits([len(v) for v in values], budget)
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        "text": head + cut(value, min(limit, FIELD_TEXT_MAX - len(head))),
                    }
                    for head, value, limit in zip(heads, values, limits, strict=True)
                ],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }
