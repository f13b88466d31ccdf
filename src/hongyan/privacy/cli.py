"""`hongyan privacy …`: data subject requests from the server's shell (export, erase) and a retention run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from hongyan.config import get_settings
from hongyan.db.engine import Database

privacy_cli = typer.Typer(help="Privacy: export or erase one phone number, purge content past retention.",
                          no_args_is_help=True)

AccountOpt = Annotated[str, typer.Option("--account", help="The account (acc_…) whose data is meant.")]
NumberOpt = Annotated[str, typer.Option("--number", help="E.164, or national with the account's region.")]


def _run(main: object) -> None:
    from hongyan.cli import _with_db

    raise typer.Exit(_with_db(get_settings(), main))  # type: ignore[arg-type]


async def _e164(db: Database, account: str, number: str) -> str:
    from sqlalchemy import select

    from hongyan.accounts.models import Account
    from hongyan.privacy.service import parse_number

    async with db.read() as session:
        region = await session.scalar(select(Account.default_region).where(Account.id == account))
    if region is None:
        typer.echo(f"no account {account}", err=True)
        raise typer.Exit(2)
    return parse_number(number, region, field_name="--number")


@privacy_cli.command("export")
def export(
    account: AccountOpt, number: NumberOpt,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the JSON here (default: stdout).")] = None,
) -> None:
    """Everything the account stores about the number, as JSON."""
    from hongyan.privacy.service import export_number

    async def main(db: Database) -> int:
        e164 = await _e164(db, account, number)
        async with db.read() as session:
            document = await export_number(session, account_id=account, e164=e164)
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
        if output is None:
            typer.echo(data.decode())
        else:
            output.write_bytes(data)
            output.chmod(0o600)  # personal data
            typer.echo(f"{len(document['messages'])} messages written to {output}", err=True)
        return 0

    _run(main)


@privacy_cli.command("erase")
def erase(
    account: AccountOpt, number: NumberOpt,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Replace the number and its message content everywhere in the account (cannot be undone)."""
    from hongyan.audit.service import actor_for_cli
    from hongyan.privacy.service import erase_number

    async def main(db: Database) -> int:
        e164 = await _e164(db, account, number)
        if not yes and not typer.confirm(f"Erase every trace of {e164} in {account}? This cannot be undone."):
            typer.echo("nothing erased", err=True)
            return 1
        async with db.write() as session:
            counts = await erase_number(session, account_id=account, e164=e164, actor=actor_for_cli())
        typer.echo("erased: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0

    _run(main)


@privacy_cli.command("purge")
def purge() -> None:
    """Run the retention sweep once now (the workers run it every HONGYAN_PRIVACY_SWEEP_S)."""
    from hongyan.privacy.retention import purge_expired

    async def main(db: Database) -> int:
        counts = await purge_expired(db)
        typer.echo("purged: " + ", ".join(f"{k} {v}" for k, v in counts.as_dict().items()))
        return 0

    _run(main)
