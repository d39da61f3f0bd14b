"""``ecswatch run`` starts the poller role by default: a real process, moto, PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx

from service.demo.aws import MotoServer
from tests.rig.fixtures import REGION, SqsQueue
from tests.rig.readiness import wait_ready
from tests.test_cli import ECSWATCH, _env, _free_port


def test_run_starts_the_poller_by_default_without_a_warning(
    database_url: str, moto_server: MotoServer, sqs_queue: SqsQueue
) -> None:
    port = _free_port()
    env = _env(
        ECSWATCH_DATABASE_URL=database_url,
        ECSWATCH_QUEUE_URL=sqs_queue.queue_url,
        AWS_ENDPOINT_URL=moto_server.endpoint_url,
        AWS_REGION=REGION,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        ECSWATCH_METRICS_INTERVAL_S="1",
    )
    proc = subprocess.Popen(
        [*ECSWATCH, "run", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 40  # for readiness and the first metrics round
        ready = wait_ready(proc, port, within_s=40)
        assert ready is not None
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["roles"]["poller"] == "running"
        # The leader's first metrics round lands in /metrics.
        while time.monotonic() < deadline:
            body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            if "ecswatch_poller_leader 1.0" in body and "ecswatch_last_metrics_poll" in body:
                break
            time.sleep(0.2)
        assert "ecswatch_poller_leader 1.0" in body
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0
        out = stdout + stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    # No warning but those about what this test leaves unset (API tokens, Datadog keys,
    # the secret key).
    expected = {"api_unauthenticated", "datadog_forwarding_off", "secret_key_derived"}
    warnings = [r["event"] for r in records if r.get("level") == "warning"]
    warnings = [w for w in warnings if w not in expected]
    assert warnings == []
    [started] = [
        json.loads(line)
        for line in out.splitlines()
        if line.startswith("{") and '"poller_started"' in line
    ]
    assert started["jobs"] == [
        "accounts",
        "codedeploy_groups",
        "reconcile",
        "metrics",
        "retention",
        "codedeploy_deployments",
        "service_deployments",
        "heartbeat",
    ]
