"""Waiting for an ``ecswatch run`` subprocess to answer ``/readyz``."""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_ready(proc: subprocess.Popen[str], port: int, *, within_s: float) -> httpx.Response | None:
    """The first 200 of ``/readyz`` within ``within_s``, else the last answer (None when
    none came, or the process exited). A probe polls: the socket may accept a moment
    before every role reports."""
    deadline = time.monotonic() + within_s
    ready = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            if ready.status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return ready
