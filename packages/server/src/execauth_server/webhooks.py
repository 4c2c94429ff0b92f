"""Webhook notifications of approval requests: a signed JSON POST per event.

Events: ``approval.requested``, ``approval.approved``, ``approval.rejected``,
``approval.expired``. Each webhook in the config's ``webhooks:`` list names the
events it wants. A delivery's body is canonical JSON (RFC 8785) with the request's
id, tool, principal, agent, proposal digest, reason codes, times, state, and
``console_url`` (``<public_url>/console/requests/<id>``). The arguments of the
proposal are not sent: a receiver links people to the console.

Headers::

    X-Execauth-Event: approval.requested
    X-Execauth-Delivery: whd_...            (the same on every retry of one delivery)
    X-Execauth-Timestamp: 1764700000        (Unix seconds of this attempt)
    X-Execauth-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

Receivers check a delivery with :func:`verify_signature`.

Delivery never runs on the request path: a transition writes a row into an outbox
(a SQLite file ``webhooks.db`` in the server's ``data_dir``) and wakes the delivery
threads. Rows survive a restart, so a pending delivery is sent after it; a delivery
cut off by a crash mid-attempt is sent again (at least once: receivers de-duplicate
on ``X-Execauth-Delivery``). 5xx, 408, 429, timeouts and connection errors are
retried with exponential back-off and jitter, bounded in attempts and in total time;
any other answer (a redirect included: redirects are never followed) ends the
delivery. A webhook's answer is read for at most 64 KiB and never interpreted:
nothing a receiver says can approve anything.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from execauth_core.canonical import canonicalize
from execauth_core.errors import ConfigurationError

from ._version import __version__

log = logging.getLogger("execauth.server.webhooks")

__all__ = [
    "EVENTS",
    "Outbox",
    "WebhookDispatcher",
    "WebhookSignatureError",
    "WebhookTarget",
    "parse_webhooks",
    "sign_payload",
    "verify_signature",
]

EVENTS = ("approval.requested", "approval.approved", "approval.rejected", "approval.expired")
_TRANSITION_EVENT = {
    "created": "approval.requested",
    "approved": "approval.approved",
    "rejected": "approval.rejected",
    "expired": "approval.expired",
}
_WEBHOOK_KEYS = {
    "name",
    "url",
    "secret",
    "secret_env",
    "secret_file",
    "events",
    "timeout",
    "max_attempts",
    "retry_delay",
    "retry_max_delay",
    "give_up_after",
}
RETENTION = 7 * 86_400
"""Seconds a delivered or given-up row stays in the outbox before it is pruned."""
MAX_RESPONSE_BYTES = 65_536
"""A webhook's answer is read for at most this much, then the connection is closed."""
_RETRY_STATUSES = {408, 429}
_SYSTEM_RANDOM = secrets.SystemRandom()


class WebhookSignatureError(ValueError):
    """A delivery's signature headers are missing, stale, or do not verify."""


@dataclass(frozen=True)
class WebhookTarget:
    """One configured webhook."""

    name: str
    url: str
    secret: bytes = field(repr=False)
    events: tuple[str, ...] = EVENTS
    timeout: float = 5.0
    """Seconds for one attempt, connect to last byte read."""
    max_attempts: int = 6
    retry_delay: float = 1.0
    """Back-off before the 2nd attempt; it doubles each time (with jitter), up to ``retry_max_delay``."""
    retry_max_delay: float = 300.0
    give_up_after: float = 86_400.0
    """Seconds after the event past which no further attempt is made."""


# -- signing --------------------------------------------------------------------


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign_payload(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Execauth-Signature`` value: ``sha256=`` + hex HMAC-SHA256 over ``"<timestamp>.<body>"``."""
    mac = hmac.new(_key(secret), str(int(timestamp)).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> None:
    """Check a webhook delivery: for receivers.

    Args:
        secret: the webhook's shared secret.
        body: the raw request body, exactly as received (before any JSON parsing).
        headers: the request headers (any mapping; names are matched case-insensitively).
        tolerance: seconds the ``X-Execauth-Timestamp`` may be from ``now``; an older
            delivery is refused (a captured request cannot be replayed later).
        now: the receiver's clock (Unix seconds), default the system clock.

    Raises:
        WebhookSignatureError: a header is missing or malformed, the timestamp is out
            of tolerance, or the signature does not match (compared in constant time).
    """
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    stamp = lower.get("x-execauth-timestamp")
    given = lower.get("x-execauth-signature")
    if not stamp or not given:
        raise WebhookSignatureError("missing X-Execauth-Timestamp or X-Execauth-Signature")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise WebhookSignatureError("X-Execauth-Timestamp is not Unix seconds")
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance:
        raise WebhookSignatureError(f"X-Execauth-Timestamp is more than {tolerance} s from now")
    if not isinstance(body, (bytes, bytearray)):
        raise WebhookSignatureError("verify the raw body bytes, not parsed JSON")
    expected = sign_payload(secret, bytes(body), int(stamp))
    if not hmac.compare_digest(expected.encode("ascii"), given.strip().encode("utf-8", "replace")):
        raise WebhookSignatureError("the signature does not match the body")


# -- config ---------------------------------------------------------------------


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where} must be an http:// or https:// URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{where} must be an http:// or https:// URL with a host, not {value[:100]!r}")
    if any(c.isspace() for c in value):
        raise ConfigurationError(f"{where} must not contain spaces")
    return value


def _number(value: Any, where: str, lo: float, hi: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo < value <= hi:
        raise ConfigurationError(f"{where} must be a number of seconds within ({lo}, {hi}]")
    return float(value)


def _secret(raw: Mapping[str, Any], where: str, base: Path) -> bytes:
    given = [k for k in ("secret", "secret_env", "secret_file") if raw.get(k) is not None]
    if len(given) != 1:
        raise ConfigurationError(f"{where}: give exactly one of secret_file, secret_env or secret")
    kind = given[0]
    value = raw[kind]
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}.{kind} must be a non-empty string")
    if kind == "secret_env":
        found = os.environ.get(value)
        if not found:
            raise ConfigurationError(f"{where}.secret_env: the environment variable {value} is not set")
        secret = found.strip()
    elif kind == "secret_file":
        p = Path(value) if Path(value).is_absolute() else base / value
        try:
            secret = p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"{where}.secret_file: {p}: {exc.strerror}") from None
    else:
        secret = value
    if len(secret) < 16:
        raise ConfigurationError(f"{where}: the webhook secret must be at least 16 characters")
    return secret.encode("utf-8")


def parse_webhooks(data: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """The ``webhooks`` list and ``public_url`` of a config document.

    Raises:
        ConfigurationError: naming the first problem.
    """
    public = data.get("public_url")
    public_url = None if public is None else _url(public, "public_url").rstrip("/")
    raw_list = data.get("webhooks") or []
    if not isinstance(raw_list, list):
        raise ConfigurationError("webhooks must be a list of {name, url, secret_file, events, ...}")
    targets: list[WebhookTarget] = []
    for i, raw in enumerate(raw_list):
        where = f"webhooks[{i}]"
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{where} must be a mapping")
        extra = sorted(set(raw) - _WEBHOOK_KEYS)
        if extra:
            raise ConfigurationError(f"{where}: unknown key(s): {', '.join(map(str, extra))}")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{where}.name must be a non-empty string")
        if name in {t.name for t in targets}:
            raise ConfigurationError(f"{where}: duplicate webhook name {name!r}")
        events = raw.get("events", list(EVENTS))
        if not isinstance(events, list) or not events or not all(e in EVENTS for e in events):
            raise ConfigurationError(f"{where}.events is a non-empty list of: {', '.join(EVENTS)}")
        attempts = raw.get("max_attempts", 6)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 50:
            raise ConfigurationError(f"{where}.max_attempts must be an integer within 1..50")
        targets.append(
            WebhookTarget(
                name=name,
                url=_url(raw.get("url"), f"{where}.url"),
                secret=_secret(raw, where, base),
                events=tuple(dict.fromkeys(events)),
                timeout=_number(raw.get("timeout", 5.0), f"{where}.timeout", 0, 120),
                max_attempts=attempts,
                retry_delay=_number(raw.get("retry_delay", 1.0), f"{where}.retry_delay", 0, 3600),
                retry_max_delay=_number(raw.get("retry_max_delay", 300.0), f"{where}.retry_max_delay", 0, 86_400),
                give_up_after=_number(raw.get("give_up_after", 86_400.0), f"{where}.give_up_after", 0, 7 * 86_400),
            )
        )
    return {"webhooks": tuple(targets), "public_url": public_url}


# -- the outbox -----------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One outbox row."""

    id: str
    webhook: str
    event: str
    body: bytes
    created_at: float
    next_at: float
    attempts: int
    state: str
    last_status: int | None
    last_error: str | None


class Outbox:
    """Deliveries waiting, sent or given up, in a SQLite file (WAL; several worker
    processes of one server share it, and a row is claimed by one of them at a time)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        from execauth_core.stores.sqlite import _connect

        # The stores' own opener: WAL (retried while another worker switches the same
        # new file), synchronous=NORMAL, a busy timeout.
        self._conn = _connect(self.path, 5.0)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS webhook_deliveries (id TEXT PRIMARY KEY, webhook TEXT NOT NULL, "
            "event TEXT NOT NULL, body BLOB NOT NULL, created_at REAL NOT NULL, next_at REAL NOT NULL, "
            "attempts INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'pending', "
            "lease_until REAL NOT NULL DEFAULT 0, last_status INTEGER, last_error TEXT)"
        )
        self._conn.execute("CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (state, next_at)")

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[list[Any], int]:
        with self._lock:
            cur = self._conn.execute(sql, params)
            return cur.fetchall(), cur.rowcount

    def add(self, delivery_id: str, webhook: str, event: str, body: bytes, now: float) -> None:
        self._run(
            "INSERT INTO webhook_deliveries (id, webhook, event, body, created_at, next_at) VALUES (?, ?, ?, ?, ?, ?)",
            (delivery_id, webhook, event, body, now, now),
        )

    def claim(self, now: float, lease: float) -> Delivery | None:
        """Take one due delivery for ``lease`` seconds (a compare-and-set on its lease)."""
        rows, _ = self._run(
            "SELECT id, lease_until FROM webhook_deliveries WHERE state = 'pending' AND next_at <= ? "
            "AND lease_until <= ? ORDER BY next_at LIMIT 8",
            (now, now),
        )
        for rid, old in rows:
            _, n = self._run(
                "UPDATE webhook_deliveries SET lease_until = ? WHERE id = ? AND state = 'pending' AND lease_until = ?",
                (now + lease, rid, old),
            )
            if n == 1:
                return self.get(rid)
        return None

    def next_due(self) -> float | None:
        rows, _ = self._run("SELECT MIN(MAX(next_at, lease_until)) FROM webhook_deliveries WHERE state = 'pending'")
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    def get(self, delivery_id: str) -> Delivery | None:
        rows, _ = self._run(
            "SELECT id, webhook, event, body, created_at, next_at, attempts, state, last_status, last_error "
            "FROM webhook_deliveries WHERE id = ?",
            (delivery_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return Delivery(
            id=r[0],
            webhook=r[1],
            event=r[2],
            body=bytes(r[3]),
            created_at=float(r[4]),
            next_at=float(r[5]),
            attempts=int(r[6]),
            state=r[7],
            last_status=r[8],
            last_error=r[9],
        )

    def all(self) -> list[Delivery]:
        rows, _ = self._run("SELECT id FROM webhook_deliveries ORDER BY created_at, id")
        return [d for (rid,) in rows if (d := self.get(rid)) is not None]

    def attempted(self, delivery_id: str, *, state: str, next_at: float, status: int | None, error: str | None) -> None:
        self._run(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, state = ?, next_at = ?, lease_until = 0, "
            "last_status = ?, last_error = ? WHERE id = ?",
            (state, next_at, status, error, delivery_id),
        )

    def prune(self, before: float) -> int:
        """Forget delivered and given-up rows created before ``before`` (the log keeps their outcome)."""
        _, n = self._run(
            "DELETE FROM webhook_deliveries WHERE state IN ('delivered', 'failed') AND created_at < ?", (before,)
        )
        return n

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# -- delivery -------------------------------------------------------------------


class _Retry(Exception):
    def __init__(self, status: int | None, error: str, retry_after: float | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.retry_after = status, error, retry_after


class _GiveUp(Exception):
    def __init__(self, status: int | None, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def backoff(target: WebhookTarget, attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed attempts: the cap doubles each time, and
    the wait is drawn from its upper half (never shorter than half the cap)."""
    cap = min(target.retry_max_delay, target.retry_delay * (2 ** (attempts - 1)))
    return float(cap / 2 + _SYSTEM_RANDOM.uniform(0, cap / 2))


class WebhookDispatcher:
    """Turns approval transitions into outbox rows and delivers them from background threads.

    Args:
        targets: the configured webhooks.
        outbox_path: the SQLite file for the outbox.
        public_url: the server's public base URL (for ``console_url``), or ``None``.
        threads: concurrent deliveries (a slow webhook holds one thread for at most its timeout).
        sweep: called every ``sweep_interval`` seconds from a delivery thread (the server
            uses it to expire overdue requests, which emits ``approval.expired``).
    """

    def __init__(
        self,
        targets: tuple[WebhookTarget, ...],
        outbox_path: str | os.PathLike[str],
        *,
        public_url: str | None,
        threads: int = 4,
        sweep: Callable[[], None] | None = None,
        sweep_interval: float = 5.0,
        idle_poll: float = 1.0,
    ) -> None:
        import httpx

        self.targets = {t.name: t for t in targets}
        self.public_url = public_url
        self.outbox = Outbox(outbox_path)
        self.stats: Counter[str] = Counter()
        """``delivered``, ``retried``, ``failed``, ``dropped`` (could not be queued),
        each also per webhook as ``<outcome>:<name>``."""
        self._sweep = sweep
        self._sweep_interval = sweep_interval
        self._next_sweep = time.monotonic() + sweep_interval
        self._idle_poll = idle_poll
        self._stop = threading.Event()
        self._cond = threading.Condition()
        # Redirects are never followed (a 3xx ends the delivery); no cookies kept.
        self._client = httpx.Client(follow_redirects=False, headers={"User-Agent": f"execauth-server/{__version__}"})
        self._threads = [
            threading.Thread(target=self._work, args=(i,), daemon=True, name=f"execauth-webhooks-{i}")
            for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    # the producer side ----------------------------------------------------------

    def console_url(self, request_id: str) -> str | None:
        return None if self.public_url is None else f"{self.public_url}/console/requests/{request_id}"

    def notify(self, record: Any, transition: str) -> None:
        """An :class:`~execauth_core.approvals.Approvals` listener: queue one delivery per
        webhook that wants this event. Never raises (a notification never fails a decision)."""
        event = _TRANSITION_EVENT.get(transition)
        if event is None:
            return
        for target in self.targets.values():
            if event not in target.events:
                continue
            delivery_id = "whd_" + secrets.token_urlsafe(16)
            payload = {
                "v": "execauth.webhook/1",
                "event": event,
                "delivery_id": delivery_id,
                "request_id": record.id,
                "state": record.state,
                "tool": record.tool,
                "principal": record.principal,
                "agent": record.agent,
                "proposal_digest": record.proposal_digest,
                "reason_codes": list(record.reason_codes),
                "created_at": record.created_at,
                "expires_at": record.expires_at,
                "decided_by": record.decided_by,
                "decided_at": record.decided_at,
                "console_url": self.console_url(record.id),
            }
            try:
                self.outbox.add(delivery_id, target.name, event, canonicalize(payload), time.time())
            except Exception as exc:  # noqa: BLE001 - the transition stands; the loss is logged and counted
                self._count("dropped", target.name)
                log.error("execauth-server: webhook %s: could not queue %s (%s)", target.name, event, exc)
        with self._cond:
            self._cond.notify_all()

    # the delivery side ----------------------------------------------------------

    def _count(self, outcome: str, name: str) -> None:
        self.stats[outcome] += 1
        self.stats[f"{outcome}:{name}"] += 1

    def _work(self, index: int) -> None:
        while not self._stop.is_set():
            try:
                if index == 0 and self._sweep is not None and time.monotonic() >= self._next_sweep:
                    self._next_sweep = time.monotonic() + self._sweep_interval
                    self.outbox.prune(time.time() - RETENTION)
                    self._sweep()
                delivery = self.outbox.claim(time.time(), self._lease())
                if delivery is not None:
                    self._attempt(delivery)
                    continue
                due = self.outbox.next_due()
                wait = self._idle_poll if due is None else min(self._idle_poll, max(0.0, due - time.time()))
                if index == 0 and self._sweep is not None:
                    wait = min(wait, max(0.0, self._next_sweep - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - a delivery thread never dies of one bad row
                log.error("execauth-server: webhook delivery loop: %s", type(exc).__name__)
                wait = self._idle_poll
            with self._cond:
                if not self._stop.is_set():
                    self._cond.wait(wait)

    def _lease(self) -> float:
        return 30.0 + max((t.timeout for t in self.targets.values()), default=5.0)

    def _attempt(self, delivery: Delivery) -> None:
        target = self.targets.get(delivery.webhook)
        if target is None:  # a webhook removed from the config since the row was queued
            self.outbox.attempted(delivery.id, state="failed", next_at=0, status=None, error="webhook not configured")
            log.warning(
                "execauth-server: webhook %s is no longer configured; delivery %s dropped",
                delivery.webhook,
                delivery.id,
            )
            return
        attempt = delivery.attempts + 1
        try:
            try:
                status = self._post(target, delivery)
            except (_Retry, _GiveUp):
                raise
            except Exception as exc:  # noqa: BLE001 - whatever a receiver provokes is one failed attempt
                raise _Retry(None, type(exc).__name__) from None
        except _Retry as retry:
            delay = backoff(target, attempt)
            if retry.retry_after is not None:
                delay = max(delay, min(retry.retry_after, target.retry_max_delay))
            next_at = time.time() + delay
            if attempt >= target.max_attempts or next_at - delivery.created_at > target.give_up_after:
                self.outbox.attempted(delivery.id, state="failed", next_at=0, status=retry.status, error=retry.error)
                self._count("failed", target.name)
                log.error(
                    "execauth-server: webhook %s: %s %s gave up after %d attempt(s): %s",
                    target.name,
                    delivery.event,
                    delivery.id,
                    attempt,
                    retry.error,
                )
            else:
                self.outbox.attempted(
                    delivery.id, state="pending", next_at=next_at, status=retry.status, error=retry.error
                )
                self._count("retried", target.name)
                log.warning(
                    "execauth-server: webhook %s: %s %s attempt %d failed (%s); next in %.1f s",
                    target.name,
                    delivery.event,
                    delivery.id,
                    attempt,
                    retry.error,
                    delay,
                )
        except _GiveUp as stop:
            self.outbox.attempted(delivery.id, state="failed", next_at=0, status=stop.status, error=stop.error)
            self._count("failed", target.name)
            log.error(
                "execauth-server: webhook %s: %s %s refused (%s); not retried",
                target.name,
                delivery.event,
                delivery.id,
                stop.error,
            )
        else:
            self.outbox.attempted(delivery.id, state="delivered", next_at=0, status=status, error=None)
            self._count("delivered", target.name)
            log.info(
                "execauth-server: webhook %s: %s %s delivered (HTTP %d, attempt %d)",
                target.name,
                delivery.event,
                delivery.id,
                status,
                attempt,
            )

    def _post(self, target: WebhookTarget, delivery: Delivery) -> int:
        import httpx

        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Execauth-Event": delivery.event,
            "X-Execauth-Delivery": delivery.id,
            "X-Execauth-Timestamp": str(stamp),
            "X-Execauth-Signature": sign_payload(target.secret, delivery.body, stamp),
        }
        deadline = time.monotonic() + target.timeout
        try:
            with self._client.stream(
                "POST", target.url, content=delivery.body, headers=headers, timeout=httpx.Timeout(target.timeout)
            ) as r:
                read = 0
                for chunk in r.iter_raw():
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BYTES or time.monotonic() > deadline:
                        break  # the answer is not needed; a huge or endless one is cut off
                status = r.status_code
                retry_after = r.headers.get("retry-after")
        except httpx.TimeoutException:
            raise _Retry(None, "timeout") from None
        except httpx.TransportError as exc:
            raise _Retry(None, type(exc).__name__) from None
        except Exception as exc:  # noqa: BLE001 - anything else is one failed attempt, bounded like the rest
            raise _Retry(None, type(exc).__name__) from None
        if 200 <= status < 300:
            return status
        if status >= 500 or status in _RETRY_STATUSES:
            after = float(retry_after) if retry_after and retry_after.isascii() and retry_after.isdigit() else None
            raise _Retry(status, f"HTTP {status}", after)
        if 300 <= status < 400:
            raise _GiveUp(status, f"HTTP {status}: redirects are not followed (fix the webhook url)")
        raise _GiveUp(status, f"HTTP {status}")

    def close(self, timeout: float = 2.0) -> None:
        """Stop the delivery threads; rows not yet delivered stay in the outbox for the next start."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        self._client.close()
        if not any(t.is_alive() for t in self._threads):
            self.outbox.close()
