"""Test helpers for the review queues (importable as `review_support`; tests/ is on pythonpath): held
messages stored the way the submit path stores them, and a platform account with an operator key."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from sqlalchemy import insert

from hongyan.billing import charging
from hongyan.compliance import holds
from hongyan.compliance.models import FilterRule
from hongyan.core import ids
from hongyan.core.clock import utcnow
from hongyan.db.engine import Database
from hongyan.messaging.encoding import segment
from hongyan.messaging.models import Batch, Message
from hongyan.messaging.states import Status
from hongyan.messaging.submit import message_row
from support import AccountFixture, make_account

PRICE = 40_000  # settings.default_price_micros: ¥0.04 per segment
TEXT = "恭喜您中奖了，点击领取大奖 http://x.example"


async def hold_messages(db: Database, account_id: str, numbers: list[str], *, text: str = TEXT) -> list[str]:
    """Store held messages with their funds on hold, as the submit path does for a `review` rule match
    (notifications: marketing would wait for the end of quiet hours once approved)."""
    now = utcnow()
    batch_id = ids.new_id("bat")
    seg = segment(text)
    rows = [
        message_row(
            ids.new_id("msg"),
            account_id=account_id,
            batch_id=batch_id,
            message_type="notification",
            to=n,
            country="CN",
            sender=None,
            text=text,
            seg=seg,
            price_micros=PRICE * seg.segment_count,
            currency="CNY",
            status=Status.HELD,
            scheduled_at=None,
            expires_at=now + timedelta(days=2),
            now=now,
        )
        for n in numbers
    ]
    async with db.write() as session:
        if await session.get(FilterRule, "flt_review_prize") is None:
            session.add(
                FilterRule(
                    id="flt_review_prize",
                    account_id=None,
                    kind="keyword",
                    pattern="大奖",
                    action="review",
                    category="fraud",
                    created_at=now,
                )
            )
        await charging.hold_batch(session, rows, account_id=account_id, currency="CNY", batch_id=batch_id)
        session.add(
            Batch(
                id=batch_id,
                account_id=account_id,
                source="api",
                campaign_id=None,
                message_type="notification",
                sender=None,
                body_template=text,
                recipients_total=len(rows),
                accepted_count=len(rows),
                rejected_count=0,
                segments_total=len(rows) * seg.segment_count,
                price_micros_total=sum(r["price_micros"] for r in rows),
                currency="CNY",
                rejected=[],
                client_ref=None,
                scheduled_at=None,
                created_at=now,
            )
        )
        await session.flush()
        await (await session.connection()).execute(insert(Message.__table__), rows)
        verdict = SimpleNamespace(rule_id="flt_review_prize", pattern="大奖")
        await holds.record_holds(session, rows, {r["id"]: verdict for r in rows}, now=now)
    return [r["id"] for r in rows]


async def make_operator(db: Database) -> AccountFixture:
    """A platform account with an API key of scope `operator`."""
    from hongyan.accounts import keys

    platform = await make_account(db, name="Platform")
    async with db.write() as session:
        created = await keys.create_api_key(
            session, account_id=platform.account_id, name="reviews", scopes=("operator",), allow_operator=True
        )
    return AccountFixture(platform.account_id, created.token, created.key.id)
