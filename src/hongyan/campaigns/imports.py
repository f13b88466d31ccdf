"""Contact-file import jobs: start one with a column mapping, cancel it, read its progress.

A job is `uploaded` (import_files.create_import) → `queued` (start_import: mapping checked, fields defined,
target group chosen) → `running` (import_worker claims it) → `completed`, `failed` or `canceled`. Contacts
of the chunks already committed stay when a job is canceled or fails; the counts say how many.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from hongyan.accounts.models import Account
from hongyan.accounts.permissions import Authority, require
from hongyan.audit.service import Actor, record
from hongyan.campaigns import contacts
from hongyan.campaigns.import_files import SOURCE
from hongyan.campaigns.import_mapping import mapping_from_json, options_from_json
from hongyan.campaigns.models import Campaign, ContactGroup, ImportJob, UploadChunk
from hongyan.campaigns.rows import FIELD_TYPES
from hongyan.config import Settings
from hongyan.core import ids
from hongyan.core.clock import isoformat, utcnow
from hongyan.core.errors import Conflict, HongyanError, InvalidRequest, NotFound
from hongyan.db.engine import Database

TERMINAL = ("completed", "failed", "canceled")
UPLOAD_TTL = timedelta(hours=24)  # an upload never started is discarded after this (it holds numbers)


# -- reading jobs ---------------------------------------------------------------------------------
async def get_import(db: Database, *, account_id: str, job_id: str) -> ImportJob:
    async with db.read() as session:
        job = await session.scalar(
            select(ImportJob).where(ImportJob.id == job_id, ImportJob.account_id == account_id)
        )
    if job is None:
        raise NotFound("import_not_found", "No such import.", field="import_id")
    return job


async def list_imports(
    db: Database, *, account_id: str, cursor: str | None = None, limit: int = 50
) -> tuple[list[ImportJob], str | None]:
    """Newest first (ids sort by creation time); `next_cursor` continues after the last one."""
    query = select(ImportJob).where(ImportJob.account_id == account_id)
    if cursor:
        query = query.where(ImportJob.id < cursor)
    async with db.read() as session:
        rows = list(await session.scalars(query.order_by(ImportJob.id.desc()).limit(limit + 1)))
    page = rows[:limit]
    return page, (page[-1].id if len(rows) > limit else None)


def progress(job: ImportJob) -> dict[str, Any]:
    """percent (rows over the known or estimated total; bytes read for CSV), rows/s since start, ETA."""
    if job.status == "completed":
        return {"percent": 100.0, "rows_per_s": _rate(job), "eta_s": 0}
    fraction: float | None = None
    if job.rows_total:
        fraction = job.rows_done / job.rows_total
    elif job.format == "csv" and job.size_bytes:
        fraction = job.bytes_done / job.size_bytes
    if fraction is not None:
        fraction = min(fraction, 0.999) if job.status == "running" else min(fraction, 1.0)
    rate = _rate(job)
    eta = None
    if job.status in ("queued", "running") and fraction and rate and job.rows_done:
        eta = round(job.rows_done / rate * (1 - fraction) / fraction)
    return {
        "percent": None if fraction is None else round(fraction * 100, 1),
        "rows_per_s": rate,
        "eta_s": eta,
    }


def _rate(job: ImportJob) -> float | None:
    if job.started_at is None or not job.rows_done:
        return None
    end = job.finished_at or utcnow()
    started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=end.tzinfo)
    seconds = max((end - started).total_seconds(), 0.001)
    return round(job.rows_done / seconds, 1)


def job_json(job: ImportJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "filename": job.filename,
        "format": job.format,
        "encoding": job.encoding,
        "delimiter": job.delimiter,
        "size_bytes": job.size_bytes,
        "header": job.header,
        "mapping": job.mapping,
        "options": job.options,
        "group_id": job.group_id,
        "campaign_id": job.campaign_id,
        "rows_total": job.rows_total,
        "rows_total_estimated": job.status != "completed" and job.rows_total is not None,
        "rows_done": job.rows_done,
        "counts": {
            "created": job.created_count,
            "updated": job.updated_count,
            "skipped": job.skipped_count,
            "failed": job.failed_count,
        },
        "progress": progress(job),
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "has_error_file": job.failed_count + job.skipped_count > 0,
        "created_at": isoformat(job.created_at),
        "started_at": isoformat(job.started_at),
        "finished_at": isoformat(job.finished_at),
    }


# -- start, cancel --------------------------------------------------------------------------------
async def _locked_job(session: AsyncSession, account_id: str, job_id: str) -> ImportJob:
    job = await session.scalar(
        select(ImportJob).where(ImportJob.id == job_id, ImportJob.account_id == account_id).with_for_update()
    )
    if job is None:
        raise NotFound("import_not_found", "No such import.", field="import_id")
    return job


async def _target_group(
    session: AsyncSession,
    authority: Authority,
    *,
    group_id: str | None,
    new_group_name: str | None,
    campaign_id: str | None,
) -> tuple[str | None, str | None]:
    """(group id, campaign id): an existing static group, a new one, or a campaign's audience group."""
    if sum(x is not None for x in (group_id, new_group_name, campaign_id)) > 1:
        raise InvalidRequest(
            "import_target_ambiguous", "Import into one group or one campaign's audience.", field="group_id"
        )
    if group_id:
        group = await contacts.get_group(session, account_id=authority.account_id, group_id=group_id)
        if group.kind != "static":
            raise InvalidRequest("group_is_filter", "Import into a static group.", field="group_id")
        return group.id, None
    if new_group_name is not None:
        try:
            group = await contacts.create_group(session, authority=authority, name=new_group_name)
        except HongyanError as exc:
            exc.field = "new_group_name"
            raise
        return group.id, None
    if campaign_id:
        campaign = await session.scalar(
            select(Campaign).where(Campaign.id == campaign_id, Campaign.account_id == authority.account_id)
        )
        if campaign is None:
            raise NotFound("campaign_not_found", "No such campaign.", field="campaign_id")
        if campaign.status in ("completed", "canceled"):
            raise Conflict("campaign_closed", f"The campaign is {campaign.status}.", field="campaign_id")
        if campaign.audience_group_id is None:
            group = ContactGroup(
                id=ids.new_id("grp"),
                account_id=authority.account_id,
                name=f"{campaign.name[:60]} · {campaign.id}",
                kind="static",
                filter=None,
                description="Audience of a campaign (imported file)",
                created_at=utcnow(),
                updated_at=utcnow(),
            )
            session.add(group)
            campaign.audience_group_id = group.id
            await session.flush()
        return campaign.audience_group_id, campaign.id
    return None, None


async def start_import(
    db: Database,
    settings: Settings,
    *,
    authority: Authority,
    job_id: str,
    mapping: dict[str, Any],
    group_id: str | None = None,
    new_group_name: str | None = None,
    campaign_id: str | None = None,
    options: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> ImportJob:
    """Check the mapping against the file's columns and the account's fields (defining new ones), pick the
    target group, and queue the job for a worker."""
    require(authority, contacts.CONTACTS_MANAGE)
    parsed = mapping_from_json(mapping)
    async with db.write() as session:
        job = await _locked_job(session, authority.account_id, job_id)
        if job.status != "uploaded":
            raise Conflict(
                "import_not_startable",
                f"This import is {job.status}; only an uploaded file can be started.",
                field="import_id",
            )
        parsed.validate(len(job.header))
        types = await contacts.field_types(session, authority.account_id)
        for i, f in enumerate(parsed.columns.fields):
            if f.type in FIELD_TYPES and types.get(f.name, f.type) != f.type:
                raise Conflict(
                    "field_type_conflict",
                    f"Field {f.name} already exists as {types[f.name]}.",
                    field=f"mapping.fields[{i}].type",
                )
        for f in parsed.columns.fields:
            await contacts.define_field(session, authority=authority, name=f.name, type=f.type)
        account = await session.get(Account, authority.account_id)
        opts = options_from_json(
            options, default_region=account.default_region if account else settings.default_region
        )
        job.group_id, job.campaign_id = await _target_group(
            session, authority, group_id=group_id, new_group_name=new_group_name, campaign_id=campaign_id
        )
        job.mapping, job.options = parsed.to_json(), opts.to_json()
        job.status, job.updated_at = "queued", utcnow()
        if actor is not None:
            await record(
                session,
                actor=actor,
                action="contact_import.started",
                account_id=job.account_id,
                target_type="import_job",
                target_id=job.id,
                after={
                    "filename": job.filename,
                    "size_bytes": job.size_bytes,
                    "group_id": job.group_id,
                    "campaign_id": job.campaign_id,
                    "mapping": job.mapping,
                    "options": job.options,
                },
            )
    return job


async def cancel_import(
    db: Database, *, authority: Authority, job_id: str, actor: Actor | None = None
) -> ImportJob:
    """Not yet running: canceled at once. Running: the worker stops before its next chunk of rows; the
    contacts of the chunks already committed stay (the counts say how many)."""
    require(authority, contacts.CONTACTS_MANAGE)
    async with db.write() as session:
        job = await _locked_job(session, authority.account_id, job_id)
        if job.status in TERMINAL:
            raise Conflict(
                "import_not_cancelable", f"This import is already {job.status}.", field="import_id"
            )
        before = job.status
        now = utcnow()
        if job.status == "running":
            job.cancel_requested = True
        else:
            job.status, job.finished_at = "canceled", now
            await session.execute(
                delete(UploadChunk).where(UploadChunk.owner_id == job.id, UploadChunk.kind == SOURCE)
            )
        job.updated_at = now
        if actor is not None:
            await record(
                session,
                actor=actor,
                action="contact_import.canceled",
                account_id=job.account_id,
                target_type="import_job",
                target_id=job.id,
                before={"status": before},
                after={"status": job.status, "rows_done": job.rows_done},
            )
    return job
