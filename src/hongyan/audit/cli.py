"""`hongyan audit …`: check the audit log's hash chain, export entries as CSV."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, time
from typing import Annotated

import typer

from hongyan.config import get_settings
from hongyan.db.engine import Database

audit_cli = typer.Typer(help="Audit log: verify the hash chain, export as CSV.", no_args_is_help=True)


def _run(main: object) -> None:
    from hongyan.cli import _with_db

    raise typer.Exit(_with_db(get_settings(), main))  # type: ignore[arg-type]


def _moment(text: str | None, option: str) -> datetime | None:
    """A date (2026-11-25, midnight UTC) or an ISO 8601 time; without a zone it is UTC."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{option} is a date (2026-11-25) or an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@audit_cli.command("verify")
def verify() -> None:
    """Recompute every entry's hash and check the chain is gap-free and ends at the head.
    Exit code 1 names the first bad entry."""
    from hongyan.audit.service import verify_chain

    async def main(db: Database) -> int:
        async with db.read() as session:
            result = await verify_chain(session)
        if result.ok:
            typer.echo(f"{result.entries} entries, chain intact")
            return 0
        typer.echo(f"TAMPERED at seq {result.first_bad_seq}: {result.problem} "
                   f"({result.entries} entries verified before it)", err=True)
        return 1

    _run(main)


@audit_cli.command("export")
def export(
    account: Annotated[str | None, typer.Option(help="Only this account's entries (acc_…); default: all.")] = None,
    since: Annotated[str | None, typer.Option(help="From this date or time (UTC), inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="Before this date or time (UTC).")] = None,
    action: Annotated[str | None, typer.Option(help="Action or prefix, e.g. billing.")] = None,
) -> None:
    """Write matching entries, oldest first, as CSV to standard output (`> audit.csv`)."""
    from hongyan.audit.service import AuditFilter, export_csv

    filters = AuditFilter(account, action=action, since=_moment(since, "--since"), until=_moment(until, "--until"))

    async def main(db: Database) -> int:
        out = sys.stdout.buffer
        async for chunk in export_csv(db, filters):
            out.write(chunk)
        out.flush()
        return 0

    _run(main)
