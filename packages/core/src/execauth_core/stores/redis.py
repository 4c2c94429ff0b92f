"""Redis stores: one shared truth for many guard replicas.

Every operation is one atomic Redis command or Lua script, so replicas never
interleave inside an operation:

* replay: ``SET key NX PX ttl`` consumes a token id once; Redis expires it.
* audit: a Lua script appends only if the head is still the one the entry was
  hashed against (compare-and-set), so two writers can never fork the chain;
  the loser re-hashes against the new head and tries again.
* state: one Lua script checks every counter and applies all debits or none;
  the hold it records (with a TTL) makes retries and refunds idempotent.

Expiry is computed from the caller's clock (``expires_at - now``, plus a margin
for replicas whose clocks run behind), never from the Redis server's, so a
skewed server clock cannot shorten a token's replay protection. Durability is
the server's: run Redis with ``appendonly yes`` and ``appendfsync always`` (see
docs/deploying.md), or a restart can forget consumed ids.

Any client failure (refused, reset, timeout, error reply) raises
:class:`~execauth_core.errors.StoreUnavailable` within about ``timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import secrets
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..audit import GENESIS, AuditEntry, body_digest, body_template, make_body
from ..canonical import CanonicalizationError, canonicalize_trusted, loads_strict
from ..errors import AuditIntegrityError, ConfigurationError, StoreUnavailable
from ..tlog import Frontier, NodeKey, leaf_hash
from ..tokens import MAX_CLOCK_SKEW
from ._tree import TreeMixin
from .base import Debit, JointBase, window_start

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError("the Redis stores need the redis client: pip install 'execauth-core[redis]'") from exc

__all__ = ["DEFAULT_PREFIX", "DEFAULT_TIMEOUT", "RedisAuditLog", "RedisReplayStore", "RedisStateStore", "redis_client"]

DEFAULT_PREFIX = "execauth:"
DEFAULT_TIMEOUT = 2.0
_LOSSES_BEFORE_TURN = 2
# Lua numbers are doubles: beyond 2^53 a counter could not be compared exactly.
_MAX_EXACT = 2**53

# What a Redis client can raise for a failed or unknown outcome. ``OSError``
# covers socket errors that slip past redis-py's own wrapping.
_FAILURES: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

_APPEND = """
-- KEYS[1] head hash, KEYS[2] entry list, KEYS[3] turn lock, KEYS[4] Merkle tree nodes,
-- KEYS[5..] token ids the entry records the use of (consumed with it, all or nothing;
-- none for a plain append)
-- ARGV: expected seq, expected prev digest, new digest, stored item, genesis digest,
--       the append call's token, turn lease (ms), "1" to claim the turn on a loss,
--       the frontier the nodes were computed on, the new frontier, the new nodes
--       (41-byte records: 9-byte field, 32-byte hash), then each id's time to live (ms)
-- Replies {status, head seq, head digest, index, frontier, tree size}: 1 appended (now
-- or by an earlier try of this call), 0 head moved (and the caller now holds the turn,
-- if it claimed a free one), 2 another writer holds the turn, 3 the id KEYS[4 + index]
-- was consumed already (nothing written), 4 the tree does not cover the log yet.
local holder = redis.call('GET', KEYS[3])
local cur = redis.call('HMGET', KEYS[1], 'seq', 'digest', 'writer', 'frontier', 'tsize')
local seq = tonumber(cur[1]) or 0
local dig = cur[2] or ARGV[5]
local fr = cur[4] or ''
local ts = tonumber(cur[5]) or 0
local function reply(status, s, d, index)
  return {status, s, d, index or 0, fr, ts}
end
if cur[3] == ARGV[6] then
  -- A retry whose first try landed (its reply was lost): done already.
  if holder == ARGV[6] then redis.call('DEL', KEYS[3]) end
  return reply(1, seq, dig)
end
if #KEYS > 4 then
  -- An id names the call that consumed it and the entry that call wrote, so a retry
  -- finds its own entry even after other writers moved the head on.
  local first = redis.call('GET', KEYS[5])
  local sp = first and string.find(first, ' ', 1, true)
  if sp and string.sub(first, 1, sp - 1) == ARGV[6] then
    local at = tonumber(string.sub(first, sp + 1))
    local item = redis.call('LINDEX', KEYS[2], at - 1)
    if holder == ARGV[6] then redis.call('DEL', KEYS[3]) end
    if not item then
      return redis.error_reply('execauth audit entry of a consumed id is missing')
    end
    return reply(1, at, string.sub(item, 1, string.find(item, ' ', 1, true) - 1))
  end
  for i = 5, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      if holder == ARGV[6] then redis.call('DEL', KEYS[3]) end
      return reply(3, seq, dig, i - 4)
    end
  end
end
if holder and holder ~= ARGV[6] then
  return reply(2, seq, dig)
end
if ts ~= seq then
  return reply(4, seq, dig)
end
if seq ~= tonumber(ARGV[1]) or dig ~= ARGV[2] or fr ~= ARGV[9] then
  -- A writer that keeps losing the race gets the next turn, so it cannot starve.
  if not holder and ARGV[8] == '1' then
    redis.call('SET', KEYS[3], ARGV[6], 'PX', ARGV[7])
  end
  return reply(0, seq, dig)
end
if redis.call('LLEN', KEYS[2]) ~= seq then
  return redis.error_reply('execauth audit list length differs from its head record')
end
redis.call('RPUSH', KEYS[2], ARGV[4])
local nodes = ARGV[11]
for j = 1, #nodes, 41 do
  redis.call('HSET', KEYS[4], string.sub(nodes, j, j + 8), string.sub(nodes, j + 9, j + 40))
end
redis.call('HSET', KEYS[1], 'seq', seq + 1, 'digest', ARGV[3], 'writer', ARGV[6],
  'frontier', ARGV[10], 'tsize', seq + 1)
for i = 5, #KEYS do
  redis.call('SET', KEYS[i], ARGV[6] .. ' ' .. string.format('%d', seq + 1), 'PX', ARGV[i + 7])
end
if holder then
  redis.call('DEL', KEYS[3])
end
fr, ts = ARGV[10], seq + 1
return reply(1, seq + 1, ARGV[3])
"""

_BUILD = """
-- KEYS[1] head hash, KEYS[2] tree nodes. ARGV: expected seq, expected tree size, new
-- tree size, new frontier, nodes (as in _APPEND). Extends the tree of a log written
-- before it existed; appends wait (status 4) until it covers the log.
local cur = redis.call('HMGET', KEYS[1], 'seq', 'tsize')
if (tonumber(cur[1]) or 0) ~= tonumber(ARGV[1]) or (tonumber(cur[2]) or 0) ~= tonumber(ARGV[2]) then
  return 0
end
local nodes = ARGV[5]
for j = 1, #nodes, 41 do
  redis.call('HSET', KEYS[2], string.sub(nodes, j, j + 8), string.sub(nodes, j + 9, j + 40))
end
redis.call('HSET', KEYS[1], 'frontier', ARGV[4], 'tsize', ARGV[3])
return 1
"""

_RELEASE = """
-- KEYS[1] turn lock; ARGV[1] caller's token
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_DEBIT = """
-- KEYS[1] hold, KEYS[2..] counters; ARGV[1] hold ttl, ARGV[2] hold items,
-- then per counter i: ARGV[3i] amount, ARGV[3i+1] limit, ARGV[3i+2] ttl
local held = redis.call('GET', KEYS[1])
if held then
  if held == ARGV[2] then return 0 end
  return -1
end
local n = #KEYS - 1
for i = 1, n do
  local used = tonumber(redis.call('GET', KEYS[i + 1]) or '0')
  if used + tonumber(ARGV[3 * i]) > tonumber(ARGV[3 * i + 1]) then
    return i
  end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i + 1], ARGV[3 * i])
  redis.call('EXPIRE', KEYS[i + 1], ARGV[3 * i + 2])
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[1])
return 0
"""

_REFUND = """
-- KEYS[1] hold. Counters whose window already ended are gone and stay gone.
local items = redis.call('GET', KEYS[1])
if not items then
  return 0
end
for _, item in ipairs(cjson.decode(items)) do
  local cur = redis.call('GET', item[1])
  if cur then
    local left = tonumber(cur) - tonumber(item[2])
    if left < 0 then left = 0 end
    redis.call('SET', item[1], string.format('%d', left), 'KEEPTTL')
  end
end
redis.call('DEL', KEYS[1])
return 1
"""


def redis_client(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> redis.Redis:
    """A Redis client configured to fail fast instead of hanging or retrying for long.

    Socket connect and read timeouts are ``timeout``. A dropped connection is retried
    once at once (a pooled connection is stale after a server restart); timeouts are
    never retried, so a silent server costs about ``timeout``, not a backoff series.

    Raises:
        ConfigurationError: the URL is not a Redis URL redis-py accepts.
    """
    if timeout <= 0:
        raise ConfigurationError("the Redis timeout must be positive")
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            retry_on_error=[redis.ConnectionError],
        )
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"bad Redis URL: {exc}") from exc


def _client(target: str | redis.Redis, timeout: float) -> redis.Redis:
    return redis_client(target, timeout=timeout) if isinstance(target, str) else target


def _ttl(until: int, now: int) -> int:
    # At least a second: SET/EXPIRE reject 0, and a key must outlive this call.
    return max(1, until - now)


class RedisReplayStore:
    """Consumed token ids as Redis keys that expire with their token.

    Args:
        target: a ``redis://`` / ``rediss://`` URL, or a configured
            ``redis.Redis`` (see :func:`redis_client`; its timeouts then apply).
        prefix: namespace of every key this store writes.
        timeout: seconds before an unanswered call becomes ``StoreUnavailable``.
        clock_margin: seconds an id is kept past ``expires_at``, for replicas whose
            clocks run behind this one's (the verifier's maximum clock skew).
    """

    def __init__(
        self,
        target: str | redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        clock_margin: int = MAX_CLOCK_SKEW,
    ) -> None:
        if clock_margin < 0:
            raise ConfigurationError("clock_margin cannot be negative")
        self._redis = _client(target, timeout)
        self._prefix = prefix + "jti:"
        self._margin = clock_margin

    def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
        try:
            # The id's expiry is relative to the caller's clock, the clock that
            # also judges the token's exp; the value only helps an operator read it.
            fresh = self._redis.set(self._prefix + token_id, str(expires_at), nx=True, px=self._ttl_ms(expires_at, now))
        except _FAILURES as exc:
            raise StoreUnavailable(f"Redis replay store: {exc}") from exc
        # A lost reply retried by the client finds the key set: the id reads as
        # already consumed, which denies (fail closed), never double-spends.
        return fresh is True

    def _ttl_ms(self, expires_at: int, now: int) -> int:
        # Kept past expires_at by the margin: a replica whose clock runs behind this
        # one's still accepts the token that long.
        return (_ttl(expires_at, now) + self._margin) * 1000

    def joint_with(self, audit_log: object) -> _RedisJoint | None:
        """The atomic consume-and-append for an audit log on the same Redis client
        (as :func:`~execauth_core.stores.urls.open_stores` makes them); else ``None``.

        Not on a Redis Cluster client: one script may only touch keys of one slot.
        """
        if (
            isinstance(audit_log, RedisAuditLog)
            and audit_log._redis is self._redis
            and not isinstance(self._redis, redis.RedisCluster)
        ):
            return _RedisJoint(self, audit_log)
        return None

    def close(self) -> None:
        self._redis.close()


class _RedisJoint(JointBase[RedisReplayStore, "RedisAuditLog"]):
    """Consume token ids and append the entry recording their use, in one script."""

    def _consume_and_append(
        self, ids: Sequence[tuple[str, int]], event: Mapping[str, Any], now: int
    ) -> AuditEntry | str:
        keys = [self._replay._prefix + token_id for token_id, _ in ids]
        ttls = [self._replay._ttl_ms(expires_at, now) for _, expires_at in ids]
        written = self._audit._write(event, keys, ttls)
        return written if isinstance(written, AuditEntry) else ids[written][0]


def _node_field(level: int, index: int) -> bytes:
    return struct.pack(">BQ", level, index)


def _pack_nodes(made: list[tuple[int, int, bytes]]) -> bytes:
    return b"".join(_node_field(level, index) + h for level, index, h in made)


class RedisAuditLog(TreeMixin):
    """A hash-linked log in a Redis list, with a head hash updated by the same script.

    The script also stores the Merkle tree: the full subtrees the new leaf completes
    (hashed here: Redis scripts have no SHA-256) go into a hash, and the frontier they
    were computed on must be the head's, so the tree moves with the chain or not at all.

    The entry's digest depends on the previous head, so it is computed here and
    handed to a compare-and-set script. A writer whose head moved re-hashes on
    the new head; one that keeps losing gets the next turn (a short lease the
    other writers wait for), so under contention every writer still gets through.
    """

    def __init__(
        self, target: str | redis.Redis, *, prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._redis = _client(target, timeout)
        # One hash tag, so a Redis Cluster keeps these keys in one slot.
        self._keys = [
            f"{prefix}{{audit}}:head",
            f"{prefix}{{audit}}:log",
            f"{prefix}{{audit}}:turn",
            f"{prefix}{{audit}}:tree",
        ]
        self._checkpoint_key = f"{prefix}{{audit}}:checkpoints"
        self._frontier = Frontier()
        self._build = self._redis.register_script(_BUILD)
        self._append = self._redis.register_script(_APPEND)
        self._release = self._redis.register_script(_RELEASE)
        self._timeout = timeout
        # A turn outlives a writer that died holding it by this much, at most.
        self._lease_ms = max(50, int(timeout * 500))
        self._head: tuple[int, str] = (0, GENESIS)

    def append(self, event: Mapping[str, Any]) -> AuditEntry:
        written = self._write(event, [], [])
        if not isinstance(written, AuditEntry):  # pragma: no cover - no ids, nothing to find consumed
            raise StoreUnavailable("Redis audit log: a plain append reported a consumed id")
        return written

    def _write(self, event: Mapping[str, Any], ids: list[str], ttls: list[int]) -> AuditEntry | int:
        """Append ``event``, consuming the id keys ``ids`` with it; returns the entry,
        or the index in ``ids`` of one consumed already (then nothing was written)."""
        a, b, c = body_template(event)  # a malformed event fails here, before any I/O
        seq, prev = self._head
        # Marks the head this call wrote, so a retry recognises its own entry even
        # when another writer appended an identical event.
        token = secrets.token_hex(12)
        tried: dict[str, AuditEntry] = {}
        waits = losses = 0
        deadline = time.monotonic() + self._timeout
        try:
            while True:
                # Canonicalized once: a writer that lost the race only splices and re-hashes.
                raw = a + prev.encode("ascii") + b + str(seq + 1).encode("ascii") + c
                entry = AuditEntry(seq=seq + 1, digest=body_digest(raw), body=make_body(event, seq=seq + 1, prev=prev))
                tried[entry.digest] = entry
                item = entry.digest.encode("ascii") + b" " + raw
                # Optimistic at first; a turn only after repeated losses, since a
                # turn holder the OS deschedules makes every other writer wait.
                claim = "1" if losses >= _LOSSES_BEFORE_TURN else "0"
                frontier = self._frontier.copy() if self._frontier.size == seq else Frontier()
                old = frontier.pack()
                made = _pack_nodes(frontier.append(leaf_hash(raw)))
                reply = self._append(
                    keys=[*self._keys, *ids],
                    args=[
                        seq, prev, entry.digest, item, GENESIS, token, self._lease_ms, claim,
                        old, frontier.pack(), made, *ttls,
                    ],
                )
                status, head = int(reply[0]), (int(reply[1]), _text(reply[2]))
                self._take_frontier(reply)
                if status == 4:
                    self._build_tree()
                    seq, prev = self._head = head
                    continue
                if status == 3:
                    self._head = head
                    return int(reply[3]) - 1
                if status == 1:
                    done = tried.get(head[1])
                    if done is None or done.seq != head[0]:
                        raise StoreUnavailable("Redis audit log: the head does not hold the entry just written")
                    if done.seq > self._head[0]:
                        self._head = head
                    return done
                seq, prev = self._head = head
                losses += status == 0
                if time.monotonic() >= deadline:
                    self._give_up(token)
                    raise StoreUnavailable(f"Redis audit log: no turn to append within {self._timeout} s")
                if status == 2:
                    # The turn's holder needs about one round trip; back off in case it died.
                    time.sleep(min(0.001, 0.0001 * 2**waits))
                    waits += 1
        except _FAILURES as exc:
            # A turn this call may hold lapses with its lease: asking a server that
            # just failed to free it could only add another timeout.
            raise StoreUnavailable(f"Redis audit log: {exc}") from exc

    def _take_frontier(self, reply: Any) -> None:
        size = int(reply[5])
        try:
            self._frontier = Frontier.unpack(size, _raw(reply[4]))
        except ValueError:
            self._frontier = Frontier()  # damaged: the next append fails its check, the verifier says why

    def _build_tree(self) -> None:
        """Extend the tree over entries written before it existed, in chunks."""
        while True:
            fields = self._redis.hmget(self._keys[0], ["seq", "tsize", "frontier"])
            seq, tsize = int(fields[0] or 0), int(fields[1] or 0)
            if tsize >= seq:
                return
            try:
                frontier = Frontier.unpack(tsize, _raw(fields[2]))
            except ValueError as exc:
                raise StoreUnavailable(f"Redis audit log: the stored Merkle frontier is damaged: {exc}") from exc
            stop = min(seq, tsize + 4096)
            items = self._redis.lrange(self._keys[1], tsize, stop - 1)
            if len(items) != stop - tsize:
                raise StoreUnavailable("Redis audit log: entries are missing under the head record")
            made: list[tuple[int, int, bytes]] = []
            for item in items:
                _, _, raw = _raw(item).partition(b" ")
                made += frontier.append(leaf_hash(raw))
            args: list[int | bytes] = [seq, tsize, stop, frontier.pack(), _pack_nodes(made)]
            self._build(keys=[self._keys[0], self._keys[3]], args=args)

    def _fetch_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        if not keys:
            return {}
        try:
            values = self._redis.hmget(self._keys[3], [_node_field(*k) for k in keys])
        except _FAILURES as exc:
            raise StoreUnavailable(f"Redis audit log: {exc}") from exc
        return {k: _raw(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def tree_head(self) -> tuple[int, bytes]:
        try:
            fields = self._redis.hmget(self._keys[0], ["seq", "tsize", "frontier"])
            if int(fields[1] or 0) != int(fields[0] or 0):
                self._build_tree()
                fields = self._redis.hmget(self._keys[0], ["seq", "tsize", "frontier"])
        except _FAILURES as exc:
            raise StoreUnavailable(f"Redis audit log: {exc}") from exc
        try:
            frontier = Frontier.unpack(int(fields[1] or 0), _raw(fields[2]))
        except ValueError as exc:
            raise StoreUnavailable(f"Redis audit log: the stored Merkle frontier is damaged: {exc}") from exc
        return frontier.size, frontier.root()

    def add_checkpoint(self, note: str, size: int) -> None:
        try:
            self._redis.zadd(self._checkpoint_key, {note: size})
        except _FAILURES as exc:
            raise StoreUnavailable(f"Redis audit log: {exc}") from exc

    def checkpoints(self) -> list[str]:
        try:
            notes = self._redis.zrange(self._checkpoint_key, 0, -1)
        except _FAILURES as exc:
            raise StoreUnavailable(f"Redis audit log: {exc}") from exc
        return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in notes]

    def _give_up(self, token: str) -> None:
        # Out of time, not out of server: free a turn we may hold at once rather than
        # make the other writers wait out its lease.
        with contextlib.suppress(*_FAILURES):
            self._release(keys=self._keys[2:3], args=[token])

    def head(self) -> tuple[int, str]:
        try:
            seq, dig = self._redis.hmget(self._keys[0], ["seq", "digest"])
        except _FAILURES as exc:
            raise StoreUnavailable(f"Redis audit log: {exc}") from exc
        return (0, GENESIS) if seq is None else (int(seq), _text(dig))

    def entries(self, start: int = 1) -> Iterator[AuditEntry]:
        index = max(start, 1) - 1
        while True:
            try:
                page = self._redis.lrange(self._keys[1], index, index + 511)
            except _FAILURES as exc:
                raise StoreUnavailable(f"Redis audit log: {exc}") from exc
            for item in page:
                index += 1
                yield _parse_item(index, item if isinstance(item, bytes) else item.encode())
            if len(page) < 512:
                return

    def __iter__(self) -> Iterator[AuditEntry]:
        return self.entries()

    def close(self) -> None:
        self._redis.close()


def _raw(value: Any) -> bytes:
    if value is None:
        return b""
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _text(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _parse_item(seq: int, item: bytes) -> AuditEntry:
    dig, sep, raw = item.partition(b" ")
    if not sep:
        raise AuditIntegrityError(seq, "stored entry is malformed")
    try:
        body = loads_strict(raw)
    except CanonicalizationError as exc:
        raise AuditIntegrityError(seq, f"stored body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise AuditIntegrityError(seq, "stored body is not an object")
    return AuditEntry(seq=seq, digest=dig.decode("ascii", "replace"), body=body)


class RedisStateStore:
    """Budgets and rate counters as Redis integers that expire with their window.

    ``debit`` is one Lua script: every counter is checked, and only if all fit
    are all incremented and the hold recorded (with a TTL until the last
    window ends), so a retry of the same hold charges nothing twice (and a hold
    id reused for different debits is refused).
    """

    def __init__(
        self, target: str | redis.Redis, *, prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._redis = _client(target, timeout)
        self._prefix = f"{prefix}{{state}}:"
        self._debit = self._redis.register_script(_DEBIT)
        self._refund = self._redis.register_script(_REFUND)

    def _counter(self, key: str, start: int) -> str:
        return f"{self._prefix}c:{start}:{key}"

    def debit(self, hold_id: str, debits: Sequence[Debit], *, now: int) -> str | None:
        keys = [f"{self._prefix}h:{hold_id}"]
        args: list[int | str | bytes] = []
        items: list[list[int | str]] = []
        ends = now + 1
        for d in debits:
            if d.amount > _MAX_EXACT or d.limit > _MAX_EXACT:
                raise ValueError(f"debit {d.key!r} exceeds 2^53, which Redis cannot compare exactly")
            start = window_start(now, d.window)
            counter = self._counter(d.key, start)
            keys.append(counter)
            args += [d.amount, d.limit, _ttl(start + d.window, now)]
            items.append([counter, d.amount])
            ends = max(ends, start + d.window)
        try:
            lost = self._debit(keys=keys, args=[_ttl(ends, now), canonicalize_trusted(items), *args])
        except _FAILURES as exc:
            raise StoreUnavailable(f"Redis state store: {exc}") from exc
        if int(lost) < 0:
            # Only a retry of the same debit is idempotent; a reused id is a bug.
            raise StoreUnavailable(f"hold id {hold_id!r} reused for different debits")
        return None if int(lost) == 0 else debits[int(lost) - 1].key

    def refund(self, hold_id: str) -> None:
        try:
            self._refund(keys=[f"{self._prefix}h:{hold_id}"])
        except _FAILURES as exc:
            raise StoreUnavailable(f"Redis state store: {exc}") from exc

    def usage(self, key: str, window: int, *, now: int) -> int:
        try:
            value = self._redis.get(self._counter(key, window_start(now, window)))
        except _FAILURES as exc:
            raise StoreUnavailable(f"Redis state store: {exc}") from exc
        return 0 if value is None else int(value)

    def close(self) -> None:
        self._redis.close()
