"""SMPP connector throughput against the SMSC simulator: submit_sm/s with receipts processed.

For each window (1, 10, 50, 100) and bind count (1, 4): start a fresh simulator (receipts at once), push N
single-part messages through `SmppConnector.submit`, and wait until every delivery receipt has come back and
been parsed and matched to its carrier id. Prints one JSON object.

    .venv/bin/python bench/smpp.py [--messages 20000] [--windows 1,10,50,100] [--binds 1,4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hongyan.channels.base import DeliveryReceipt, OutboundSms  # noqa: E402
from hongyan.channels.smpp.connector import SmppConnector  # noqa: E402
from smsc import SmscSim  # noqa: E402


async def run_case(window: int, binds: int, count: int) -> dict[str, object]:
    sim = SmscSim(DLR_DELAY_MS=0).start()
    received = 0
    done = asyncio.Event()

    async def on_receipts(receipts: list[DeliveryReceipt]) -> None:
        nonlocal received
        received += len(receipts)
        if received >= count:
            done.set()

    connector = SmppConnector("chn_bench", sim.channel_config(window=window, binds=binds, response_timeout_s=30.0))
    try:
        await connector.start(on_receipts)
        assert await connector.wait_up(10)
        messages = [OutboundSms(f"msg_{i:08d}", f"+86138{i:08d}", "10690", f"Your code is {i % 1000000:06d}",
                                "gsm7", 1, "verification", 0) for i in range(count)]
        start = time.perf_counter()
        # the runtime hands the connector chunks of 500 ids from several dispatchers; do the same
        chunks = [messages[i : i + 500] for i in range(0, count, 500)]
        sem = asyncio.Semaphore(4)

        async def push(chunk: list[OutboundSms]) -> int:
            async with sem:
                return sum(r.accepted for r in await connector.submit(chunk))

        accepted = sum(await asyncio.gather(*(push(c) for c in chunks)))
        submit_s = time.perf_counter() - start
        await asyncio.wait_for(done.wait(), timeout=120)
        total_s = time.perf_counter() - start
        return {"window": window, "binds": binds, "messages": count, "accepted": accepted, "receipts": received,
                "submit_per_s": round(count / submit_s), "with_receipts_per_s": round(count / total_s),
                "seconds": round(total_s, 2)}
    finally:
        await connector.stop()
        sim.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--windows", default="1,10,50,100")
    parser.add_argument("--binds", default="1,4")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    results = []
    for binds in [int(b) for b in args.binds.split(",")]:
        for window in [int(w) for w in args.windows.split(",")]:
            count = args.messages if window > 1 else min(args.messages, 3000)  # window 1 is latency-bound
            results.append(await run_case(window, binds, count))
    print(json.dumps({"benchmark": "smpp_connector", "loop": loop_name, "python": platform.python_version(),
                      "cpus": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
