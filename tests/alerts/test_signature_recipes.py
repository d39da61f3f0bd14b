"""The verification recipes of docs/alerts.md, run as written against a real signature."""

from __future__ import annotations

import base64
import re
import secrets
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.alerts.webhooks import encode_body, sign_headers

DOC = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text()
BODY = encode_body({"type": "deployment.failed", "summary": 'Déploiement échoué: "x" & <y>'})


def _signed() -> tuple[str, dict[str, str]]:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    headers = sign_headers(secret, "msg_0123456789abcdef", datetime.now(UTC), BODY)
    return secret, headers


def _openssl_recipe() -> str:
    block = DOC.split("<!-- openssl-recipe:start -->")[1].split("<!-- openssl-recipe:end -->")[0]
    match = re.search(r"```sh\n(.*?)```", block, re.S)
    assert match is not None
    return match.group(1)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize("tamper", [False, True])
def test_openssl_recipe(tmp_path: Path, tamper: bool) -> None:
    secret, headers = _signed()
    body = BODY.encode() + (b" " if tamper else b"")
    (tmp_path / "body.json").write_bytes(body)
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "SECRET": secret,
        "WEBHOOK_ID": headers["webhook-id"],
        "WEBHOOK_TIMESTAMP": headers["webhook-timestamp"],
        "WEBHOOK_SIGNATURE": headers["webhook-signature"],
    }
    done = subprocess.run(
        ["sh", "-c", _openssl_recipe()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if tamper:
        assert (done.returncode, done.stdout.strip()) == (1, "signature INVALID")
    else:
        assert (done.returncode, done.stdout.strip()) == (0, "signature valid"), done.stderr


def test_python_stdlib_recipe() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC, re.S)
    [recipe] = [b for b in blocks if "def verify(" in b]
    namespace: dict[str, Any] = {}
    exec(recipe, namespace)
    secret, headers = _signed()
    assert namespace["verify"](secret, headers, BODY.encode()) is True
    assert namespace["verify"](secret, headers, BODY.encode() + b" ") is False
