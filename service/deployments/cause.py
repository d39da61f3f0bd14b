"""Why a deployment failed: a pure classifier from the facts ecswatch holds to a cause.

The facts (:class:`DeploymentFacts`) are what the database knows about one failed
or stuck deployment: its failed tasks with their containers, the service's Service
Action events, lifecycle hook failures, CloudWatch-alarm rollbacks, the ALB points
of its target groups during the rollout and CodeDeploy's error. Every fact that
says something becomes a :class:`Signal`; the cause is the signal that ranks first
in :data:`PRECEDENCE` (the most specific one), never the order of the code that
found it. docs/alerts.md, "Why it failed", states the rule and the table.

Tasks that were only replaced (a Spot interruption, a scale-in, a user's stop, an
AWS maintenance notice) are no failure's cause and are left out before anything
is counted (:data:`REPLACED_STOP_CODES`, :data:`REPLACED_REASONS`).

No I/O here; :mod:`service.deployments.evidence` gathers the facts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Category(StrEnum):
    """The closed set of causes (docs/alerts.md, "Why it failed")."""

    IMAGE_PULL = "image_pull"
    SECRETS_OR_CONFIG = "secrets_or_config"
    OUT_OF_MEMORY = "out_of_memory"
    CONTAINER_EXIT = "container_exit"
    HEALTH_CHECK = "health_check"
    PLACEMENT = "placement"
    HOOK = "hook"
    ALARM = "alarm"
    TIMEOUT = "timeout"
    CODEDEPLOY = "codedeploy"
    UNKNOWN = "unknown"


class EvidenceKind(StrEnum):
    """Where a piece of evidence comes from."""

    TASK_STOPPED = "task_stopped"
    SERVICE_ACTION = "service_action"
    HOOK = "hook"
    ALARM = "alarm"
    TARGET_HEALTH = "target_health"
    CODEDEPLOY = "codedeploy"


# ---------------------------------------------------------------- the facts


@dataclass(frozen=True, slots=True)
class ContainerFact:
    """One container of a stopped task."""

    name: str | None = None
    exit_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TaskFact:
    """One stopped task of the deployment."""

    arn: str
    at: datetime | None = None  # when it stopped
    stop_code: str | None = None
    stopped_reason: str | None = None
    containers: tuple[ContainerFact, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceActionFact:
    """An ``ECS Service Action`` (or daemon service action) during the rollout."""

    at: datetime | None
    event_name: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class HookFact:
    """A lifecycle hook of an ECS blue/green deployment that did not succeed."""

    at: datetime | None
    event_name: str  # HOOK_FAILED or HOOK_TIMED_OUT
    lifecycle_stage: str | None = None
    hook_type: str | None = None


@dataclass(frozen=True, slots=True)
class AlarmFact:
    """CloudWatch alarms that failed (or rolled back) the deployment."""

    at: datetime | None
    names: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TargetHealthPoint:
    """One ALB point of a target group of the deployment during its rollout."""

    target_group: str  # the CloudWatch dimension, ``targetgroup/<name>/<id>``
    name: str  # the metric: UnHealthyHostCount, HTTPCode_Target_5XX_Count, …
    statistic: str
    timestamp: datetime
    value: float


@dataclass(frozen=True, slots=True)
class CodeDeployFact:
    """CodeDeploy's error of a failed deployment (BatchGetDeployments' errorInformation)."""

    at: datetime | None
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class DeploymentFacts:
    """Everything the classifier may use about one deployment."""

    tasks: tuple[TaskFact, ...] = ()
    service_actions: tuple[ServiceActionFact, ...] = ()
    hooks: tuple[HookFact, ...] = ()
    alarms: tuple[AlarmFact, ...] = ()
    target_health: tuple[TargetHealthPoint, ...] = ()
    codedeploy: tuple[CodeDeployFact, ...] = ()
    stuck: bool = False
    reason: str | None = None  # the deployment's own reason, quoted when nothing explains it


# ---------------------------------------------------------------- the cause


@dataclass(frozen=True, slots=True)
class Evidence:
    """One fact a cause rests on."""

    at: datetime | None
    kind: EvidenceKind
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {
            "at": None if self.at is None else self.at.isoformat(),
            "kind": self.kind.value,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Cause:
    """Why a deployment failed, with the evidence (oldest first)."""

    category: Category
    summary: str
    container: str | None = None
    exit_code: int | None = None
    evidence: tuple[Evidence, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """The JSON form (API responses, alert bodies)."""
        return {
            "category": self.category.value,
            "summary": self.summary,
            "container": self.container,
            "exit_code": self.exit_code,
            "evidence": [e.as_dict() for e in self.evidence],
        }


# ---------------------------------------------------------------- the tables


class Signal(StrEnum):
    """What one fact says; :data:`PRECEDENCE` ranks them, :data:`CATEGORY` names them."""

    IMAGE_PULL = "image_pull"
    SECRETS_OR_CONFIG = "secrets_or_config"
    CONFIGURATION_FAILURE = "configuration_failure"  # Service Action
    OUT_OF_MEMORY = "out_of_memory"
    START_TIMEOUT = "start_timeout"
    ELB_HEALTH = "elb_health"
    CONTAINER_HEALTH = "container_health"
    CONTAINER_EXIT = "container_exit"
    HOOK = "hook"
    PLACEMENT = "placement"
    ALARM = "alarm"
    TARGET_HEALTH = "target_health"  # ALB points alone, no task stopped for them
    CODEDEPLOY = "codedeploy"
    TASK_FAILED = "task_failed"  # a failed task whose reason no rule knows
    STUCK = "stuck"
    START_IMPAIRED = "start_impaired"


#: Most specific first: when the facts say several things, the first signal here that
#: any fact raised is the cause. A task's own words (a pull error, a secret, OOM) beat
#: what follows from them (exit codes, health checks); the deployment machinery
#: (hooks, placement, alarms, ALB points, CodeDeploy) comes after the tasks, and a
#: deployment that merely stopped moving comes last.
PRECEDENCE: tuple[Signal, ...] = (
    Signal.IMAGE_PULL,
    Signal.SECRETS_OR_CONFIG,
    Signal.CONFIGURATION_FAILURE,
    Signal.OUT_OF_MEMORY,
    Signal.START_TIMEOUT,
    Signal.ELB_HEALTH,
    Signal.CONTAINER_HEALTH,
    Signal.CONTAINER_EXIT,
    Signal.HOOK,
    Signal.PLACEMENT,
    Signal.ALARM,
    Signal.TARGET_HEALTH,
    Signal.CODEDEPLOY,
    Signal.TASK_FAILED,
    Signal.STUCK,
    Signal.START_IMPAIRED,
)
RANK: dict[Signal, int] = {signal: rank for rank, signal in enumerate(PRECEDENCE)}

CATEGORY: dict[Signal, Category] = {
    Signal.IMAGE_PULL: Category.IMAGE_PULL,
    Signal.SECRETS_OR_CONFIG: Category.SECRETS_OR_CONFIG,
    Signal.CONFIGURATION_FAILURE: Category.SECRETS_OR_CONFIG,
    Signal.OUT_OF_MEMORY: Category.OUT_OF_MEMORY,
    Signal.START_TIMEOUT: Category.TIMEOUT,
    Signal.ELB_HEALTH: Category.HEALTH_CHECK,
    Signal.CONTAINER_HEALTH: Category.HEALTH_CHECK,
    Signal.CONTAINER_EXIT: Category.CONTAINER_EXIT,
    Signal.HOOK: Category.HOOK,
    Signal.PLACEMENT: Category.PLACEMENT,
    Signal.ALARM: Category.ALARM,
    Signal.TARGET_HEALTH: Category.HEALTH_CHECK,
    Signal.CODEDEPLOY: Category.CODEDEPLOY,
    Signal.TASK_FAILED: Category.UNKNOWN,
    Signal.STUCK: Category.TIMEOUT,
    Signal.START_IMPAIRED: Category.UNKNOWN,
}


@dataclass(frozen=True, slots=True)
class TextRule:
    """A signal raised by the words of a stopped reason or a container's reason."""

    signal: Signal
    pattern: re.Pattern[str]


def _rule(signal: Signal, *alternatives: str) -> TextRule:
    return TextRule(signal, re.compile("|".join(alternatives), re.IGNORECASE))


#: The wording ECS writes in ``stoppedReason`` and in containers' ``reason`` (see
#: AWS's "Amazon ECS stopped tasks error messages"). Every rule that matches raises
#: its signal; the table's order does not matter (PRECEDENCE decides).
TEXT_RULES: tuple[TextRule, ...] = (
    _rule(
        Signal.IMAGE_PULL,
        r"CannotPullContainerError",
        r"pull access denied",
        r"failed to resolve ref",
        r"unable to (?:retrieve|get) (?:ecr )?registry auth",
        r"ecr:GetAuthorizationToken",
        r"ecr:BatchGetImage",
    ),
    _rule(
        Signal.SECRETS_OR_CONFIG,
        r"ResourceInitializationError",
        r"unable to retrieve secrets? from",
        r"failed to initialize logging driver",
        r"CannotCreateVolumeError",
        r"CannotStartContainerError",
    ),
    _rule(Signal.OUT_OF_MEMORY, r"OutOfMemoryError", r"OOMKilled", r"killed due to memory usage"),
    _rule(
        Signal.START_TIMEOUT,
        r"ContainerRuntimeTimeoutError",
        r"DockerTimeoutError",
        r"timed out after waiting",
    ),
    _rule(Signal.ELB_HEALTH, r"failed ELB health checks"),
    _rule(Signal.CONTAINER_HEALTH, r"failed container health checks"),
    _rule(Signal.CONTAINER_EXIT, r"Essential container in task exited"),
)

#: Stop codes of tasks that failed (they count even when no rule knows the reason).
FAILED_STOP_CODES = frozenset({"TaskFailedToStart", "EssentialContainerExited"})

#: Stop codes of tasks that were replaced, with the signals that still make such a
#: task a failure: ECS stops a task that failed its ELB or container health checks
#: as ``ServiceSchedulerInitiated``, like a scale-in; the other codes never fail.
REPLACED_STOP_CODES: dict[str, frozenset[Signal]] = {
    "SpotInterruption": frozenset(),
    "TerminationNotice": frozenset(),
    "UserInitiated": frozenset(),
    "ServiceSchedulerInitiated": frozenset({Signal.ELB_HEALTH, Signal.CONTAINER_HEALTH}),
}

#: Stopped reasons of replaced tasks (for events that carry no stop code).
REPLACED_REASONS = re.compile(
    r"^(?:Scaling activity initiated by|Your Spot Task was interrupted|Task stopped by user)",
    re.IGNORECASE,
)

#: Service Action events and the signal they raise.
SERVICE_ACTION_SIGNALS: dict[str, Signal] = {
    "SERVICE_TASK_PLACEMENT_FAILURE": Signal.PLACEMENT,
    "DAEMON_TASK_CREATION_FAILED": Signal.PLACEMENT,
    "SERVICE_TASK_CONFIGURATION_FAILURE": Signal.CONFIGURATION_FAILURE,
    "SERVICE_TASK_START_IMPAIRED": Signal.START_IMPAIRED,
    "DAEMON_TASK_START_IMPAIRED": Signal.START_IMPAIRED,
}

#: Evidence of other signals that a cause carries beside its own: the ALB points
#: behind a health-check or alarm cause, ECS's start-impaired notices behind a stuck one.
SUPPORTING: dict[Signal, frozenset[Signal]] = {
    Signal.ELB_HEALTH: frozenset({Signal.TARGET_HEALTH}),
    Signal.CONTAINER_HEALTH: frozenset({Signal.TARGET_HEALTH}),
    Signal.ALARM: frozenset({Signal.TARGET_HEALTH}),
    Signal.STUCK: frozenset({Signal.START_IMPAIRED}),
}

#: ``RESOURCE:<name>`` of a placement failure, in words.
PLACEMENT_RESOURCES: dict[str, str] = {
    "CPU": "CPU",
    "MEMORY": "memory",
    "ENI": "elastic network interfaces (ENIs)",
    "PORTS": "free host ports",
    "PORTS_TCP": "free host ports",
    "PORTS_UDP": "free host ports",
    "GPU": "GPUs",
    "FARGATE": "Fargate capacity",
}
_RESOURCE = re.compile(r"RESOURCE:([A-Z_]+)")
_NO_INSTANCES = re.compile(r"no container instances?", re.IGNORECASE)
_TARGET_GROUP = re.compile(r"targetgroup/([^/\s)]+)")

#: Target-group metrics that show an unhealthy rollout, and what a point above zero says.
TARGET_HEALTH_METRICS: dict[str, str] = {
    "UnHealthyHostCount": "unhealthy targets",
    "HTTPCode_Target_5XX_Count": "target 5xx responses",
}

#: Hook events that fail a deployment.
FAILED_HOOK_EVENTS = frozenset({"HOOK_FAILED", "HOOK_TIMED_OUT"})

#: Most evidence items a cause carries, and most characters of one.
MAX_EVIDENCE = 10
MAX_DETAIL = 300
_QUOTE = 160


# ---------------------------------------------------------------- classification


@dataclass(slots=True)
class _Finding:
    """Facts that raised one signal (with one container and exit code, for tasks)."""

    signal: Signal
    container: str | None = None
    exit_code: int | None = None
    evidence: list[Evidence] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    count: int = 0
    from_tasks: bool = False  # counted in failed tasks (else in events)

    def first_at(self) -> float:
        stamps = [_instant(e.at) for e in self.evidence if e.at is not None]
        return min(stamps) if stamps else float("inf")


#: Findings by (signal, container, exit code, from tasks).
Findings = dict[tuple[Signal, str | None, int | None, bool], _Finding]


def _instant(at: datetime) -> float:
    """Seconds since the epoch, for ordering (0 for what the platform cannot convert)."""
    try:
        return at.timestamp()
    except (OverflowError, ValueError, OSError):
        return 0.0


def classify(facts: DeploymentFacts) -> Cause:
    """The cause of a failed or stuck deployment; never raises."""
    findings: Findings = {}
    failed = _task_findings(facts.tasks, findings)
    _service_action_findings(facts.service_actions, findings)
    _other_findings(facts, findings)
    if not findings:
        detail = f"; ECS said: {_quote(facts.reason)}" if facts.reason else ""
        return Cause(Category.UNKNOWN, "no evidence that ecswatch holds explains it" + detail)
    best = min(
        findings.values(), key=lambda f: (RANK[f.signal], -f.count, f.first_at(), f.container or "")
    )
    evidence = list(best.evidence)
    for key, finding in findings.items():
        if key[0] in SUPPORTING.get(best.signal, ()) and finding is not best:
            evidence += finding.evidence
    return Cause(
        category=CATEGORY[best.signal],
        summary=_clip(SUMMARIES[best.signal](best, failed), MAX_DETAIL),
        container=best.container,
        exit_code=best.exit_code,
        evidence=tuple(_oldest_first(evidence)[:MAX_EVIDENCE]),
    )


def _oldest_first(evidence: Iterable[Evidence]) -> list[Evidence]:
    return sorted(evidence, key=lambda e: (e.at is None, _instant(e.at) if e.at else 0.0, e.detail))


def task_signals(task: TaskFact) -> set[Signal]:
    """Every signal the words and codes of one stopped task raise (before the
    replaced-task rule)."""
    texts = [task.stopped_reason or ""] + [c.reason or "" for c in task.containers]
    signals = {rule.signal for rule in TEXT_RULES for text in texts if rule.pattern.search(text)}
    if task.stop_code == "EssentialContainerExited" or any(
        c.exit_code not in (None, 0) for c in task.containers
    ):
        signals.add(Signal.CONTAINER_EXIT)
    return signals


def is_replaced(task: TaskFact, signals: set[Signal] | None = None) -> bool:
    """A task that was only replaced, never a failure's cause."""
    found = task_signals(task) if signals is None else signals
    allowed = REPLACED_STOP_CODES.get(task.stop_code or "")
    if allowed is not None:
        return not (found & allowed)
    return bool(REPLACED_REASONS.search(task.stopped_reason or "")) and not (
        found - {Signal.CONTAINER_EXIT}
    )


def is_failed(task: TaskFact) -> bool:
    """A stopped task that counts as a failure of its deployment."""
    return _counts(task, task_signals(task))


def _counts(task: TaskFact, signals: set[Signal]) -> bool:
    """Not replaced, and a failure by its words or its stop code."""
    if is_replaced(task, signals):
        return False
    return bool(signals) or task.stop_code in FAILED_STOP_CODES


def _task_findings(tasks: Sequence[TaskFact], findings: Findings) -> int:
    """Add the failed tasks' findings (one per task: its best signal); their number."""
    failed = 0
    for task in tasks:
        signals = task_signals(task)
        if not _counts(task, signals):
            continue
        failed += 1
        signal = min(signals, key=RANK.__getitem__) if signals else Signal.TASK_FAILED
        container, exit_code, reason = _culprit(task, signal)
        finding = findings.setdefault(
            (signal, container, exit_code, True),
            _Finding(signal, container, exit_code, from_tasks=True),
        )
        finding.count += 1
        finding.reasons.append(reason)
        finding.evidence.append(Evidence(task.at, EvidenceKind.TASK_STOPPED, _task_detail(task)))
    return failed


def _culprit(task: TaskFact, signal: Signal) -> tuple[str | None, int | None, str]:
    """(container, exit code, reason) that explain ``signal`` in ``task``."""
    rules = [r for r in TEXT_RULES if r.signal is signal]
    for c in sorted(task.containers, key=lambda c: c.name or ""):
        if c.reason and any(r.pattern.search(c.reason) for r in rules):
            return c.name, c.exit_code, c.reason
    if signal is Signal.CONTAINER_EXIT:
        exited = [c for c in task.containers if c.exit_code not in (None, 0)]
        exited.sort(key=lambda c: c.name or "")
        if exited:
            return exited[0].name, exited[0].exit_code, task.stopped_reason or ""
    reason = task.stopped_reason or task.stop_code or ""
    if signal is Signal.OUT_OF_MEMORY:
        killed = [c for c in task.containers if c.exit_code == 137]
        killed.sort(key=lambda c: c.name or "")
        if killed:
            return killed[0].name, 137, reason
    return None, None, reason


def _task_detail(task: TaskFact) -> str:
    parts = [f"task {task.arn.rsplit('/', 1)[-1]} stopped"]
    if task.stop_code:
        parts[0] += f" ({task.stop_code})"
    if task.stopped_reason:
        parts[0] += f": {task.stopped_reason}"
    for c in task.containers:
        if c.exit_code is not None or c.reason:
            bit = f"container {c.name or '?'}"
            if c.exit_code is not None:
                bit += f" exit {c.exit_code}"
            if c.reason:
                bit += f" ({c.reason})"
            parts.append(bit)
    return _clip("; ".join(parts), MAX_DETAIL)


def _service_action_findings(
    actions: Sequence[ServiceActionFact],
    findings: Findings,
) -> None:
    for action in actions:
        signals = action_signals(action)
        if not signals:
            continue
        signal = min(signals, key=RANK.__getitem__)
        finding = findings.setdefault((signal, None, None, False), _Finding(signal))
        finding.count += 1
        finding.reasons.append(action.reason or "")
        detail = action.event_name + (f": {action.reason}" if action.reason else "")
        finding.evidence.append(
            Evidence(action.at, EvidenceKind.SERVICE_ACTION, _clip(detail, MAX_DETAIL))
        )


def action_signals(action: ServiceActionFact) -> set[Signal]:
    """The signals of a Service Action: its event's (:data:`SERVICE_ACTION_SIGNALS`), a
    ``RESOURCE:`` or "no container instances" reason (placement, as daemon actions word
    it under ``DAEMON_TASK_START_IMPAIRED``), and the task wordings of its reason."""
    reason = action.reason or ""
    signals = {rule.signal for rule in TEXT_RULES if rule.pattern.search(reason)}
    if action.event_name in SERVICE_ACTION_SIGNALS:
        signals.add(SERVICE_ACTION_SIGNALS[action.event_name])
    if _RESOURCE.search(reason) or _NO_INSTANCES.search(reason):
        signals.add(Signal.PLACEMENT)
    return signals


def _add(
    findings: Findings,
    signal: Signal,
    evidence: Evidence,
    reason: str,
) -> None:
    finding = findings.setdefault((signal, None, None, False), _Finding(signal))
    finding.count += 1
    finding.reasons.append(reason)
    finding.evidence.append(evidence)


def _other_findings(facts: DeploymentFacts, findings: Findings) -> None:
    for hook in facts.hooks:
        if hook.event_name not in FAILED_HOOK_EVENTS:
            continue
        verb = "timed out" if hook.event_name == "HOOK_TIMED_OUT" else "failed"
        what = f"{hook.hook_type.lower()} hook" if hook.hook_type else "lifecycle hook"
        stage = f" at {hook.lifecycle_stage}" if hook.lifecycle_stage else ""
        _add(
            findings,
            Signal.HOOK,
            Evidence(hook.at, EvidenceKind.HOOK, f"{hook.event_name}{stage}"),
            f"the {what} {verb}{stage}",
        )
    for alarm in facts.alarms:
        names = ", ".join(alarm.names)
        detail = f"alarm {names}" if names else "a CloudWatch alarm"
        if alarm.reason:
            detail += f": {alarm.reason}"
        _add(
            findings,
            Signal.ALARM,
            Evidence(alarm.at, EvidenceKind.ALARM, _clip(detail, MAX_DETAIL)),
            names,
        )
    _target_health_findings(facts.target_health, findings)
    for error in facts.codedeploy:
        text = ": ".join(p for p in (error.code, error.message) if p)
        if not text:
            continue
        _add(
            findings,
            Signal.CODEDEPLOY,
            Evidence(error.at, EvidenceKind.CODEDEPLOY, _clip(text, MAX_DETAIL)),
            text,
        )
    if facts.stuck:
        finding = findings.setdefault((Signal.STUCK, None, None, False), _Finding(Signal.STUCK))
        finding.count += 1


def _target_health_findings(
    points: Sequence[TargetHealthPoint],
    findings: Findings,
) -> None:
    # Per target group and metric: the worst point above zero is the evidence.
    worst: dict[tuple[str, str], TargetHealthPoint] = {}
    totals: dict[tuple[str, str], float] = {}
    for p in points:
        if p.name not in TARGET_HEALTH_METRICS or not p.value > 0:
            continue
        if p.name == "UnHealthyHostCount" and p.statistic not in ("Maximum", "Average"):
            continue
        key = (p.target_group, p.name)
        totals[key] = totals.get(key, 0.0) + p.value
        if key not in worst or p.value > worst[key].value:
            worst[key] = p
    for key in sorted(worst):
        p = worst[key]
        group = target_group_name(p.target_group)
        if p.name == "UnHealthyHostCount":
            said = f"{_number(p.value)} {TARGET_HEALTH_METRICS[p.name]}"
            reason = f"up to {said}"
        else:
            said = f"{_number(totals[key])} {TARGET_HEALTH_METRICS[p.name]}"
            reason = said
        detail = _clip(
            f"target group {group}: {p.name} {p.statistic} {_number(p.value)}", MAX_DETAIL
        )
        _add(
            findings,
            Signal.TARGET_HEALTH,
            Evidence(p.timestamp, EvidenceKind.TARGET_HEALTH, detail),
            f"{group}\x00{reason}",
        )


def target_group_name(dimension: str) -> str:
    """``web-blue`` of ``targetgroup/web-blue/0123…`` (or of a target group ARN)."""
    resource = dimension.rpartition(":")[2]
    parts = resource.split("/")
    return parts[1] if len(parts) >= 2 and parts[0] == "targetgroup" else dimension


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quote(text: str | None) -> str:
    return _clip(text or "", _QUOTE)


# ---------------------------------------------------------------- summaries


def _of(finding: _Finding, failed: int) -> str:
    if not finding.from_tasks:
        return f"(ECS events: {finding.count})"
    return f"in {finding.count} of {failed} failed task{'s' if failed != 1 else ''}"


def _first(finding: _Finding) -> str:
    return _quote(next((r for r in finding.reasons if r), ""))


def _image_pull(f: _Finding, failed: int) -> str:
    who = f"container {f.container}" if f.container else "a container"
    return f"the image of {who} could not be pulled {_of(f, failed)}: {_first(f)}"


def _secrets(f: _Finding, failed: int) -> str:
    return f"tasks could not be set up {_of(f, failed)}: {_first(f)}"


def _configuration(f: _Finding, failed: int) -> str:
    return f"ECS could not start tasks of the service (configuration failure): {_first(f)}"


def _oom(f: _Finding, failed: int) -> str:
    code = f"exit {f.exit_code}, " if f.exit_code is not None else ""
    who = f"container {f.container}" if f.container else "a container"
    return f"{who} was killed for memory ({code}OutOfMemoryError) {_of(f, failed)}"


def _start_timeout(f: _Finding, failed: int) -> str:
    return f"containers did not start in time {_of(f, failed)}: {_first(f)}"


def _elb_health(f: _Finding, failed: int) -> str:
    match = next(filter(None, (_TARGET_GROUP.search(r) for r in f.reasons)), None)
    where = f" of target group {match.group(1)}" if match else ""
    return f"tasks failed the load balancer's health checks{where} {_of(f, failed)}"


def _container_health(f: _Finding, failed: int) -> str:
    return f"tasks failed their container health checks {_of(f, failed)}"


def _container_exit(f: _Finding, failed: int) -> str:
    who = f"container {f.container}" if f.container else "an essential container"
    code = f" with code {f.exit_code}" if f.exit_code is not None else ""
    return f"{who} exited{code} {_of(f, failed)}"


def _hook(f: _Finding, failed: int) -> str:
    return _first(f) or "a lifecycle hook failed"


def _placement(f: _Finding, failed: int) -> str:
    wants: list[str] = []
    for reason in f.reasons:
        for resource in _RESOURCE.findall(reason):
            word = PLACEMENT_RESOURCES.get(resource, resource.lower())
            if word not in wants:
                wants.append(word)
        if _NO_INSTANCES.search(reason) and "container instances" not in wants:
            wants.append("container instances")
    need = f": not enough {', '.join(wants)}" if wants else ""
    times = f" ({f.count} placement failures)" if f.count > 1 else ""
    return f"ECS could not place the tasks{need}{times}"


def _alarm(f: _Finding, failed: int) -> str:
    names = sorted({n for r in f.reasons for n in r.split(", ") if n})
    which = f"CloudWatch alarm {', '.join(names)}" if names else "a CloudWatch alarm"
    return f"{which} went into ALARM during the rollout"


def _target_health(f: _Finding, failed: int) -> str:
    said: dict[str, list[str]] = {}
    for reason in f.reasons:
        group, _, what = reason.partition("\x00")
        said.setdefault(group, []).append(what)
    parts = [f"target group {g} had {' and '.join(w)}" for g, w in sorted(said.items())]
    return "; ".join(parts) + " during the rollout"


def _codedeploy(f: _Finding, failed: int) -> str:
    return f"CodeDeploy failed the deployment: {_first(f)}"


def _task_failed(f: _Finding, failed: int) -> str:
    return f"tasks stopped {_of(f, failed)}: {_first(f) or 'no reason given'}"


def _stuck(f: _Finding, failed: int) -> str:
    return "no task of the deployment is running: it made no progress"


def _impaired(f: _Finding, failed: int) -> str:
    return "ECS reports that tasks of the service keep failing to start (START_IMPAIRED)"


SUMMARIES: dict[Signal, Callable[[_Finding, int], str]] = {
    Signal.IMAGE_PULL: _image_pull,
    Signal.SECRETS_OR_CONFIG: _secrets,
    Signal.CONFIGURATION_FAILURE: _configuration,
    Signal.OUT_OF_MEMORY: _oom,
    Signal.START_TIMEOUT: _start_timeout,
    Signal.ELB_HEALTH: _elb_health,
    Signal.CONTAINER_HEALTH: _container_health,
    Signal.CONTAINER_EXIT: _container_exit,
    Signal.HOOK: _hook,
    Signal.PLACEMENT: _placement,
    Signal.ALARM: _alarm,
    Signal.TARGET_HEALTH: _target_health,
    Signal.CODEDEPLOY: _codedeploy,
    Signal.TASK_FAILED: _task_failed,
    Signal.STUCK: _stuck,
    Signal.START_IMPAIRED: _impaired,
}
