"""ledger_deferred: ledger entries posted at COMMIT by a deferred constraint trigger (PostgreSQL)

A transaction writes its hold or settlement as a row of ledger_deferred (no lock taken); the trigger posts
it when the transaction commits — rows locked in id order, every floor checked (SQLSTATE HY402 when one
would be crossed: the COMMIT fails and nothing of the transaction stays), balances moved, journal entry and
lines written — and deletes the row. See hongyan.billing.ledger.post_at_commit. On SQLite the table exists
(the models are the same on both) but is never written: writers are serialized there anyway.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 07:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hongyan.db.base

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

POST_FUNCTION = """
CREATE OR REPLACE FUNCTION hongyan_ledger_deferred() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    -- The rows of every entry this transaction defers (only its own ledger_deferred rows are visible to it:
    -- others' are uncommitted, and none outlives its commit): created on first use, as ledger.ensure_account
    -- makes them (floor 0 for ledger.FLOORED_KINDS), then locked in id order, the order ledger.post and every
    -- other posting use — all at the first entry, so two entries of one transaction cannot lock out of order.
    INSERT INTO ledger_account (id, account_id, kind, currency, balance, min_balance, created_at, updated_at)
    SELECT DISTINCT p.key, m[1], m[2], m[3], 0, CASE WHEN m[2] IN ('cash', 'held', 'package') THEN 0 END,
           NEW.created_at, NEW.created_at
    FROM ledger_deferred d, jsonb_each_text(d.postings) p, regexp_match(p.key, '^(.*):([^:]+):([^:]+)$') m
    ON CONFLICT (id) DO NOTHING;
    PERFORM 1 FROM ledger_account
    WHERE id IN (SELECT p.key FROM ledger_deferred d, jsonb_each_text(d.postings) p)
    ORDER BY id FOR UPDATE;
    SELECT la.id, la.balance, la.min_balance, p.value::bigint AS amount INTO bad
    FROM ledger_account la JOIN jsonb_each_text(NEW.postings) p ON p.key = la.id
    WHERE la.min_balance IS NOT NULL AND la.balance + p.value::bigint < la.min_balance
    ORDER BY la.id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insufficient funds on %', bad.id USING ERRCODE = 'HY402',
            DETAIL = json_build_object('ledger_account_id', bad.id, 'available', bad.balance - bad.min_balance,
                                       'needed', -bad.amount)::text;
    END IF;
    WITH m AS (
        UPDATE ledger_account la SET balance = la.balance + p.value::bigint, updated_at = NEW.created_at
        FROM jsonb_each_text(NEW.postings) p
        WHERE la.id = p.key
        RETURNING la.id, la.balance, la.currency, p.value::bigint AS amount
    ), e AS (
        INSERT INTO journal_entry (id, account_id, kind, reference, note, actor, actor_ip, idempotency_key, detail,
                                   created_at)
        VALUES (NEW.entry_id, NEW.account_id, NEW.kind, NEW.reference, NULL, NEW.actor, NULL, NULL, NEW.detail,
                NEW.created_at)
        RETURNING id
    )
    INSERT INTO journal_line (entry_id, ledger_account_id, currency, amount, balance_after, created_at)
    SELECT e.id, m.id, m.currency, m.amount, m.balance, NEW.created_at FROM m, e ORDER BY m.id;
    DELETE FROM ledger_deferred WHERE id = NEW.id;
    RETURN NULL;
END
$$;
"""


def upgrade() -> None:
    op.create_table(
        "ledger_deferred",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("entry_id", sa.String(length=30), nullable=False),
        sa.Column("account_id", sa.String(length=30), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("postings", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
        sa.Column("created_at", hongyan.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_deferred")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POST_FUNCTION)
        op.execute(
            "CREATE CONSTRAINT TRIGGER ledger_deferred_post AFTER INSERT ON ledger_deferred "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hongyan_ledger_deferred()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_deferred_post ON ledger_deferred")
        op.execute("DROP FUNCTION IF EXISTS hongyan_ledger_deferred()")
    op.drop_table("ledger_deferred")
