"""`hongyan billing …`: verify the ledger, top up, adjust, credit limits, rate cards from CSV, sweeps."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer

from hongyan.accounts.models import Account
from hongyan.audit.service import actor_for_cli
from hongyan.config import get_settings
from hongyan.core.money import AmountError, format_micros, parse_amount
from hongyan.db.engine import Database

billing_cli = typer.Typer(help="Billing: ledger checks, top-ups, adjustments, rate cards.", no_args_is_help=True)


def _run(main: object) -> None:
    from hongyan.cli import _with_db

    raise typer.Exit(_with_db(get_settings(), main))  # type: ignore[arg-type]


def _micros(text: str, *, signed: bool = False) -> int:
    try:
        return parse_amount(text, signed=signed)
    except AmountError as exc:
        raise typer.BadParameter(str(exc)) from exc


async def _account(session: Any, account_id: str) -> Account:
    """The account, or `no account …` and exit code 2 (nothing was changed)."""
    acc = await session.get(Account, account_id)
    if acc is None:
        typer.echo(f"no account {account_id}", err=True)
        raise typer.Exit(2)
    return acc


@billing_cli.command("verify")
def verify() -> None:
    """Prove journal and balances agree: entries balance, balances equal their lines, no floor crossed,
    held funds equal what unfinished messages hold. Exit code 1 on any problem."""
    from hongyan.billing.charging import verify_all

    async def main(db: Database) -> int:
        problems = await verify_all(db)
        for p in problems:
            typer.echo(f"PROBLEM {p.check}: {p.subject}: {p.detail}")
        typer.echo("ledger OK: journal and balances agree" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0

    _run(main)


@billing_cli.command("balance")
def balance(account: str) -> None:
    """Show an account's balance, held funds, credit limit and package units."""
    from hongyan.billing.statements import balance_summary

    async def main(db: Database) -> int:
        async with db.read() as session:
            acc = await _account(session, account)
            s = await balance_summary(session, account_id=acc.id, currency=acc.currency)
        typer.echo(f"{acc.id} {acc.name}: balance {s['balance']} {s['currency']}, available {s['available']}, "
                   f"held {s['held']}, credit limit {s['credit_limit']}, package units {s['package_units']}")
        return 0

    _run(main)


@billing_cli.command("top-up")
def top_up(
    account: str,
    amount: Annotated[str, typer.Argument(help='Amount in currency units, e.g. "1000.00".')],
    note: Annotated[str, typer.Option(help="Why (kept in the journal).")],
) -> None:
    """Credit an account (recorded as a paid order with an invoice, actor `cli`)."""
    from hongyan.billing import recharge

    micros = _micros(amount)

    async def main(db: Database) -> int:
        async with db.write() as session:
            acc = await _account(session, account)
            order = await recharge.top_up(session, account_id=acc.id, amount_micros=micros, currency=acc.currency,
                                          actor="cli", note=note, audit_actor=actor_for_cli())
        typer.echo(f"credited {format_micros(micros, acc.currency)} {acc.currency} to {acc.id} "
                   f"(order {order.id}, invoice {order.invoice_number})")
        return 0

    _run(main)


@billing_cli.command("adjust")
def adjust(
    account: str,
    amount: Annotated[str, typer.Argument(help='Signed amount: "50" credits, "-12.5" debits.')],
    note: Annotated[str, typer.Option(help="Why (kept in the journal).")],
) -> None:
    """Correct a balance (never below its floor)."""
    from hongyan.billing import recharge

    micros = _micros(amount, signed=True)

    async def main(db: Database) -> int:
        async with db.write() as session:
            acc = await _account(session, account)
            entry = await recharge.adjust(session, account_id=acc.id, amount_micros=micros, currency=acc.currency,
                                          actor="cli", note=note, audit_actor=actor_for_cli())
        typer.echo(f"adjusted {acc.id} by {format_micros(micros, acc.currency)} {acc.currency} (entry {entry})")
        return 0

    _run(main)


@billing_cli.command("credit-limit")
def credit_limit(account: str, amount: Annotated[str, typer.Argument(help='e.g. "500"; "0" for none.')]) -> None:
    """Let an account's balance go down to minus this amount."""
    from hongyan.billing import recharge

    micros = 0 if amount.strip() == "0" else _micros(amount)

    async def main(db: Database) -> int:
        async with db.write() as session:
            acc = await _account(session, account)
            await recharge.set_credit_limit(session, account_id=acc.id, currency=acc.currency, limit_micros=micros,
                                            audit_actor=actor_for_cli())
        typer.echo(f"credit limit of {acc.id}: {format_micros(micros, acc.currency)} {acc.currency}")
        return 0

    _run(main)


@billing_cli.command("rate-card")
def rate_card(
    csv_file: Annotated[Path, typer.Argument(help="CSV with columns country,message_type,tier,price.")],
    name: Annotated[str, typer.Option(help="Card name; an existing card of this name gets a new version.")],
    currency: str = "CNY",
    default: Annotated[bool, typer.Option("--default", help="Make it the platform default for the currency.")] = False,
    account: Annotated[str | None, typer.Option(help="Make it this account's override card.")] = None,
) -> None:
    """Import prices from CSV as a new rate card, or as a new version of the card with this name."""
    from sqlalchemy import select

    from hongyan.billing import rates
    from hongyan.billing.models import RateCard

    raw: list[dict[str, object]] = []
    with csv_file.open(encoding="utf-8-sig", newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                price = parse_amount(row.get("price") or "", signed=True)
            except AmountError as exc:
                raise typer.BadParameter(f"line {line}, column price: {exc}") from exc
            raw.append({"country": row.get("country") or "*", "message_type": row.get("message_type") or "*",
                        "tier": row.get("tier") or "*", "price_micros": price})
    rows = rates.validate_rates(raw)

    async def main(db: Database) -> int:
        async with db.write() as session:
            card = await session.scalar(select(RateCard).where(RateCard.name == name, RateCard.currency == currency.upper()))
            if card is None:
                card = await rates.create_rate_card(session, name=name, currency=currency, account_id=account,
                                                    is_default=default, audit_actor=actor_for_cli())
            version = await rates.add_version(session, rate_card_id=card.id, rates=rows, effective_from=None, note=None,
                                              actor="cli", audit_actor=actor_for_cli())
        typer.echo(f"rate card {card.id} ({card.name}, {card.currency}): version {version.id} with {len(rows)} rates")
        return 0

    _run(main)


@billing_cli.command("sweep")
def sweep() -> None:
    """Expire packages, send expiry notices and renew subscriptions now (workers do this periodically)."""
    from hongyan.billing import packages

    async def main(db: Database) -> int:
        report = await packages.sweep_once(db, get_settings())
        typer.echo(str(report))
        return 0

    _run(main)
