"""Contacts → Import: upload a file (step 1), map its columns over a preview of the first rows and pick the
target group (step 2), watch the progress, cancel, download the error file (step 3). The same services as
/v1/imports; imports.js polls the progress endpoint once a second.

A link may name the target (`?group_id=` or `?campaign_id=`, as the campaign page does): it is carried from
the upload to the mapping step and chosen there; an id that is not this account's is ignored, never shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.datastructures import FormData, UploadFile

from hongyan.audit.service import actor_for_console
from hongyan.campaigns import import_files, imports
from hongyan.campaigns.import_routes import error_download
from hongyan.campaigns.models import Campaign, ContactGroup, ImportJob
from hongyan.console.access import member_authority
from hongyan.console.context import CheckedForm, Console, FieldErrors, SignedIn, form_text
from hongyan.console.session import Flash
from hongyan.core.errors import HongyanError, NotFound

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE = "/console/contacts/import"
TARGETS = ("ignore", "phone", "name", "tags", "time_zone", "field")
ENCODINGS = (
    ("", "imports.encoding.auto"),
    ("utf-8", "imports.encoding.utf8"),
    ("gb18030", "imports.encoding.gbk"),
    ("utf-16", "imports.encoding.utf16"),
)
DELIMITERS = (
    ("", "imports.delimiter.auto"),
    (",", "imports.delimiter.comma"),
    (";", "imports.delimiter.semicolon"),
    ("tab", "imports.delimiter.tab"),
    ("|", "imports.delimiter.pipe"),
)
RECENT = 10
CLOSED_CAMPAIGNS = ("completed", "canceled")  # no import into their audience (imports._target_group)


def _job_url(job_id: str) -> str:
    return f"{PAGE}/{job_id}"


async def _job(console: Console, import_id: str) -> ImportJob | None:
    try:
        return await imports.get_import(console.db, account_id=console.account_id, job_id=import_id)
    except NotFound:
        return None


def _not_found(console: Console) -> Any:
    return console.render("not_found.html", status=404, what="page")


# -- the target named by a link -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Target:
    """A static group, or a campaign's audience: where a link asked the contacts to go."""

    group: ContactGroup | None = None
    campaign: Campaign | None = None

    @property
    def choice(self) -> str:
        """The mapping step's `group` value: grp_… or cmp_…."""
        return self.campaign.id if self.campaign is not None else self.group.id if self.group else ""

    @property
    def query(self) -> str:
        key = "campaign_id" if self.campaign is not None else "group_id"
        return "?" + urlencode({key: self.choice})


async def _target(console: Console, *, group_id: str = "", campaign_id: str = "") -> Target | None:
    """The account's open campaign or static group with this id, else None (an unknown or other account's id
    is dropped without a word). A campaign's own audience group counts as that campaign, so the job is
    linked to it."""
    async with console.db.read() as session:
        if campaign_id:
            campaign = await session.scalar(
                select(Campaign).where(Campaign.id == campaign_id, Campaign.account_id == console.account_id)
            )
            return Target(campaign=campaign) if campaign and campaign.status not in CLOSED_CAMPAIGNS else None
        if not group_id:
            return None
        group = await session.scalar(
            select(ContactGroup).where(
                ContactGroup.id == group_id,
                ContactGroup.account_id == console.account_id,
                ContactGroup.kind == "static",
            )
        )
        if group is None:
            return None
        campaign = await session.scalar(
            select(Campaign).where(
                Campaign.account_id == console.account_id,
                Campaign.audience_group_id == group.id,
                Campaign.status.not_in(CLOSED_CAMPAIGNS),
            )
        )
    return Target(campaign=campaign) if campaign is not None else Target(group=group)


# -- step 1: upload -------------------------------------------------------------------------------
async def _upload_page(
    console: Console,
    *,
    status: int = 200,
    errors: FieldErrors | None = None,
    form: dict[str, str] | None = None,
    target: Target | None = None,
) -> Any:
    recent, _ = await imports.list_imports(console.db, account_id=console.account_id, limit=RECENT)
    return console.render(
        "imports.html",
        status=status,
        active="contacts",
        errors=errors or FieldErrors(),
        form=form or {"encoding": "", "delimiter": ""},
        encodings=ENCODINGS,
        delimiters=DELIMITERS,
        recent=recent,
        progress_of=imports.progress,
        target=target,
    )


@router.get("/contacts/import")
async def upload_page(console: SignedIn, group_id: str = "", campaign_id: str = "") -> Any:
    target = await _target(console, group_id=group_id, campaign_id=campaign_id)
    if target is None and (group_id or campaign_id):
        return console.redirect(PAGE)  # the plain wizard; the id is not echoed (not even in the page's links)
    return await _upload_page(console, target=target)


@router.post("/contacts/import")
async def upload(console: SignedIn, form: CheckedForm) -> Any:
    values = {k: form_text(form, k) for k in ("encoding", "delimiter")}
    target = await _target(
        console, group_id=form_text(form, "group_id"), campaign_id=form_text(form, "campaign_id")
    )
    upload = form.get("file")
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise HongyanError("field_required", "Choose a CSV or Excel file.", field="file", status_code=422)
        job = await import_files.create_import(
            console.db,
            console.request.app.state.settings,
            authority=member_authority(console),
            filename=upload.filename,
            stream=upload,
            encoding=values["encoding"] or None,
            delimiter={"tab": "\t"}.get(values["delimiter"], values["delimiter"]) or None,
        )
    except HongyanError as exc:
        errors = FieldErrors()
        console.field_error(errors, exc.field if exc.field in ("encoding", "delimiter") else "file", exc)
        return await _upload_page(console, status=exc.status_code, errors=errors, form=values, target=target)
    finally:
        if isinstance(upload, UploadFile):
            await upload.close()
    return console.redirect(_job_url(job.id) + (target.query if target else ""))


# -- step 2: mapping, step 3: progress ------------------------------------------------------------
def _columns_from_mapping(header: list[str], mapping: dict[str, Any] | None) -> list[dict[str, str]]:
    """Per column: what it is mapped to, and a field name and type (for custom fields)."""
    columns = [{"target": "ignore", "name": h.strip()[:40], "type": "text"} for h in header]
    for key in ("phone", "name", "tags", "time_zone"):
        index = (mapping or {}).get(key)
        if index is not None and index < len(columns):
            columns[index]["target"] = key
    for f in (mapping or {}).get("fields") or []:
        if f["index"] < len(columns):
            columns[f["index"]].update(target="field", name=f["name"], type=f.get("type", "text"))
    return columns


def _columns_from_form(form: FormData, width: int) -> list[dict[str, str]]:
    return [
        {
            "target": form_text(form, f"col_{i}", "ignore"),
            "name": form_text(form, f"fname_{i}").strip(),
            "type": form_text(form, f"ftype_{i}", "text"),
        }
        for i in range(width)
    ]


def _mapping_of(columns: list[dict[str, str]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {"fields": []}
    for i, column in enumerate(columns):
        target = column["target"]
        if target == "field":
            mapping["fields"].append({"index": i, "name": column["name"], "type": column["type"]})
        elif target in TARGETS[1:] and target not in mapping:
            mapping[target] = i
        elif target in mapping:
            raise HongyanError(
                "column_mapped_twice",
                f"Only one column can be the {target.replace('_', ' ')}.",
                field="mapping",
                status_code=422,
            )
    return mapping


async def _mapping_page(
    console: Console,
    job: ImportJob,
    *,
    status: int = 200,
    errors: FieldErrors | None = None,
    columns: list[dict[str, str]] | None = None,
    form: dict[str, Any] | None = None,
    target: Target | None = None,
) -> Any:
    shown = await import_files.preview(console.db, job)
    chosen = target.choice if target else ""  # the link's target, preselected
    async with console.db.read() as session:
        groups = list(
            await session.scalars(
                select(ContactGroup)
                .where(ContactGroup.account_id == console.account_id, ContactGroup.kind == "static")
                .order_by(ContactGroup.name)
            )
        )
    return console.render(
        "imports_mapping.html",
        status=status,
        active="contacts",
        job=job,
        preview=shown,
        columns=columns or _columns_from_mapping(job.header, shown["mapping"]),
        targets=TARGETS,
        groups=groups,
        campaign=target.campaign if target else None,
        errors=errors or FieldErrors(),
        form=form or {"group": chosen, "new_group_name": "", "update_existing": True},
    )


@router.get("/contacts/import/{import_id}")
async def job_page(console: SignedIn, import_id: str, group_id: str = "", campaign_id: str = "") -> Any:
    job = await _job(console, import_id)
    if job is None:
        return _not_found(console)
    if job.status == "uploaded":
        target = await _target(console, group_id=group_id, campaign_id=campaign_id)
        if target is None and (group_id or campaign_id):
            return console.redirect(_job_url(job.id))
        return await _mapping_page(console, job, target=target)
    return console.render("imports_progress.html", active="contacts", job=job, view=imports.job_json(job))


@router.post("/contacts/import/{import_id}/start")
async def start(console: SignedIn, import_id: str, form: CheckedForm) -> Any:
    job = await _job(console, import_id)
    if job is None:
        return _not_found(console)
    columns = _columns_from_form(form, len(job.header))
    values = {
        "group": form_text(form, "group"),
        "new_group_name": form_text(form, "new_group_name").strip(),
        "update_existing": form_text(form, "update_existing") == "on",
    }
    group = values["group"]
    try:
        await imports.start_import(
            console.db,
            console.request.app.state.settings,
            authority=member_authority(console),
            job_id=job.id,
            mapping=_mapping_of(columns),
            group_id=group if group.startswith("grp_") else None,
            new_group_name=values["new_group_name"] if group == "new" else None,
            campaign_id=group if group.startswith("cmp_") else None,
            options={"update_existing": values["update_existing"]},
            actor=actor_for_console(console),
        )
    except HongyanError as exc:
        if exc.code == "import_not_startable":
            return console.redirect(_job_url(job.id))
        errors = FieldErrors()
        slot = exc.field if exc.field in ("new_group_name", "group_id", "campaign_id") else "mapping"
        console.field_error(errors, "group" if slot in ("group_id", "campaign_id") else slot, exc)
        target = await _target(console, campaign_id=group) if group.startswith("cmp_") else None
        return await _mapping_page(
            console, job, status=exc.status_code, errors=errors, columns=columns, form=values, target=target
        )
    return console.redirect(
        _job_url(job.id),
        flash=Flash(kind="success", key="imports.flash.started", params={"name": job.filename}),
    )


@router.post("/contacts/import/{import_id}/cancel")
async def cancel(console: SignedIn, import_id: str, form: CheckedForm) -> Any:
    job = await _job(console, import_id)
    if job is None:
        return _not_found(console)
    try:
        job = await imports.cancel_import(
            console.db, authority=member_authority(console), job_id=job.id, actor=actor_for_console(console)
        )
    except HongyanError as exc:
        return console.redirect_error(_job_url(import_id), exc)
    return console.redirect(
        _job_url(job.id), flash=Flash(kind="success", key="imports.flash.cancel_requested")
    )


@router.get("/contacts/import/{import_id}/progress")
async def progress(console: SignedIn, import_id: str) -> Any:
    """What the progress page shows, for imports.js (polled once a second)."""
    job = await _job(console, import_id)
    if job is None:
        return console.json(
            {"error": {"code": "import_not_found", "message": "No such import.", "field": None}}, status=404
        )
    view = imports.job_json(job)
    keys = (
        "status",
        "rows_done",
        "rows_total",
        "counts",
        "progress",
        "error",
        "cancel_requested",
        "has_error_file",
    )
    return console.json({k: view[k] for k in keys})


@router.get("/contacts/import/{import_id}/errors")
async def errors_file(console: SignedIn, import_id: str) -> Any:
    job = await _job(console, import_id)
    if job is None:
        return _not_found(console)
    response: StreamingResponse = console.finish(error_download(console.db, job))  # type: ignore[assignment]
    return response
