"""Running contact imports: claim a job (queued, or running with an expired lease), read its stored file
and commit it chunk by chunk — contacts, error-file lines, counters and the lease in one transaction.

Claiming is a conditional UPDATE, so two workers never run the same job; a worker that lost its lease
(it stalled past it and another took over) finds `rows_done` or `lease_holder` changed at its next commit
and stops with nothing written. A resumed job re-reads the file from the top and skips the rows already
committed, after checking them again, so duplicates across the resume point are still reported as such.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from itertools import islice
from typing import IO, Any

from sqlalchemy import and_, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import aliased

from hongyan.campaigns.contacts import upsert_contacts
from hongyan.campaigns.import_files import ERRORS, SOURCE, Chunk, ChunkReader, materialize
from hongyan.campaigns.import_mapping import ImportOptions, options_from_json
from hongyan.campaigns.imports import UPLOAD_TTL
from hongyan.campaigns.models import Contact, ImportJob, UploadChunk
from hongyan.campaigns.rows import problems_csv
from hongyan.campaigns.tabular import TableFormat
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.core.crypto import blind_index
from hongyan.core.errors import HongyanError
from hongyan.db.engine import Database

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)  # renewed at every chunk; a chunk takes well under a second
UNIQUE_RETRIES = 3  # a contact added by hand meanwhile makes the chunk's insert collide: read again, retry


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# -- claiming -------------------------------------------------------------------------------------
def _claimable(now: Any) -> Any:
    return or_(
        ImportJob.status == "queued", and_(ImportJob.status == "running", ImportJob.lease_until <= now)
    )


async def claim(db: Database, holder: str) -> str | None:
    """Take one job for `holder`: the oldest queued one, or a running one whose worker is gone. One job per
    account at a time (its chunks upsert the same address book)."""
    now = utcnow()
    async with db.read() as session:
        candidates = (
            await session.execute(
                select(ImportJob.id, ImportJob.account_id)
                .where(_claimable(now))
                .order_by(ImportJob.created_at)
                .limit(10)
            )
        ).all()
    other = aliased(ImportJob)
    account_busy = (
        select(other.id)
        .where(
            other.account_id == ImportJob.account_id,
            other.id != ImportJob.id,
            other.status == "running",
            other.lease_until > now,
        )
        .exists()
    )
    for job_id, account_id in candidates:
        async with db.write() as session:
            if db.dialect == "postgresql":  # claims of one account in turn, so the busy check sees the other
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"import:{account_id}"}
                )
            result = await session.execute(
                update(ImportJob)
                .where(ImportJob.id == job_id, _claimable(now), ~account_busy)
                .values(status="running", lease_holder=holder, lease_until=now + LEASE, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                job = await session.get(ImportJob, job_id)
                if job is not None and job.started_at is None:
                    job.started_at = now
                return job_id
    return None


# -- one chunk, one transaction -------------------------------------------------------------------
async def _after_upsert(
    session: Any, job: ImportJob, chunk: Chunk, opts: ImportOptions, existing: set[str]
) -> None:
    """Time-zone overrides and the consent source: on contacts this import may change (not those left
    alone because update_existing is off)."""
    if not chunk.zones and not opts.consent_source:
        return  # most files: nothing to set, and no blind index to compute again per row
    now = utcnow()
    by_zone: dict[str, list[str]] = {}
    changed: list[str] = []
    for d in chunk.drafts:
        bidx = blind_index(d.phone)
        if bidx in existing:
            continue
        changed.append(bidx)
        if d.row in chunk.zones:
            by_zone.setdefault(chunk.zones[d.row], []).append(bidx)
    for zone, bidxs in by_zone.items():
        await session.execute(
            update(Contact)
            .where(Contact.account_id == job.account_id, Contact.phone_bidx.in_(bidxs))
            .values(time_zone=zone)
            .execution_options(synchronize_session=False)
        )
    if opts.consent_source and changed:
        await session.execute(
            update(Contact)
            .where(
                Contact.account_id == job.account_id,
                Contact.phone_bidx.in_(changed),
                Contact.consent_source.is_(None),
            )
            .values(consent_source=opts.consent_source, consent_at=now)
            .execution_options(synchronize_session=False)
        )


async def _commit_chunk(db: Database, job_id: str, holder: str, expected_done: int, chunk: Chunk) -> str:
    """'ok', 'canceled', 'completed', 'failed' or 'lost' (another worker has the job now: nothing written)."""
    async with db.write() as session:
        job = await session.get(ImportJob, job_id, with_for_update=True, populate_existing=True)
        if (
            job is None
            or job.status != "running"
            or job.lease_holder != holder
            or job.rows_done != expected_done
        ):
            return "lost"
        now = utcnow()
        if job.cancel_requested:
            await _finish(session, job, "canceled")
            return "canceled"
        opts = options_from_json(job.options, default_region=job.options.get("default_region", "CN"))
        existing: set[str] = set()
        if chunk.drafts and not opts.update_existing and (chunk.zones or opts.consent_source):
            existing = set(
                await session.scalars(
                    select(Contact.phone_bidx).where(
                        Contact.account_id == job.account_id,
                        Contact.phone_bidx.in_([blind_index(d.phone) for d in chunk.drafts]),
                    )
                )
            )
        if chunk.drafts:
            counts = await upsert_contacts(
                session,
                account_id=job.account_id,
                drafts=chunk.drafts,
                existing="update" if opts.update_existing else "skip",
                group_id=job.group_id,
            )
            await _after_upsert(session, job, chunk, opts, existing)
            job.created_count += counts.created
            job.updated_count += counts.updated
            job.skipped_count += counts.skipped
        if chunk.problems:
            duplicates = sum(p.code == "duplicate_phone_number" for p in chunk.problems)
            job.skipped_count += duplicates  # the file's own repeats: the first row was kept
            job.failed_count += len(chunk.problems) - duplicates
            seq = await session.scalar(
                select(func.coalesce(func.max(UploadChunk.seq) + 1, 0)).where(
                    UploadChunk.owner_id == job.id, UploadChunk.kind == ERRORS
                )
            )
            lines = b"".join(islice(problems_csv(chunk.problems), 1, None))  # without the header line
            await session.execute(
                insert(UploadChunk), [{"owner_id": job.id, "kind": ERRORS, "seq": seq, "data": lines}]
            )
        job.rows_done += chunk.rows
        job.bytes_done = max(job.bytes_done, chunk.bytes_read)
        job.lease_until, job.updated_at = now + LEASE, now
        if chunk.fatal is not None:
            await _finish(session, job, "failed", chunk.fatal)
            return "failed"
        if chunk.done:
            job.rows_total = job.rows_done
            job.bytes_done = job.size_bytes
            await _finish(session, job, "completed")
            return "completed"
    return "ok"


async def _finish(session: Any, job: ImportJob, status: str, error: dict[str, Any] | None = None) -> None:
    """A final status; the stored source file goes (it holds numbers and is no longer needed)."""
    now = utcnow()
    job.status, job.error, job.finished_at, job.updated_at = status, error, now, now
    job.lease_holder, job.lease_until = None, None
    await session.execute(
        delete(UploadChunk).where(UploadChunk.owner_id == job.id, UploadChunk.kind == SOURCE)
    )


async def _fail(db: Database, job_id: str, holder: str, error: dict[str, Any]) -> None:
    async with db.write() as session:
        job = await session.get(ImportJob, job_id, with_for_update=True, populate_existing=True)
        if job is not None and job.status == "running" and job.lease_holder == holder:
            await _finish(session, job, "failed", error)


async def _release(db: Database, job_id: str, holder: str) -> None:
    """Give the lease back (stopping, or a chunk budget used up) so the next round resumes at once."""
    async with db.write() as session:
        await session.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id, ImportJob.lease_holder == holder, ImportJob.status == "running")
            .values(lease_until=utcnow())
            .execution_options(synchronize_session=False)
        )


# -- the worker -----------------------------------------------------------------------------------
async def work_once(
    db: Database,
    settings: Settings,
    *,
    holder: str | None = None,
    max_chunks: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> bool:
    """Claim one job and run it to its end (or `max_chunks` chunks of `import_chunk_rows`, or until
    `should_stop()`); False when there was nothing to claim."""
    holder = holder or default_holder()
    job_id = await claim(db, holder)
    if job_id is None:
        return False
    async with db.read() as session:
        job = await session.get(ImportJob, job_id)
    assert job is not None
    if job.cancel_requested:
        async with db.write() as session:
            locked = await session.get(ImportJob, job_id, with_for_update=True, populate_existing=True)
            if locked is not None and locked.lease_holder == holder:
                await _finish(session, locked, "canceled")
        return True
    spool = await materialize(db, job_id)
    try:
        await _run(db, settings, job, holder, spool, max_chunks, should_stop)
    finally:
        spool.close()
    return True


async def _run(
    db: Database,
    settings: Settings,
    job: ImportJob,
    holder: str,
    spool: IO[bytes],
    max_chunks: int | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    region = (job.options or {}).get("default_region") or settings.default_region
    reader = ChunkReader(spool, TableFormat(job.format, job.encoding, job.delimiter), job, region)
    try:
        await _run_chunks(db, settings, job, holder, reader, max_chunks, should_stop)
    finally:
        reader.close()


async def _run_chunks(
    db: Database,
    settings: Settings,
    job: ImportJob,
    holder: str,
    reader: ChunkReader,
    max_chunks: int | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    done, chunks = job.rows_done, 0
    while True:
        if (max_chunks is not None and chunks >= max_chunks) or (should_stop is not None and should_stop()):
            await _release(db, job.id, holder)
            return
        try:
            chunk = await asyncio.to_thread(reader.next_chunk, settings.import_chunk_rows)
        except Exception:  # a reader bug must not make the job come back forever
            log.exception("contact import %s: the file could not be read on", job.id)
            await _fail(
                db,
                job.id,
                holder,
                {
                    "code": "file_unreadable",
                    "row": reader.last_row + 1,
                    "message": "The file could not be read past this row.",
                },
            )
            return
        for attempt in range(UNIQUE_RETRIES):
            try:
                outcome = await _commit_chunk(db, job.id, holder, done, chunk)
                break
            except IntegrityError:
                if attempt == UNIQUE_RETRIES - 1:
                    raise
            except HongyanError as exc:  # e.g. the target group was deleted meanwhile
                await _fail(db, job.id, holder, {"code": exc.code, "message": exc.message, "row": None})
                return
        if outcome != "ok":
            return
        done += chunk.rows
        chunks += 1


async def expire_uploads(db: Database) -> int:
    """Uploads never started within UPLOAD_TTL are canceled and their stored file deleted."""
    cutoff = utcnow() - UPLOAD_TTL
    async with db.read() as session:  # most rounds find none: no write transaction for them
        stale = list(
            await session.scalars(
                select(ImportJob.id)
                .where(ImportJob.status == "uploaded", ImportJob.created_at < cutoff)
                .limit(100)
            )
        )
    if not stale:
        return 0
    async with db.write() as session:
        jobs = await session.scalars(
            select(ImportJob).where(ImportJob.id.in_(stale), ImportJob.status == "uploaded").with_for_update()
        )
        for job in jobs:
            await _finish(
                session,
                job,
                "canceled",
                {"code": "upload_expired", "message": "Not started within 24 hours."},
            )
    return len(stale)


async def run_pending(
    db: Database, settings: Settings, *, should_stop: Callable[[], bool] | None = None
) -> int:
    """The runtime's periodic round: old uploads expired, then jobs run one after another until none is left
    (or the process stops; a stopped job's lease is given back and the next round resumes it)."""
    await expire_uploads(db)
    ran = 0
    try:
        while not (should_stop and should_stop()) and await work_once(db, settings, should_stop=should_stop):
            ran += 1
    except DBAPIError:
        log.exception("contact import round stopped on a database error; the job resumes when its lease ends")
    return ran
