"""One SMPP 3.4 bind as an ESME (client): connection, bind, window, throttle, keepalive, reconnect.

`SmppSession.run()` keeps one TCP connection bound, reconnecting with exponential backoff and jitter.
`submit(pdu, lane=…)` sends a request when the window (outstanding requests, matched by sequence number)
and the TPS bucket allow, and returns the response; waiting requests get slots and tokens by lane, then
arrival (`pacing.py`), so a verification code overtakes a queued marketing chunk. ESME_RTHROTTLED and
ESME_RMSGQFUL pause the whole bind (doubling pause) and the PDU is sent again. If the link goes down
before the response arrives, `submit` raises `LinkDown`: the caller still owns the message (it was not
acknowledged) and may send it on another bind or return it to the queue — nothing handed to a session is
ever silently dropped.

deliver_sm / data_sm from the SMSC go to `on_deliver`, whose returned command_status is sent back in the
response only after the handler finished (for receipts: after they are committed), so an SMSC resends what
we could not store. Malformed PDUs get generic_nack (or an error response) instead of killing the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hongyan.channels.smpp import pdu as P
from hongyan.channels.smpp.pacing import PriorityWindow, TokenBucket
from hongyan.channels.smpp.pdu import FrameReader, Pdu, PduError

log = logging.getLogger(__name__)

DeliverHandler = Callable[[Pdu], Awaitable[int]]
THROTTLE_STATUSES = frozenset({P.ESME_RTHROTTLED, P.ESME_RMSGQFUL})


class LinkDown(Exception):
    """The request was not acknowledged: the bind is down or the connection dropped mid-window."""


@dataclass(slots=True)
class SessionConfig:
    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    bind: str = "transceiver"  # transmitter | receiver | transceiver
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    window: int = 10
    tps: float = 0.0  # per bind; 0 = unlimited
    enquire_link_s: float = 30.0
    response_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    throttle_pause_s: float = 0.2  # first pause after ESME_RTHROTTLED / ESME_RMSGQFUL; doubles to 5 s
    max_throttle_retries: int = 50
    tls: bool = False
    tls_verify: bool = True
    tls_ca_file: str | None = None

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SessionConfig:
        known = {f for f in cls.__slots__}  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(slots=True)
class SessionStats:
    connects: int = 0
    bind_failures: int = 0
    submitted: int = 0
    acked: int = 0
    errors: int = 0
    throttled: int = 0
    link_losses: int = 0
    delivers: int = 0
    enquire_links: int = 0
    malformed: int = 0
    last_error: str | None = None
    extra: dict[str, int] = field(default_factory=dict)


class SmppSession:
    def __init__(self, config: SessionConfig, *, name: str = "smpp", on_deliver: DeliverHandler | None = None,
                 on_state: Callable[[SmppSession], None] | None = None, gate: Any = None) -> None:
        self.config = config
        self.gate = gate  # dispatch.codes_first.BulkGate of this process: bulk PDUs slow down while codes are slow
        self.name = name
        self.on_deliver = on_deliver
        self.on_state = on_state
        self.stats = SessionStats()
        self._drained = asyncio.Event()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.bound = False
        self.bind_error: str | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._seq = 0
        self._window = PriorityWindow(config.window)  # slots and tokens go to verification codes first
        self._bucket = TokenBucket(config.tps)
        self._bound_event = asyncio.Event()
        self._closing = False
        self._stopped = asyncio.Event()
        self._paused_until = 0.0
        self._pause_s = config.throttle_pause_s
        self._last_rx = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._run_task: asyncio.Task[None] | None = None
        self._conn_lost = asyncio.Event()

    # -- public ----------------------------------------------------------------------------------------
    @property
    def can_submit(self) -> bool:
        return self.bound and self.config.bind != "receiver" and not self._closing

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._run_task is None:
            self._run_task = asyncio.create_task(self.run(), name=f"smpp-{self.name}")

    async def wait_bound(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._bound_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def submit(self, request: Pdu, *, lane: int = 1) -> Pdu:
        """Send a request (submit_sm, data_sm, …) and return its response; resend when throttled.

        `lane` is the message's lane (0 verification, 1 notification, 2 marketing): a lower lane gets the
        next free window slot and TPS token before requests of higher lanes that were waiting already."""
        for _attempt in range(self.config.max_throttle_retries + 1):
            resp = await self._request(request, lane)
            if resp.status not in THROTTLE_STATUSES:
                self._pause_s = self.config.throttle_pause_s
                return resp
            self.stats.throttled += 1
            now = time.monotonic()
            if self._paused_until <= now:  # one pause per throttling episode, doubling while it lasts
                self._paused_until = now + self._pause_s
                self._pause_s = min(self._pause_s * 2, 5.0)
        return resp

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests, let the window drain, unbind, close."""
        self._closing = True
        deadline = time.monotonic() + timeout
        if self._pending and self.bound:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), max(0.0, deadline - time.monotonic()))
        if self.bound and self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._send_request(Pdu("unbind")), timeout=min(2.0, self.config.response_timeout_s))
        self._stopped.set()
        self._bucket.close()
        self._close_connection()
        if self._run_task is not None:
            self._run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._run_task
        for task in list(self._tasks):
            task.cancel()

    # -- connection loop ---------------------------------------------------------------------------------
    async def run(self) -> None:
        delay = self.config.reconnect_min_s
        while not self._closing:
            try:
                bound = await self._connect_and_serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection refused, reset, TLS errors, …
                bound = False
                self._note_error(f"{type(exc).__name__}: {exc}")
            if self._closing:
                break
            if bound:
                delay = self.config.reconnect_min_s  # it worked for a while: start backing off again
            wait = delay * (0.5 + random.random())  # jitter: binds of a channel do not reconnect in step
            log.info("smpp %s: reconnecting in %.1f s (%s)", self.name, wait, self.stats.last_error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=wait)
            delay = min(delay * 2, self.config.reconnect_max_s)

    def _note_error(self, message: str) -> None:
        self.stats.last_error = message

    async def _connect_and_serve(self) -> bool:
        cfg = self.config
        ssl_ctx: ssl.SSLContext | None = None
        if cfg.tls:
            ssl_ctx = ssl.create_default_context(cafile=cfg.tls_ca_file)
            if not cfg.tls_verify:
                ssl_ctx.check_hostname = False
                ssl_ctx.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(cfg.host, cfg.port, ssl=ssl_ctx, limit=1 << 20), cfg.connect_timeout_s
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writer = writer
        self._conn_lost = asyncio.Event()
        self.stats.connects += 1
        self._last_rx = time.monotonic()
        read_task = asyncio.create_task(self._read_loop(reader))
        ok = False
        try:
            resp = await self._send_request(
                Pdu(f"bind_{cfg.bind}", system_id=cfg.system_id, password=cfg.password, system_type=cfg.system_type,
                    interface_version=cfg.interface_version, addr_ton=cfg.addr_ton, addr_npi=cfg.addr_npi,
                    address_range=cfg.address_range)
            )
            if resp.status != P.ESME_ROK:
                self.stats.bind_failures += 1
                self.bind_error = f"bind refused: {P.status_name(resp.status)}"
                self._note_error(self.bind_error)
                log.error("smpp %s: %s (check system_id/password of this channel)", self.name, self.bind_error)
                return False
            self.bind_error = None
            self.bound = True
            ok = True
            self._bound_event.set()
            self._state_changed()
            log.info("smpp %s: bound as %s to %s:%d", self.name, cfg.bind, cfg.host, cfg.port)
            keepalive = asyncio.create_task(self._keepalive())
            try:
                await asyncio.wait({read_task, asyncio.ensure_future(self._conn_lost.wait())},
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                keepalive.cancel()
            if not self._closing:
                self.stats.link_losses += 1
                log.warning("smpp %s: connection lost with %d requests in flight", self.name, len(self._pending))
            return ok
        finally:
            self.bound = False
            self._bound_event.clear()
            self._close_connection()
            read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await read_task
            self._fail_pending()
            if ok:
                self._state_changed()

    def _state_changed(self) -> None:
        if self.on_state is not None:
            try:
                self.on_state(self)
            except Exception:
                log.exception("smpp %s: state callback failed", self.name)

    def _close_connection(self) -> None:
        writer, self._writer = self._writer, None
        self._out = []  # bytes meant for this connection must never reach the next one
        self._conn_lost.set()
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        self._drained.set()
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(LinkDown(self.stats.last_error or "connection closed"))

    # -- requests ----------------------------------------------------------------------------------------
    def _next_sequence(self) -> int:
        self._seq = self._seq + 1 if self._seq < 0x7FFFFFFF else 1
        return self._seq

    async def _request(self, request: Pdu, lane: int = 1) -> Pdu:
        if not self.can_submit:
            raise LinkDown(self.bind_error or "not bound")
        await self._window.acquire(lane)
        try:
            pause = self._paused_until - time.monotonic()
            if pause > 0:  # the carrier asked the whole bind to slow down: every lane waits
                await asyncio.sleep(pause)
            await self._bucket.acquire(lane)
            if lane >= 1 and self.gate is not None:
                await self.gate.admit(lane)  # codes never wait here, and the window keeps a slot for them
            if not self.can_submit:
                raise LinkDown(self.bind_error or "not bound")
            return await self._send_request(request)
        finally:
            self._window.release(lane)

    async def _send_request(self, request: Pdu) -> Pdu:
        writer = self._writer
        if writer is None:
            raise LinkDown("not connected")
        seq = self._next_sequence()
        request.sequence = seq
        data = P.encode(request)  # a PduError here is the caller's bad input, raised before anything is sent
        fut: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            self._write_bytes(data)
            if request.command == "submit_sm" or request.command == "data_sm" or request.command == "submit_multi":
                self.stats.submitted += 1
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()
            return await asyncio.wait_for(fut, self.config.response_timeout_s)
        except TimeoutError:
            # the SMSC stopped answering: the connection is no longer trustworthy
            self._note_error(f"no response to {request.command} within {self.config.response_timeout_s} s")
            self._close_connection()
            raise LinkDown(self.stats.last_error) from None
        except (ConnectionError, OSError) as exc:
            self._note_error(f"{type(exc).__name__}: {exc}")
            self._close_connection()
            raise LinkDown(self.stats.last_error) from None
        finally:
            self._pending.pop(seq, None)
            if not self._pending:
                self._drained.set()

    def _write(self, pdu: Pdu) -> None:
        self._write_bytes(P.encode(pdu))

    def _write_bytes(self, data: bytes) -> None:
        """Queue bytes for the socket; everything queued in one loop iteration goes out in one send()
        (TCP_NODELAY is on, so without this every PDU would be its own syscall and segment)."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        writer = self._writer
        if writer is not None and out:
            writer.write(b"".join(out))

    # -- incoming ----------------------------------------------------------------------------------------
    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        frames = FrameReader()
        while True:
            data = await reader.read(65536)
            if not data:
                self._note_error("connection closed by the SMSC")
                return
            self._last_rx = time.monotonic()
            try:
                chunks = frames.feed(data)
            except PduError as exc:
                self.stats.malformed += 1
                self._note_error(f"framing lost: {exc}")
                log.error("smpp %s: %s; closing the connection", self.name, exc)
                return
            for raw in chunks:
                self._handle_frame(raw)

    def _handle_frame(self, raw: bytes) -> None:
        try:
            pdu = P.decode(raw)
        except PduError as exc:
            self.stats.malformed += 1
            log.warning("smpp %s: malformed PDU (%s): %s", self.name, P.status_name(exc.status), exc)
            if exc.command_id and exc.command_id & P.RESP:
                fut = self._pending.get(exc.sequence)  # a broken response still settles its request
                if fut is not None and not fut.done():
                    fut.set_result(Pdu("generic_nack", exc.sequence, exc.status))
                return
            self._write(Pdu("generic_nack", exc.sequence, exc.status))
            return
        if pdu.is_response:
            fut = self._pending.get(pdu.sequence)
            if fut is not None and not fut.done():
                if pdu.status == P.ESME_ROK:
                    self.stats.acked += int(pdu.command in ("submit_sm_resp", "data_sm_resp", "submit_multi_resp"))
                elif pdu.status not in THROTTLE_STATUSES:
                    self.stats.errors += 1
                fut.set_result(pdu)
            elif pdu.command == "generic_nack" and pdu.sequence == 0:
                log.warning("smpp %s: generic_nack %s", self.name, P.status_name(pdu.status))
            return
        command = pdu.command
        if command == "enquire_link":
            self._write(pdu.response())
        elif command in ("deliver_sm", "data_sm"):
            self.stats.delivers += 1
            task = asyncio.create_task(self._deliver(pdu))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif command == "unbind":
            self._write(pdu.response())
            self._note_error("the SMSC unbound the session")
            self._close_connection()
        elif command == "alert_notification":
            log.info("smpp %s: alert_notification for %s", self.name, pdu.get("source_addr"))
        elif command == "outbind":
            log.info("smpp %s: ignoring outbind on a bound session", self.name)
        else:
            self._write(Pdu("generic_nack", pdu.sequence, P.ESME_RINVCMDID))

    async def _deliver(self, pdu: Pdu) -> None:
        status = P.ESME_ROK
        if self.on_deliver is not None:
            try:
                status = await self.on_deliver(pdu)
            except Exception:
                log.exception("smpp %s: handling %s failed; asking the SMSC to resend", self.name, pdu.command)
                status = P.ESME_RX_T_APPN
        resp = pdu.response(status)
        if resp.command == "data_sm_resp" and status == P.ESME_ROK:
            resp.params["message_id"] = ""
        self._write(resp)

    async def _keepalive(self) -> None:
        interval = self.config.enquire_link_s
        while True:
            await asyncio.sleep(max(0.05, interval - (time.monotonic() - self._last_rx)))
            if time.monotonic() - self._last_rx < interval:
                continue
            try:
                await self._send_request(Pdu("enquire_link"))
                self.stats.enquire_links += 1
            except LinkDown:
                return
