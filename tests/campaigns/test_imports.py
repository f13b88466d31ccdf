"""Contact-file import jobs on SQLite and PostgreSQL: upload checks, mapping, the worker chunk by chunk,
bad files, cancel mid-import with exact counts, resume after a crash, two workers on one queue."""

from __future__ import annotations

import asyncio
import csv
import io
import os
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from hongyan.accounts.permissions import Authority
from hongyan.campaigns import contacts, import_files, import_worker, imports
from hongyan.campaigns.models import Contact, ContactField, GroupMember, ImportJob, UploadChunk
from hongyan.config import Settings
from hongyan.core.clock import utcnow
from hongyan.core.errors import HongyanError
from hongyan.db.engine import Database
from support import AccountFixture, make_account


def who(account: AccountFixture, scopes: tuple[str, ...] = ("send", "read")) -> Authority:
    return Authority.of_key(account_id=account.account_id, key_id=account.key_id, scopes=scopes, label="test")


def csv_bytes(rows: list[list[str]], encoding: str = "utf-8", delimiter: str = ",") -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode(encoding)


def phones(n: int, start: int = 0) -> list[str]:
    return [f"138{i:08d}" for i in range(start, start + n)]


async def upload(
    db: Database, settings: Settings, account: AccountFixture, data: bytes, name: str = "list.csv", **kw: Any
) -> ImportJob:
    return await import_files.create_import(
        db, settings, authority=who(account), filename=name, stream=io.BytesIO(data), **kw
    )


async def run_all(db: Database, settings: Settings, **kw: Any) -> int:
    rounds = 0
    while await import_worker.work_once(db, settings, **kw):
        rounds += 1
    return rounds


async def reload(db: Database, job_id: str) -> ImportJob:
    async with db.read() as session:
        job = await session.get(ImportJob, job_id)
    assert job is not None
    return job


async def error_lines(db: Database, job: ImportJob) -> list[list[str]]:
    data = b"".join([part async for part in import_files.error_file(db, job)])
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


async def contact_count(db: Database, account_id: str) -> int:
    async with db.read() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(Contact).where(Contact.account_id == account_id)
            )
            or 0
        )


async def test_half_invalid_numbers_import_the_valid_half_into_a_group(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    rows = [["手机号", "姓名", "订单号", "金额"]]
    for i, phone in enumerate(phones(10)):
        rows.append([phone if i % 2 == 0 else f"12{i}", f"客户{i}", f"DD-{i}", f"{i}.50"])
    job = await upload(db, settings, account, csv_bytes(rows))
    assert (
        job.status == "uploaded" and job.format == "csv" and job.encoding == "utf-8" and job.delimiter == ","
    )
    assert job.header == ["手机号", "姓名", "订单号", "金额"] and job.size_bytes > 0
    shown = await import_files.preview(db, job)
    assert [r["row"] for r in shown["rows"]] == list(range(2, 12))
    assert shown["rows"][0]["cells"][1] == "客户0"
    guessed = shown["mapping"]
    assert guessed["phone"] == 0 and guessed["name"] == 1
    assert [f["name"] for f in guessed["fields"]] == ["订单号", "金额"]
    guessed["fields"][1]["type"] = "number"
    async with db.write() as session:
        group = await contacts.create_group(session, authority=who(account), name="导入")
    started = await imports.start_import(
        db,
        settings,
        authority=who(account),
        job_id=job.id,
        mapping=guessed,
        group_id=group.id,
        options={"consent_source": "signup form"},
    )
    assert started.status == "queued"
    assert await run_all(db, settings) == 1
    done = await reload(db, job.id)
    assert done.status == "completed" and done.rows_done == done.rows_total == 10
    assert (done.created_count, done.updated_count, done.skipped_count, done.failed_count) == (5, 0, 0, 5)
    assert imports.progress(done)["percent"] == 100.0
    lines = await error_lines(db, done)
    assert lines[0] == ["row", "column", "column_name", "code", "message", "value"]
    assert [(r[0], r[1], r[2]) for r in lines[1:]] == [(str(n), "1", "手机号") for n in (3, 5, 7, 9, 11)]
    assert {r[3] for r in lines[1:]} <= {"invalid_phone_number", "not_mobile_number"}
    async with db.read() as session:
        stored = list(await session.scalars(select(Contact).where(Contact.account_id == account.account_id)))
        members = await session.scalar(
            select(func.count()).select_from(GroupMember).where(GroupMember.group_id == group.id)
        )
        field = await session.get(ContactField, (account.account_id, "金额"))
        left = await session.scalar(
            select(func.count())
            .select_from(UploadChunk)
            .where(UploadChunk.owner_id == job.id, UploadChunk.kind == "source")
        )
    assert len(stored) == 5 and members == 5 and field is not None and field.type == "number"
    by_name = {c.name: c for c in stored}
    assert (
        by_name["客户0"].fields == {"订单号": "DD-0", "金额": "0.50"} and by_name["客户0"].source == "import"
    )
    assert by_name["客户0"].consent_source == "signup form" and by_name["客户0"].consent_at is not None
    assert left == 0  # the source file is deleted once imported


async def test_duplicates_update_existing_off_and_time_zone_column(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    async with db.write() as session:
        await contacts.create_contact(
            session,
            authority=who(account),
            region="CN",
            data=contacts.ContactInput(phone="13800000001", name="老客户"),
        )
    rows = [
        ["phone", "name", "zone"],
        ["13800000000", "A", "Asia/Tokyo"],
        ["13800000001", "B", ""],
        ["+86 138 0000 0000", "A again", ""],
        ["13800000002", "C", "Mars/Base"],
        ["13800000003", "D", ""],
    ]
    job = await upload(db, settings, account, csv_bytes(rows))
    mapping = {"phone": 0, "name": 1, "time_zone": 2}
    await imports.start_import(
        db,
        settings,
        authority=who(account),
        job_id=job.id,
        mapping=mapping,
        options={"update_existing": False},
    )
    await run_all(db, settings)
    done = await reload(db, job.id)
    # row 3 exists and is left alone; row 4 repeats row 2; row 5 has a zone that does not exist
    assert (done.created_count, done.updated_count, done.skipped_count, done.failed_count) == (2, 0, 2, 1)
    lines = await error_lines(db, done)
    assert [(r[0], r[3]) for r in lines[1:]] == [("4", "duplicate_phone_number"), ("5", "invalid_time_zone")]
    async with db.read() as session:
        by_name = {
            c.name: c
            for c in await session.scalars(select(Contact).where(Contact.account_id == account.account_id))
        }
    assert set(by_name) == {"A", "老客户", "D"}
    assert by_name["A"].time_zone == "Asia/Tokyo" and by_name["D"].time_zone is None


async def test_gbk_file_with_huge_cells(db: Database, settings: Settings, account: AccountFixture) -> None:
    rows = [
        ["手机号码", "客户姓名", "备注"],
        ["13800138000", "张三", "老客户"],
        ["13900139000", "李四", "x" * 5000],
        ["13700137000", "王五", "好"],
    ]
    job = await upload(db, settings, account, csv_bytes(rows, "gbk"))
    assert job.encoding == "gb18030" and job.header == ["手机号码", "客户姓名", "备注"]
    mapping = (await import_files.preview(db, job))["mapping"]
    await imports.start_import(db, settings, authority=who(account), job_id=job.id, mapping=mapping)
    await run_all(db, settings)
    done = await reload(db, job.id)
    assert (done.created_count, done.failed_count) == (2, 1)
    lines = await error_lines(db, done)
    assert lines[1][:4] == ["3", "3", "备注", "cell_too_long"]
    async with db.read() as session:
        names = set(
            await session.scalars(select(Contact.name).where(Contact.account_id == account.account_id))
        )
    assert names == {"张三", "王五"}


async def test_xlsx_file(db: Database, settings: Settings, account: AccountFixture, tmp_path: Any) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["手机号", "姓名", "到期日"])
    for i in range(20):
        sheet.append([13900000000 + i, f"客户{i}", "2026-12-01" if i else "不是日期"])
    path = tmp_path / "list.xlsx"
    workbook.save(path)
    job = await upload(
        db, settings.model_copy(update={"import_chunk_rows": 7}), account, path.read_bytes(), "名单.xlsx"
    )
    assert job.format == "xlsx" and job.encoding is None and job.rows_total == 20  # from the sheet dimension
    mapping = {"phone": 0, "name": 1, "fields": [{"index": 2, "name": "到期日", "type": "date"}]}
    await imports.start_import(db, settings, authority=who(account), job_id=job.id, mapping=mapping)
    await run_all(db, settings.model_copy(update={"import_chunk_rows": 7}))
    done = await reload(db, job.id)
    assert done.status == "completed" and (done.created_count, done.failed_count) == (19, 1)
    assert (await error_lines(db, done))[1][:4] == ["2", "3", "到期日", "invalid_date"]


@pytest.mark.parametrize(
    ("data", "name", "code", "field"),
    [
        (os.urandom(4096) + b"\x00" * 16, "list.csv", "file_not_text", "file"),
        (os.urandom(4096) + b"\x00", "list.xlsx", "file_unreadable", "file"),
        (b"", "list.csv", "file_empty", "file"),
        (b"phone\n", "list.csv", "file_has_no_rows", "file"),
    ],
)
async def test_bad_files_are_refused_at_upload(
    db: Database, settings: Settings, account: AccountFixture, data: bytes, name: str, code: str, field: str
) -> None:
    with pytest.raises(HongyanError) as caught:
        await upload(db, settings, account, data, name)
    assert (caught.value.status_code, caught.value.code, caught.value.field) == (422, code, field)
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(ImportJob)) == 0


async def test_wrong_delimiter_too_large_and_permission(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    data = csv_bytes([["手机号", "姓名"], ["13800138000", "张三"]])
    with pytest.raises(HongyanError) as caught:
        await upload(db, settings, account, data, delimiter=";")
    assert (caught.value.code, caught.value.field) == ("delimiter_mismatch", "delimiter")
    assert "','" in caught.value.message
    semicolons = await upload(
        db, settings, account, csv_bytes([["手机号", "姓名"], ["13800138000", "张三"]], delimiter=";")
    )
    assert semicolons.delimiter == ";" and semicolons.header == ["手机号", "姓名"]
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~"
    for encoding, code, field in [
        ("utf-8", "file_not_text", "file"),
        ("utf-16", "file_unreadable", "encoding"),
    ]:
        with pytest.raises(HongyanError) as caught:  # a chosen encoding does not let binary files through
            await upload(db, settings, account, png, "file.png", encoding=encoding)
        assert (caught.value.code, caught.value.field) == (code, field)
    with pytest.raises(HongyanError) as caught:
        await upload(db, settings.model_copy(update={"import_max_bytes": 10}), account, data)
    assert (caught.value.status_code, caught.value.code) == (413, "file_too_large")
    with pytest.raises(HongyanError) as caught:
        await import_files.create_import(
            db, settings, authority=who(account, ("read",)), filename="a.csv", stream=io.BytesIO(data)
        )
    assert caught.value.code == "permission_denied"


async def test_mapping_is_checked_before_the_job_is_queued(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    job = await upload(
        db, settings, account, csv_bytes([["客户", "备注", "金额"], ["13800138000", "a", "1"]])
    )
    assert (await import_files.preview(db, job))[
        "mapping"
    ] is None  # no column looks like phone numbers: a person picks
    cases: list[tuple[dict[str, Any], str, str | None]] = [
        ({"name": 0}, "phone_column_required", "mapping.phone"),
        ({"phone": 5}, "column_out_of_range", "mapping"),
        ({"phone": 0, "name": 0}, "column_mapped_twice", "mapping"),
        ({"phone": 0, "time_zone": 0}, "column_mapped_twice", "mapping.time_zone"),
        (
            {"phone": 0, "fields": [{"index": 1, "name": "备 注"}]},
            "invalid_field_name",
            "mapping.fields[0].name",
        ),
        (
            {"phone": 0, "fields": [{"index": 2, "name": "金额", "type": "money"}]},
            "invalid_field_type",
            "mapping.fields[0].type",
        ),
    ]
    for mapping, code, field in cases:
        with pytest.raises(HongyanError) as caught:
            await imports.start_import(db, settings, authority=who(account), job_id=job.id, mapping=mapping)
        assert (caught.value.code, caught.value.field) == (code, field), mapping
    async with db.write() as session:
        await contacts.define_field(session, authority=who(account), name="金额", type="date")
        saved = await contacts.create_group(
            session, authority=who(account), name="VIP", kind="filter", filter={"tags_any": ["VIP"]}
        )
    with pytest.raises(HongyanError) as caught:
        await imports.start_import(
            db,
            settings,
            authority=who(account),
            job_id=job.id,
            mapping={"phone": 0, "fields": [{"index": 2, "name": "金额", "type": "number"}]},
        )
    assert (caught.value.code, caught.value.field) == ("field_type_conflict", "mapping.fields[0].type")
    for kw, code in [
        ({"group_id": saved.id}, "group_is_filter"),
        ({"group_id": "grp_nope"}, "group_not_found"),
        ({"new_group_name": "VIP"}, "group_name_taken"),
        ({"campaign_id": "cmp_nope"}, "campaign_not_found"),
        ({"options": {"default_region": "XX"}}, "invalid_region"),
    ]:
        with pytest.raises(HongyanError) as caught:
            await imports.start_import(
                db, settings, authority=who(account), job_id=job.id, mapping={"phone": 0}, **kw
            )
        assert caught.value.code == code
    assert (await reload(db, job.id)).status == "uploaded"
    started = await imports.start_import(
        db, settings, authority=who(account), job_id=job.id, mapping={"phone": 0}, new_group_name="新名单"
    )
    assert started.status == "queued" and started.group_id
    with pytest.raises(HongyanError) as caught:
        await imports.start_import(db, settings, authority=who(account), job_id=job.id, mapping={"phone": 0})
    assert caught.value.code == "import_not_startable"


async def test_cancel_mid_import_keeps_exactly_the_committed_chunks(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    small = settings.model_copy(update={"import_chunk_rows": 3})
    rows = [["phone"], *([p] for p in phones(10))]
    job = await upload(db, small, account, csv_bytes(rows))
    await imports.start_import(db, small, authority=who(account), job_id=job.id, mapping={"phone": 0})
    assert await import_worker.work_once(db, small, holder="w1", max_chunks=1)
    assert await import_worker.work_once(db, small, holder="w1", max_chunks=1)
    running = await reload(db, job.id)
    assert running.status == "running" and running.rows_done == 6 and running.bytes_done > 0
    assert 0 < imports.progress(running)["percent"] < 100
    canceled = await imports.cancel_import(db, authority=who(account), job_id=job.id)
    assert canceled.status == "running" and canceled.cancel_requested
    await run_all(db, small)
    done = await reload(db, job.id)
    assert done.status == "canceled" and done.rows_done == 6 and done.created_count == 6
    assert await contact_count(db, account.account_id) == 6
    with pytest.raises(HongyanError) as caught:
        await imports.cancel_import(db, authority=who(account), job_id=job.id)
    assert caught.value.code == "import_not_cancelable"
    # queued (or only uploaded): canceled at once, nothing imported
    other = await upload(db, small, account, csv_bytes(rows))
    await imports.start_import(db, small, authority=who(account), job_id=other.id, mapping={"phone": 0})
    assert (await imports.cancel_import(db, authority=who(account), job_id=other.id)).status == "canceled"
    assert not await import_worker.work_once(db, small)


async def test_resume_after_a_crash_continues_without_duplicates(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    small = settings.model_copy(update={"import_chunk_rows": 4})
    numbers = phones(10)
    rows = [
        ["phone", "name"],
        *([p, f"n{i}"] for i, p in enumerate(numbers)),
        [numbers[1], "repeat of row 3"],
    ]
    job = await upload(db, small, account, csv_bytes(rows))
    await imports.start_import(
        db, small, authority=who(account), job_id=job.id, mapping={"phone": 0, "name": 1}
    )
    assert await import_worker.work_once(db, small, holder="crashed", max_chunks=2)
    # the worker died holding the lease: nobody may take the job until the lease runs out
    async with db.write() as session:
        await session.execute(
            update(ImportJob)
            .where(ImportJob.id == job.id)
            .values(lease_holder="crashed", lease_until=utcnow() + timedelta(seconds=30))
        )
    assert not await import_worker.work_once(db, small, holder="rescuer")
    async with db.write() as session:
        await session.execute(
            update(ImportJob)
            .where(ImportJob.id == job.id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    assert await import_worker.work_once(db, small, holder="rescuer")
    done = await reload(db, job.id)
    assert done.status == "completed" and done.rows_done == 11 and done.created_count == 10
    assert (done.skipped_count, done.updated_count, done.failed_count) == (1, 0, 0)
    assert [(r[0], r[3]) for r in (await error_lines(db, done))[1:]] == [("12", "duplicate_phone_number")]
    assert await contact_count(db, account.account_id) == 10
    # a worker that lost its lease writes nothing
    assert await import_worker._commit_chunk(db, job.id, "crashed", 8, import_files.Chunk(rows=1)) == "lost"


async def test_a_line_that_cannot_be_read_fails_the_job_after_the_rows_before(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    small = settings.model_copy(update={"import_chunk_rows": 3})
    head = csv_bytes([["phone"], *([p] for p in phones(4))])
    data = head + b'"' + b"x" * (17 * 1024 * 1024) + b'"\n13900000000\n'
    job = await upload(db, small, account, data)
    await imports.start_import(db, small, authority=who(account), job_id=job.id, mapping={"phone": 0})
    await run_all(db, small)
    done = await reload(db, job.id)
    assert done.status == "failed" and done.error is not None
    assert done.error["code"] == "file_unreadable" and done.error["row"] == 6
    assert done.created_count == 4 and await contact_count(db, account.account_id) == 4


async def test_two_workers_never_run_the_same_job(db: Database, settings: Settings, db_url: str) -> None:
    if db.dialect != "postgresql":
        pytest.skip("concurrent writers: PostgreSQL (SQLite serializes writers anyway)")
    small = settings.model_copy(update={"import_chunk_rows": 50})
    accounts = [await make_account(db, name=f"A{i}") for i in range(3)]
    jobs = []
    for n, acc in enumerate(accounts):
        for k in range(2):  # two jobs of one account overlap in numbers: they must run one after another
            rows = [["phone"], *([p] for p in phones(300, start=n * 1000 + k * 150))]
            job = await upload(db, small, acc, csv_bytes(rows))
            await imports.start_import(db, small, authority=who(acc), job_id=job.id, mapping={"phone": 0})
            jobs.append(job.id)
    other = Database(db_url, pool_size=5)
    try:
        ran = await asyncio.gather(run_all(db, small, holder="w1"), run_all(other, small, holder="w2"))
    finally:
        await other.dispose()
    assert sum(ran) == len(jobs)
    for job_id in jobs:
        done = await reload(db, job_id)
        assert done.status == "completed" and done.rows_done == 300
        assert done.created_count + done.updated_count == 300 and done.failed_count == 0
    for acc in accounts:
        assert await contact_count(db, acc.account_id) == 450


async def test_uploads_never_started_expire(
    db: Database, settings: Settings, account: AccountFixture
) -> None:
    old = await upload(db, settings, account, csv_bytes([["phone"], ["13800138000"]]))
    fresh = await upload(db, settings, account, csv_bytes([["phone"], ["13800138000"]]))
    async with db.write() as session:
        await session.execute(
            update(ImportJob).where(ImportJob.id == old.id).values(created_at=utcnow() - timedelta(hours=25))
        )
    assert await import_worker.run_pending(db, settings) == 0
    expired, kept = await reload(db, old.id), await reload(db, fresh.id)
    assert expired.status == "canceled" and expired.error == {
        "code": "upload_expired",
        "message": "Not started within 24 hours.",
    }
    assert kept.status == "uploaded"
    async with db.read() as session:
        chunks = set(await session.scalars(select(UploadChunk.owner_id).where(UploadChunk.kind == "source")))
    assert chunks == {fresh.id}
