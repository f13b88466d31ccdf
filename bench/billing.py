"""Benchmark: funds holds and settlements per second on SQLite and PostgreSQL. Prints one JSON object.

  .venv/bin/python bench/billing.py [--batches 200] [--batch-size 1000] [--chunk 500] [--backends sqlite,postgresql]

hold:   `charging.hold_batch` for a batch of `--batch-size` messages (allocation + one journal entry), one
        write transaction each — what the submit path adds per request.
settle: `charging.settle_final` for `--chunk` final messages (one settle entry per account per chunk) —
        what a transition batch adds when messages reach their final status.
The ingest floor (10,000 msg/s) needs hold messages/s and settle messages/s well above it; the
end-to-end effect is measured by bench/ingest.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import make_db  # noqa: E402

from hongyan.accounts.service import create_account  # noqa: E402
from hongyan.billing import charging  # noqa: E402
from hongyan.billing.recharge import top_up  # noqa: E402
from hongyan.core.clock import utcnow  # noqa: E402
from hongyan.db.engine import Database  # noqa: E402
from hongyan.db.migrate import upgrade  # noqa: E402

PRICE = 40_000


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"msg_{i}", "to_country": "CN", "message_type": "notification", "segment_count": 1,
             "price_micros": PRICE, "currency": "CNY"} for i in range(n)]


async def run(url: str, batches: int, size: int, chunk: int) -> dict[str, Any]:
    db = Database(url, pool_size=4)
    try:
        async with db.write() as session:
            account_id = (await create_account(session, name="bench")).id
            await top_up(session, account_id=account_id, amount_micros=batches * size * PRICE * 2, currency="CNY",
                         actor="bench", note="bench")
        held = [rows(size) for _ in range(batches)]  # built before the clock starts
        t0 = time.perf_counter()
        for b, batch in enumerate(held):
            async with db.write() as session:
                await charging.hold_batch(session, batch, account_id=account_id, currency="CNY", batch_id=f"bat_{b}")
        hold_s = time.perf_counter() - t0
        final = [dict(r, account_id=account_id, status="delivered", billing_state=charging.SETTLED)
                 for batch in held for r in batch]
        t0 = time.perf_counter()
        for i in range(0, len(final), chunk):
            async with db.write() as session:
                await charging.settle_final(session, final[i : i + chunk], at=utcnow())
        settle_s = time.perf_counter() - t0
        total = batches * size
        return {
            "hold": {"batches": batches, "batch_size": size, "seconds": round(hold_s, 3),
                     "holds_per_s": round(batches / hold_s), "messages_per_s": round(total / hold_s)},
            "settle": {"messages": total, "chunk": chunk, "seconds": round(settle_s, 3),
                       "settles_per_s": round(total / chunk / settle_s), "messages_per_s": round(total / settle_s)},
        }
    finally:
        await db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    out: dict[str, Any] = {"benchmark": "billing", "python": platform.python_version(), "results": {}}
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            url, drop = make_db(backend, Path(tmp))
            try:
                upgrade(url)
                out["results"][backend] = asyncio.run(run(url, args.batches, args.batch_size, args.chunk))
            finally:
                if drop:
                    drop()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
