"""The ``slack`` webhook format: an alert as a Slack incoming-webhook message. Pure.

Slack accepts ``{"text": …, "blocks": […]}``; ``text`` is the notification and
fallback, the blocks carry the outcome, service, reason, rollback target, target groups
(blue/green) and ARN.
"""

from __future__ import annotations

from typing import Any

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


def _escape(value: object) -> str:
    """Slack mrkdwn escaping (``&``, ``<``, ``>``)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
    icon = _ICONS.get(kind, ":bell:")
    # A failure's message leads with its classified cause (docs/alerts.md, "Why it failed").
    cause = (deployment.get("cause") or {}).get("summary")
    if cause:
        summary = f"{cause} — {summary}"
    return {
        "text": f"{icon} {summary}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{_escape(summary)}*"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{_escape(value)}"}
                    for name, value in fields
                ],
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"ecswatch · {_escape(kind)} · {alert.get('id')}"}
                ],
            },
        ],
    }
