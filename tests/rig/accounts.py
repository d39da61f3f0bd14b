"""An account of moto's: the credentials ``sts:AssumeRole`` into it answers.

moto gives each account its own resources (separately per region) when called
with credentials from an ``AssumeRole`` into a role of that account; the role
need not exist. The tests and bench/org_scale.py build their scopes with these.
"""

from __future__ import annotations

from typing import Any

from aiobotocore.session import get_session


async def assumed(endpoint: str, account: str, role: str) -> dict[str, str]:
    """Client keyword arguments signed as ``account`` (``role`` there, assumed)."""
    session: Any = get_session()
    async with session.create_client(
        "sts",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as sts:
        answer = await sts.assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName="fixture"
        )
    creds = answer["Credentials"]
    return {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }
