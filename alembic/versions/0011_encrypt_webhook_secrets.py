"""Webhook URLs and secrets encrypted at rest; a second secret for rotation.

``webhook_subscriptions`` is the one table that keeps a webhook URL (a Slack URL
carries its token) or a signing secret: ``outbox`` rows name the subscription by
id and ``webhook_deliveries`` keeps only the status or error of each attempt.
The upgrade encrypts ``url`` and ``secret`` of every row with the newest key of
``ECSWATCH_SECRET_KEY`` (without one, the data directory's derived key:
:mod:`service.cipher`), leaving values that are already tokens of a configured key
as they are, and adds ``previous_secret`` and ``previous_secret_expires_at`` for
``POST /v1/webhooks/{id}/rotate-secret``.

The downgrade decrypts ``url`` and ``secret`` back to plain text (it needs a key
that opens them; a value that is no token at all is left as it is) and drops the
two columns: a secret still in its rotation overlap is lost (deliveries are then
signed with the new secret only). Nothing else is lost.

Not expand/contract: the previous release's dispatcher cannot use the encrypted
URLs; roll back past this revision with ``ecswatch db downgrade 0010`` first
(docs/deploy.md, "The schema rule").

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from service.cipher import SecretCipher, SecretDecryptError, cipher_for, looks_encrypted
from service.config import load_settings

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROWS = sa.text("SELECT id, url, secret FROM webhook_subscriptions ORDER BY id FOR UPDATE")
_WRITE = sa.text("UPDATE webhook_subscriptions SET url = :url, secret = :secret WHERE id = :id")


def _cipher() -> SecretCipher:
    """The key of the process that migrates, from its settings (the environment)."""
    return cipher_for(load_settings())


def _encrypted(cipher: SecretCipher, value: str) -> str:
    try:
        cipher.decrypt(value)
    except SecretDecryptError:
        return cipher.encrypt(value)
    return value  # already a token of a configured key


def upgrade() -> None:
    op.add_column("webhook_subscriptions", sa.Column("previous_secret", sa.Text(), nullable=True))
    op.add_column(
        "webhook_subscriptions",
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    bind = op.get_bind()
    rows = bind.execute(_ROWS).all()
    if not rows:
        return
    cipher = _cipher()
    for row in rows:
        bind.execute(
            _WRITE,
            {
                "id": row.id,
                "url": _encrypted(cipher, row.url),
                "secret": _encrypted(cipher, row.secret),
            },
        )


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(_ROWS).all()
    if rows:
        cipher = _cipher()
        for row in rows:
            try:
                url, secret = (
                    cipher.decrypt(v) if looks_encrypted(v) else v for v in (row.url, row.secret)
                )
            except SecretDecryptError:
                raise SystemExit(
                    f"cannot decrypt webhook {row.id}: set ECSWATCH_SECRET_KEY to the keys "
                    "that encrypted it before downgrading"
                ) from None
            bind.execute(_WRITE, {"id": row.id, "url": url, "secret": secret})
    op.drop_column("webhook_subscriptions", "previous_secret_expires_at")
    op.drop_column("webhook_subscriptions", "previous_secret")
