"""Contacts → Import: upload a file (step 1), map its columns over a preview of the first rows and pick the
target group (step 2), watch the progress, cancel, download the error file (step 3). The same services as
/v1/imports; imports.js polls the progress endpoint once a second."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.datastructures import FormData, UploadFile

from hongyan.audit.service import actor_for_console
from hongyan.campaigns import import_files, imports
from hongyan.campaigns.import_routes import error_download
from hongyan.campaigns.models import ContactGroup, ImportJob
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


def _job_url(job_id: str) -> str:
    return f"{PAGE}/{job_id}"


async def _job(console: Console, import_id: str) -> ImportJob | None:
    try:
        return await imports.get_import(console.db, account_id=console.account_id, job_id=import_id)
    except NotFound:
        return None


def _not_found(console: Console) -> Any:
    return console.render("not_found.html", status=404, what="page")


# -- step 1: upload -------------------------------------------------------------------------------
async def _upload_page(
    console: Console,
    *,
    status: int = 200,
    errors: FieldErrors | None = None,
    form: dict[str, str] | None = None,
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
    )


@router.get("/contacts/import")
async def upload_page(console: SignedIn) -> Any:
    return await _upload_page(console)


@router.post("/contacts/import")
async def upload(console: SignedIn, form: CheckedForm) -> Any:
    values = {k: form_text(form, k) for k in ("encoding", "delimiter")}
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
        return await _upload_page(console, status=exc.status_code, errors=errors, form=values)
    finally:
        if isinstance(upload, UploadFile):
            await upload.close()
    return console.redirect(_job_url(job.id))


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
) -> Any:
    shown = await import_files.preview(console.db, job)
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
        errors=errors or FieldErrors(),
        form=form or {"group": "", "new_group_name": "", "update_existing": True},
    )


@router.get("/contacts/import/{import_id}")
async def job_page(console: SignedIn, import_id: str) -> Any:
    job = await _job(console, import_id)
    if job is None:
        return _not_found(console)
    if job.status == "uploaded":
        return await _mapping_page(console, job)
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
            options={"update_existing": values["update_existing"]},
            actor=actor_for_console(console),
        )
    except HongyanError as exc:
        if exc.code == "import_not_startable":
            return console.redirect(_job_url(job.id))
        errors = FieldErrors()
        slot = exc.field if exc.field in ("new_group_name", "group_id") else "mapping"
        console.field_error(errors, "group" if slot == "group_id" else slot, exc)
        return await _mapping_page(
            console, job, status=exc.status_code, errors=errors, columns=columns, form=values
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
