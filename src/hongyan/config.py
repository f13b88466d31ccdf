"""Settings: every HONGYAN_* environment variable, in one place, with safe defaults.

`docs/configuration.md` lists the same variables for operators; keep the two in step.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HONGYAN_", extra="ignore")

    # -- storage ------------------------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Directory for the SQLite file and local state.")
    database_url: str = Field(
        "",
        description="SQLAlchemy async URL. Empty: SQLite file <data_dir>/hongyan.db. "
        "Production: postgresql+asyncpg://user@host:5432/db",
    )
    db_pool_size: int = Field(10, description="Connection pool size (PostgreSQL).")

    # -- queue --------------------------------------------------------------------------------
    queue_url: str = Field(
        "memory://", description="memory:// (in-process; API and workers in one process) or "
        "amqp://user:password@host:5672/vhost (RabbitMQ: any number of API and worker processes; docs/production.md)"
    )
    queue_prefix: str = Field(
        "hongyan", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="RabbitMQ: queue names start with it (<prefix>.dispatch.verification …, <prefix>.dead); "
        "prefer a vhost per installation, this is for sharing one.",
    )
    queue_prefetch: int = Field(
        2, ge=1, le=1000, description="RabbitMQ: unacked notification/marketing items (≤ dispatch_chunk ids each) "
        "a worker holds per lane; low keeps work in the broker for other workers."
    )
    queue_verification_prefetch: int = Field(
        64, ge=1, le=10000, description="RabbitMQ: unacked verification items per worker (handled concurrently)."
    )
    codes_first_target_ms: float = Field(
        30.0, ge=0, description="Verification codes first: while codes take longer than this (p90 per stage over the "
        "last second, API request → published plus worker → submitted, summed), each process slows its notification "
        "and marketing submits down (docs/lanes.md, 'Codes first'). 0: off."
    )
    codes_first_min_tps: float = Field(
        200.0, ge=1, description="The lowest rate codes-first slows a process's notification and marketing submits to "
        "(per worker process, all its binds together)."
    )
    bind_lease_s: float = Field(
        15.0, gt=0, description="Production mode: an SMPP bind's lease in PostgreSQL (renewed every third of it); "
        "a dead worker's binds move to the others after this long."
    )
    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="SIGTERM: how long in-flight work may take to drain and commit before it is cut off."
    )

    # -- http ---------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the API and console listen on.")
    port: int = Field(8600, description="Port the API and console listen on.")
    public_url: str = Field("", description="URL users open (for links); default http://host:port")
    secret_key: str = Field(
        "",
        description="Signs console sessions and CSRF tokens. Empty: generated once into <data_dir>/secret_key.",
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, description="Largest accepted request body.")
    max_header_bytes: int = Field(16 * 1024, description="Largest accepted total size of request headers.")

    # -- security -----------------------------------------------------------------------------
    encryption: str = Field(
        "on",
        description="on: phone numbers and message content are sealed with AES-256-GCM at rest. off must be "
        "set explicitly (values written while off stay plaintext until `hongyan security re-encrypt`).",
    )
    encryption_keys: str = Field(
        "",
        description="Comma-separated <id>:<base64url 32-byte key> list; the first seals new data, the others "
        "only open old data (rotation). Empty: one key generated once into <data_dir>/encryption_keys. "
        "Create one with `hongyan security new-key`.",
    )
    blind_index_key: str = Field(
        "",
        description="base64url key (32+ bytes) of the HMAC blind index used to search by exact number. Empty: "
        "generated once into <data_dir>/blind_index_key. Changing it needs `hongyan security re-encrypt`.",
    )
    password_min_length: int = Field(10, ge=8, description="Shortest accepted password.")
    login_max_failures: int = Field(
        5, ge=1, description="Wrong passwords in a row (per email, or 4x this per IP) before a lockout."
    )
    login_lockout_s: int = Field(900, ge=1, description="How long a login lockout lasts (doubles on repeat).")
    api_rate_per_key: float = Field(
        200.0, ge=0, description="Requests per second one API key may make (0: unlimited); bursts of 2 s allowed."
    )
    api_rate_per_ip: float = Field(
        400.0, ge=0, description="Requests per second from one client IP across keys and the console (0: unlimited)."
    )
    redis_url: str = Field(
        "",
        description="redis://127.0.0.1:6379/0 to share API rate limits and HMAC nonces between API processes. "
        "Empty: each process keeps its own (fine for one process; N processes allow up to N× the rate).",
    )
    trusted_proxies: str = Field(
        "", description="Comma-separated CIDRs of reverse proxies whose X-Forwarded-For gives the client IP."
    )
    email_backend: str = Field(
        "outbox",
        description="outbox (emails kept in the database, readable by platform staff in the console) or smtp.",
    )
    smtp_url: str = Field("", description="smtp://user:pass@host:587 (STARTTLS) or smtps://…:465 for email_backend=smtp.")
    email_from: str = Field("Hongyan <no-reply@hongyan.local>", description="From address of account emails.")
    registration: str = Field(
        "open", description="open (anyone can sign up, after email verification) or invite (members are invited)."
    )

    # -- messaging ----------------------------------------------------------------------------
    default_region: str = Field("CN", description="Region (ISO 3166 alpha-2) for numbers without +country code.")
    max_batch_recipients: int = Field(10_000, description="Most recipients in one POST /v1/batches.")
    max_text_chars: int = Field(1_000, description="Longest message text (characters) after personalization.")
    default_validity_hours: int = Field(48, description="Validity period: a message not final by then expires.")
    quiet_hours: str = Field(
        "21:00-08:00",
        description="Platform default quiet window for marketing in the recipient's local time; 'off' disables.",
    )
    currency: str = Field("CNY", description="Currency of the default price list.")
    default_price_micros: int = Field(
        40_000,
        description="Price per segment in micro-units (1/1,000,000) when no rate card matches (¥0.04); "
        "operators normally publish a rate card instead.",
    )

    # -- campaigns ----------------------------------------------------------------------------
    default_time_zone: str = Field(
        "Asia/Shanghai", description="Time zone of campaign schedules when a campaign names none (IANA name)."
    )
    campaign_chunk: int = Field(2_000, ge=10, le=10_000, description="Contacts per campaign materialization transaction.")
    campaign_build_ahead: int = Field(
        20_000, ge=0, description="A campaign run is not built further while this many of its messages are built "
        "and not yet released (paces the build with the sending; 0: build every run as fast as possible)."
    )
    campaign_release_window: int = Field(
        10_000, ge=100, description="Most campaign messages released to the dispatch queue and not yet taken "
        "(keeps pause and cancel prompt, and verification codes ahead)."
    )
    campaign_misfire_grace_s: float = Field(
        3600.0, ge=0, description="An occurrence the scheduler reaches later than this is skipped (recorded as a "
        "`missed` run) instead of sent late."
    )
    campaign_lease_s: float = Field(
        15.0, gt=1, description="The campaign scheduler's leader lease: another worker takes over this long after "
        "the leader stopped renewing."
    )
    campaign_poll_s: float = Field(0.2, gt=0, description="How often the leader fires, builds and releases campaign runs.")

    # -- billing ------------------------------------------------------------------------------
    min_recharge_micros: int = Field(10_000_000, description="Smallest customer recharge (¥10).")
    recharge_bonus_rules: str = Field(
        "", description='Recharge bonus tiers, "amount=percent,…" in currency units, e.g. "1000=5,5000=8".'
    )
    bootstrap_credit_micros: int = Field(
        100_000_000, description="Trial credit (bonus) for the account created on first start (¥100), so the "
        "embedded sandbox can send at once; 0 for none."
    )
    payment_provider: str = Field(
        "sandbox",
        description="Payment provider for customer recharges: sandbox (no real money: customers can credit "
        "themselves, for trials only) or none (operator top-ups only). Set none in production until a real "
        "provider is configured.",
    )
    payment_order_ttl_hours: int = Field(
        24, description="Recharge orders not paid within this many hours show as expired (a late payment is still credited)."
    )
    package_expiry_notice_days: int = Field(7, description="Days before a package expires that `package.expiring` is sent.")
    billing_sweep_s: float = Field(60.0, description="Seconds between package expiry / subscription renewal sweeps.")
    privacy_sweep_s: float = Field(
        3600.0, gt=0, description="Seconds between retention sweeps (content past an account's retention_days is purged)."
    )

    # -- contact imports ----------------------------------------------------------------------
    import_max_bytes: int = Field(200 * 1024 * 1024, gt=0, description="Largest contact file (CSV, XLSX, XLS) accepted for import.")
    import_poll_s: float = Field(1.0, gt=0, description="How often workers look for queued contact imports.")
    import_chunk_rows: int = Field(
        2000, ge=1, le=10_000, description="Rows of a contact file imported (and progress committed) per transaction."
    )

    # -- compliance ---------------------------------------------------------------------------
    document_max_bytes: int = Field(
        5 * 1024 * 1024, gt=0, description="Largest supporting document (PDF, PNG, JPEG) for signatures, templates, KYC."
    )
    signature_required: bool = Field(
        False,
        description="Every message must carry an approved signature 【…】 (mainland China rule); off: optional, "
        "but a signature that is given must still be approved.",
    )
    kyc_required: bool = Field(
        True, description="Accounts without approved enterprise verification are limited (see unverified_*)."
    )
    unverified_daily_limit: int = Field(
        20, ge=0, description="Messages per day an account without approved verification may send (UTC day)."
    )
    unverified_max_numbers: int = Field(
        5, ge=0, description="Distinct recipients per day an unverified account may send to (its own test phones)."
    )
    marketing_daily_cap: int = Field(
        0, ge=0, description="Platform cap of marketing messages per recipient number per account and day (0: none)."
    )

    # -- verification (OTP) ---------------------------------------------------------------------
    verify_code_length: int = Field(6, ge=4, le=10, description="Default verification code length (4–10 digits).")
    verify_ttl_s: int = Field(300, ge=30, le=3600, description="Default lifetime of a verification code (seconds).")
    verify_max_attempts: int = Field(5, ge=1, le=20, description="Wrong checks before a verification fails.")
    verify_resend_cooldown_s: int = Field(60, ge=0, description="Seconds before a code may be sent again to a number.")
    verify_per_number_hour: int = Field(5, ge=1, description="Verification codes per number per hour.")
    verify_per_number_day: int = Field(10, ge=1, description="Verification codes per number per day.")
    verify_per_ip_hour: int = Field(30, ge=1, description="Verifications started per client IP per hour.")
    verify_per_key_minute: int = Field(600, ge=1, description="Verifications started per API key per minute.")
    verify_velocity_window_s: int = Field(
        600, ge=60, description="Pumping protection: the recent window compared with the baseline (seconds)."
    )
    verify_velocity_factor: float = Field(
        8.0, gt=1, description="Pumping protection: a destination whose recent rate exceeds its baseline by this factor "
        "(and verify_velocity_min) is throttled."
    )
    verify_velocity_min: int = Field(30, ge=1, description="Pumping protection: verifications in the window below which "
                                     "no spike is declared.")
    verify_conversion_floor: float = Field(
        0.2, ge=0, le=1, description="Pumping protection: a destination whose approved/started ratio falls below this "
        "(over verify_conversion_min_started or more) is throttled."
    )
    verify_conversion_min_started: int = Field(30, ge=1, description="Verifications needed before conversion is judged.")
    verify_throttle_minutes: int = Field(60, ge=1, description="How long an automatic destination throttle lasts.")
    verify_countries: str = Field(
        "", description="Pumping protection: ISO countries verification codes may go to, comma-separated "
        "(e.g. \"CN,HK,MO,TW\"); empty: every country. Accounts can narrow it, never widen it."
    )

    # -- workers ------------------------------------------------------------------------------
    embedded_workers: bool = Field(True, description="`serve` also runs dispatcher, intake, webhooks, scheduler.")
    dispatch_chunk: int = Field(500, description="Message ids per queue item (outbox chunk).")
    outbox_poll_ms: int = Field(200, description="How often the relay polls the outbox when idle.")
    max_submit_attempts: int = Field(
        5, ge=1, le=100,
        description="Carrier answers with a temporary error (e.g. ESME_RSYSERR) this many times: the message fails.",
    )
    channel_reload_s: float = Field(
        5.0, gt=0, description="How often workers check for changed channels and routes (operator edits)."
    )

    # -- sandbox carrier ----------------------------------------------------------------------
    sandbox_delay_ms: int = Field(200, description="Sandbox: delay before a delivery receipt.")
    sandbox_outcomes: str = Field(
        "delivered:95,undelivered:3,rejected:2",
        description="Sandbox: outcome mix for ordinary numbers (deterministic per message id).",
    )

    # -- webhooks -----------------------------------------------------------------------------
    webhook_timeout_s: float = Field(10.0, description="Timeout of one webhook POST.")
    webhook_retry_hours: int = Field(24, description="How long failed webhooks are retried.")
    webhook_retry_base_s: float = Field(10.0, description="First retry delay; doubles each attempt, capped at 1 h.")
    webhook_concurrency: int = Field(16, description="Parallel webhook POSTs per worker.")

    # -- logging ------------------------------------------------------------------------------
    log_level: str = Field("INFO", description="RFC 5424 severity name: DEBUG, INFO, NOTICE, WARNING, ERROR.")
    log_format: Literal["text", "json"] = Field(
        "text", description="text (one readable line) or json (one JSON object per line); phone numbers masked in both."
    )
    metrics_refresh_s: float = Field(
        15.0, gt=0, description="How often each process reads message counts and the webhook backlog for /metrics."
    )

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'hongyan.db').resolve()}"

    @property
    def effective_public_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def effective_secret_key(self) -> str:
        """The configured key, or one generated once and kept in the data directory."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        cached = _GENERATED_KEYS.get(str(path))
        if cached is not None:  # read once per process: verification codes hash with it on every start
            return cached
        if path.exists():
            key = path.read_text().strip()
            _GENERATED_KEYS[str(path)] = key
            return key
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key


_GENERATED_KEYS: dict[str, str] = {}  # <data_dir>/secret_key → its content (the file never changes once written)


@lru_cache
def get_settings() -> Settings:
    return Settings()
