"""`hongyan` command line: serve, worker, migrate, admin, send."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer

from hongyan.accounts.service import Bootstrap
from hongyan.audit.cli import audit_cli
from hongyan.audit.service import actor_for_cli
from hongyan.billing.cli import billing_cli
from hongyan.config import Settings, get_settings
from hongyan.core import crypto
from hongyan.db.engine import Database
from hongyan.ops.encryption import security_cli
from hongyan.ops.gc_tuning import freeze_startup_objects
from hongyan.ops.logging import configure_logging
from hongyan.privacy.cli import privacy_cli

app = typer.Typer(help="鸿雁 Hongyan: a self-hostable online SMS platform.", no_args_is_help=True,
                  add_completion=False)
admin = typer.Typer(help="Accounts, users and API keys.", no_args_is_help=True)
app.add_typer(admin, name="admin")
channel_cli = typer.Typer(help="Carrier channels (SMPP binds, sandbox).", no_args_is_help=True)
app.add_typer(channel_cli, name="channel")
route_cli = typer.Typer(help="Routes: which channel carries which traffic.", no_args_is_help=True)
app.add_typer(route_cli, name="route")
app.add_typer(billing_cli, name="billing")
app.add_typer(security_cli, name="security")
app.add_typer(audit_cli, name="audit")
app.add_typer(privacy_cli, name="privacy")


def _logging(settings: Settings) -> None:
    configure_logging(settings)  # text or JSON lines, phone numbers masked (docs/observability.md)


def _migrate(settings: Settings) -> None:
    from hongyan.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # the keys are made with the database (embedded default), not later by whichever write comes first
    crypto.configure(crypto.keyring_from_settings(settings))
    upgrade(settings.effective_database_url)


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic)."""
    settings = get_settings()
    _migrate(settings)
    typer.echo(f"database is up to date: {_redact(settings.effective_database_url)}")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


async def _bootstrap(db: Database, settings: Settings) -> Bootstrap | None:
    from hongyan.accounts.service import bootstrap_if_empty
    from hongyan.channels.registry import ensure_sandbox_channel

    created = await bootstrap_if_empty(db, trial_credit_micros=settings.bootstrap_credit_micros)
    await ensure_sandbox_channel(db)
    return created


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (HONGYAN_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (HONGYAN_PORT).")] = None,
    workers: Annotated[bool, typer.Option("--workers/--no-workers", help="Run dispatch workers in this process.")] = True,
) -> None:
    """Start the API and console (and, by default, the workers and sandbox carrier) in one process."""
    import uvicorn

    from hongyan.app import create_app

    settings = get_settings()
    if host:
        settings.host = host
    if port:
        settings.port = port
    _logging(settings)
    _migrate(settings)
    first_start: list[Bootstrap | None] = []

    async def bootstrap(db: Database) -> int:
        first_start.append(await _bootstrap(db, settings))
        return 0

    _with_db(settings, bootstrap)
    created = first_start[0]
    url = settings.effective_public_url
    typer.echo("")
    typer.echo(f"  鸿雁 Hongyan {__import__('hongyan').__version__} is starting")
    typer.echo(f"  Console:   {url}/console")
    typer.echo(f"  API docs:  {url}/docs")
    typer.echo(f"  Database:  {_redact(settings.effective_database_url)}")
    if created is not None:
        typer.echo("")
        typer.echo("  First start: an administrator and an API key were created. They are shown only now:")
        typer.echo(f"    login:    {created.email}")
        typer.echo(f"    password: {created.password}")
        typer.echo(f"    API key:  {created.api_key}")
        typer.echo("  Try:")
        typer.echo(
            f"    curl -s {url}/v1/messages -H 'Authorization: Bearer {created.api_key}' "
            "-H 'Content-Type: application/json' -d '{\"to\":\"+8613800000001\",\"text\":\"你好,鸿雁\"}'"
        )
    else:
        typer.echo("  Log in with your existing account (reset: hongyan admin reset-password EMAIL).")
    typer.echo("", err=False)
    sys.stdout.flush()
    application = create_app(settings, run_workers=workers, freeze_gc=True)
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="warning", proxy_headers=False,
                log_config=None)  # client IP: api.client + HONGYAN_TRUSTED_PROXIES


@app.command()
def worker(
    lanes: Annotated[str, typer.Option(help="Lanes to dispatch: all, or e.g. verification / notification,marketing.")] = "all",
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus /metrics on this port (0: off).")] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of the metrics endpoint.")] = "127.0.0.1",
) -> None:
    """Run the workers (outbox relay, dispatch to carriers, receipts, webhooks, sweeps, campaign scheduler)
    without HTTP. Production mode: start any number of them on one or more machines against the same
    PostgreSQL and RabbitMQ; SIGTERM drains and stops within HONGYAN_SHUTDOWN_TIMEOUT_S."""
    from hongyan.dispatch.queue import LANE_NAMES, parse_lanes, queue_for
    from hongyan.dispatch.runtime import Runtime

    settings = get_settings()
    _logging(settings)
    try:
        lane_set = parse_lanes(lanes)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    if settings.queue_url.startswith("memory:"):
        typer.echo("note: HONGYAN_QUEUE_URL is memory://, so this worker shares nothing with `hongyan serve`; "
                   "production mode needs amqp://… (docs/production.md)", err=True)
    _migrate(settings)

    async def main() -> None:
        db = Database(settings.effective_database_url, pool_size=settings.db_pool_size,
                      name="hongyan-worker:" + ",".join(LANE_NAMES[lane] for lane in lane_set))
        queue = queue_for(settings, lanes=lane_set)
        runtime = Runtime(db, settings, queue, lanes=lane_set)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start()
        freeze_startup_objects()  # no collector pause walks what startup made (ops/gc_tuning.py)
        metrics = None
        if metrics_port:
            from hongyan.ops.metrics import start_metrics_server

            metrics = await start_metrics_server(metrics_host, metrics_port, runtime=runtime, db=db)
        typer.echo(f"worker running (lanes {','.join(map(str, lane_set))}, pid {os.getpid()}); SIGTERM to stop")
        sys.stdout.flush()
        await stop.wait()
        typer.echo("stopping: draining in-flight work")
        await runtime.stop()
        if metrics is not None:
            await metrics.close()
        await db.dispose()

    asyncio.run(main())


queue_cli = typer.Typer(help="The RabbitMQ work queues (production mode).", no_args_is_help=True)
app.add_typer(queue_cli, name="queue")


@queue_cli.command("status")
def queue_status() -> None:
    """Items waiting per queue (lanes and the dead-letter queue) and their consumers."""
    from hongyan.dispatch.rabbit import queue_status as status

    settings = get_settings()
    if settings.queue_url.startswith("memory:"):
        typer.echo("HONGYAN_QUEUE_URL is memory://: the in-process queue lives inside `hongyan serve`", err=True)
        raise typer.Exit(1)
    for name, count in asyncio.run(status(settings.queue_url, prefix=settings.queue_prefix)).items():
        typer.echo(f"{name}\t{count}")


@queue_cli.command("republish")
def queue_republish() -> None:
    """Publish every `queued` message again (after the broker lost its queues); duplicates are skipped."""
    from hongyan.dispatch.outbox import republish_queued

    settings = get_settings()

    async def main(db: Database) -> int:
        n = await republish_queued(db, chunk=settings.dispatch_chunk)
        typer.echo(f"{n} queued message(s) given to the outbox relay")
        return 0

    raise typer.Exit(_with_db(settings, main))


@queue_cli.command("dead")
def queue_dead(
    requeue: Annotated[bool, typer.Option("--requeue", help="Move them back to their lanes (after fixing the cause).")] = False,
    limit: Annotated[int, typer.Option(help="At most this many items.")] = 100,
) -> None:
    """Items that failed MAX_DELIVERIES times (poison messages): list them, or requeue them."""
    from hongyan.dispatch.rabbit import dead_letters

    settings = get_settings()
    if settings.queue_url.startswith("memory:"):
        typer.echo("HONGYAN_QUEUE_URL is memory://: there is no dead-letter queue", err=True)
        raise typer.Exit(1)
    items = asyncio.run(dead_letters(settings.queue_url, limit=limit, requeue=requeue, prefix=settings.queue_prefix))
    for item in items:
        typer.echo(f"{item['queue']}\tlane={item['lane']}\tattempts={item['attempts']}\tids={item['ids']}\t"
                   f"first={item['first_id']}")
    typer.echo(f"{len(items)} item(s) {'requeued' if requeue else 'in ' + settings.queue_prefix + '.dead'}")


@app.command()
def send(
    to: Annotated[str, typer.Option(help="Recipient(s), separated by comma/semicolon/newline.")],
    text: Annotated[str, typer.Option(help="Message text.")],
    account: Annotated[str | None, typer.Option(help="Account id (default: the first account).")] = None,
    message_type: Annotated[str, typer.Option("--type", help="verification | notification | marketing")] = "notification",
) -> None:
    """Send from the command line (stored like an API send; a running server or worker delivers it)."""
    from sqlalchemy import select

    from hongyan.accounts.models import Account
    from hongyan.messaging.numbers import split_recipients
    from hongyan.messaging.submit import Recipient, SubmitRequest, submit_batch

    settings = get_settings()
    _migrate(settings)

    async def main(db: Database) -> int:
        async with db.read() as session:
            query = select(Account).order_by(Account.created_at).limit(1)
            if account:
                query = select(Account).where(Account.id == account)
            acc = await session.scalar(query)
        if acc is None:
            typer.echo("no account: start `hongyan serve` once, or give --account", err=True)
            return 2
        request = SubmitRequest(text=text, recipients=[Recipient(to=n) for n in split_recipients(to)],
                                message_type=message_type, default_region=acc.default_region)
        result = await submit_batch(db, settings, request, account_id=acc.id, source="cli", currency=acc.currency,
                                    actor="cli")
        typer.echo(f"batch {result.batch_id}: {len(result.accepted)} accepted, {len(result.rejected)} rejected")
        for m in result.accepted:
            typer.echo(f"  {m.id}  {m.to}  {m.encoding} x{m.segments}")
        for r in result.rejected:
            typer.echo(f"  rejected #{r.index} {r.to}: {r.code} {r.message}")
        return 0

    raise typer.Exit(_with_db(settings, main))


@admin.command("create-user")
def create_user(
    email: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    account: Annotated[str | None, typer.Option(help="Existing account id; default: a new account.")] = None,
    role: str = "owner",
) -> None:
    """Create a console user."""
    from hongyan.accounts import service

    settings = get_settings()
    _migrate(settings)

    async def main(db: Database) -> int:
        async with db.write() as session:
            account_id = account or (await service.create_account(session, name=email)).id
            user = await service.create_user(session, email=email, password=password, account_id=account_id, role=role)
        typer.echo(f"user {user.id} ({email}) in account {account_id}")
        return 0

    raise typer.Exit(_with_db(settings, main))


@admin.command("reset-password")
def reset_password(email: str) -> None:
    """Set a new random password for a user and print it."""
    import secrets

    from sqlalchemy import update

    from hongyan.accounts.models import User
    from hongyan.accounts.service import hash_password

    async def main(db: Database) -> int:
        password = secrets.token_urlsafe(12)
        async with db.write() as session:
            result = await session.execute(
                update(User).where(User.email == email.lower()).values(password_hash=hash_password(password))
            )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            typer.echo(f"no user {email}", err=True)
            return 1
        typer.echo(f"new password for {email}: {password}")
        return 0

    raise typer.Exit(_with_db(get_settings(), main))


@admin.command("create-key")
def create_key(
    account: Annotated[str, typer.Option(help="Account id (acc_…).")],
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")] = "cli",
    scopes: Annotated[str, typer.Option(help="Comma-separated: send,read,billing,admin,operator")] = "send,read",
) -> None:
    """Create an API key; the key is printed once."""
    from hongyan.accounts import keys
    from hongyan.audit.service import actor_for_cli

    async def main(db: Database) -> int:
        async with db.write() as session:
            created = await keys.create_api_key(session, account_id=account, name=name,
                                                scopes=tuple(s.strip() for s in scopes.split(",") if s.strip()),
                                                allow_operator=True, actor=actor_for_cli())
        typer.echo(created.token)
        return 0

    raise typer.Exit(_with_db(get_settings(), main))


@admin.command("revoke-key")
def revoke_key(key_id: str, account: Annotated[str, typer.Option(help="Account id (acc_…).")]) -> None:
    """Revoke an API key."""
    from hongyan.accounts import keys
    from hongyan.audit.service import actor_for_cli

    async def main(db: Database) -> int:
        async with db.write() as session:
            await keys.revoke_api_key(session, account_id=account, key_id=key_id, actor=actor_for_cli())
        typer.echo(f"revoked {key_id}")
        return 0

    raise typer.Exit(_with_db(get_settings(), main))


def _parse_settings(pairs: list[str]) -> dict[str, object]:
    """`key=value` pairs; values that parse as JSON (numbers, true/false) keep that type."""
    import json

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


@channel_cli.command("add")
def channel_add(
    name: str,
    setting: Annotated[list[str], typer.Argument(help="Settings as key=value: host=… port=2775 system_id=… "
                                                      "password=… binds=2 window=50 tps=200 (docs/smpp.md)")],
    kind: Annotated[str, typer.Option(help="smpp or sandbox")] = "smpp",
    disabled: Annotated[bool, typer.Option(help="Create it disabled.")] = False,
) -> None:
    """Add a channel."""
    from hongyan.channels import service

    async def main(db: Database) -> int:
        async with db.write() as session:
            channel = await service.create_channel(session, name=name, kind=kind, config=_parse_settings(setting),
                                                   enabled=not disabled, actor=actor_for_cli())
        typer.echo(channel.id)
        return 0

    raise typer.Exit(_with_db(get_settings(), main))


@channel_cli.command("set")
def channel_set(
    channel: str,
    setting: Annotated[list[str] | None, typer.Argument(help="key=value pairs to change; key= removes")] = None,
    enable: Annotated[bool | None, typer.Option("--enable/--disable", help="Turn the channel on or off.")] = None,
) -> None:
    """Change a channel's settings (merged into the current ones) or enable/disable it."""
    from hongyan.channels import service

    async def main(db: Database) -> int:
        values = {k: (None if v == "" else v) for k, v in _parse_settings(setting or []).items()}
        async with db.write() as session:
            await service.update_channel(session, channel, config=values or None, enabled=enable,
                                         actor=actor_for_cli())
        typer.echo(f"updated {channel}")
        return 0

    raise typer.Exit(_with_db(get_settings(), main))


@channel_cli.command("list")
def channel_list() -> None:
    """List channels (passwords hidden)."""
    import json

    from hongyan.channels import service

    async def main(db: Database) -> int:
        async with db.read() as session:
            for c in await service.list_channels(session):
                state = "enabled" if c.enabled else "disabled"
                typer.echo(f"{c.id}  {c.name:<20} {c.kind:<8} {state:<9} {json.dumps(service.redact(c.config))}")
        return 0

    raise typer.Exit(_with_db(get_settings(), main))


@channel_cli.command("delete")
def channel_delete(channel: str) -> None:
    """Delete a channel that no route uses."""
    from hongyan.channels import service

    async def main(db: Database) -> int:
        async with db.write() as session:
            await service.delete_channel(session, channel, actor=actor_for_cli())
        typer.echo(f"deleted {channel}")
        return 0

    raise typer.Exit(_with_db(get_settings(), main))


@route_cli.command("add")
def route_add(
    channel: Annotated[str, typer.Argument(help="Channel id or name.")],
    priority: Annotated[int, typer.Option(help="Lower is tried first.")] = 100,
    weight: Annotated[int, typer.Option(help="Share among routes of equal rank.")] = 1,
    country: Annotated[list[str] | None, typer.Option(help="ISO country code; repeatable.")] = None,
    prefix: Annotated[list[str] | None, typer.Option(help="Number prefix, e.g. 86138; repeatable.")] = None,
    message_type: Annotated[list[str] | None, typer.Option("--type", help="verification|notification|marketing")] = None,
    account: Annotated[str | None, typer.Option(help="Only for this account (acc_…).")] = None,
    name: str = "",
) -> None:
    """Add a route."""
    from hongyan.channels import service

    async def main(db: Database) -> int:
        async with db.write() as session:
            route = await service.create_route(session, channel=channel, name=name, priority=priority, weight=weight,
                                               countries=country, prefixes=prefix, message_types=message_type,
                                               account_id=account, actor=actor_for_cli())
        typer.echo(route.id)
        return 0

    raise typer.Exit(_with_db(get_settings(), main))


@route_cli.command("list")
def route_list() -> None:
    """List routes in the order they are considered."""
    from hongyan.channels import service

    async def main(db: Database) -> int:
        async with db.read() as session:
            for r in await service.list_routes(session):
                typer.echo(f"{r.id}  channel={r.channel_id} priority={r.priority} weight={r.weight} "
                           f"countries={','.join(r.countries) or '*'} prefixes={','.join(r.prefixes) or '*'} "
                           f"types={','.join(r.message_types) or '*'} account={r.account_id or '*'}")
        return 0

    raise typer.Exit(_with_db(get_settings(), main))


@route_cli.command("delete")
def route_delete(route_id: str) -> None:
    """Delete a route."""
    from hongyan.channels import service

    async def main(db: Database) -> int:
        async with db.write() as session:
            await service.delete_route(session, route_id, actor=actor_for_cli())
        typer.echo(f"deleted {route_id}")
        return 0

    raise typer.Exit(_with_db(get_settings(), main))


def _with_db(settings: Settings, main: Callable[[Database], Awaitable[int]]) -> int:
    """Run one command against the database; a domain error becomes `error <code>: …` and exit code 1."""
    from hongyan.core.errors import HongyanError

    async def run() -> int:
        db = Database(settings.effective_database_url, name="hongyan-cli")
        try:
            return await main(db)
        except HongyanError as exc:
            typer.echo(f"error {exc.code}: {exc.message} ({exc.field})", err=True)
            return 1
        finally:
            await db.dispose()

    return asyncio.run(run())


if __name__ == "__main__":
    app()
