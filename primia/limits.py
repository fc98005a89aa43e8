"""What one certificate holder may cost a server: the limits and their bookkeeping.

No gRPC here: :mod:`primia.rpc.guard` applies these to every call of a server.
Every member of the consortium holds a valid certificate, so authentication alone does not
stop one of them from exhausting a server. The limits below bound what any one peer (a
certificate name) can hold at once, so that the others are still served:

* **calls** — at most ``max_calls_per_peer`` concurrent calls per certificate and
  ``max_calls`` in all. A gRPC sync server holds one worker thread per open call; the
  pool is sized so every admitted call has a thread (:meth:`ServerLimits.pool_size`),
  and a call over a limit is refused at once with RESOURCE_EXHAUSTED naming the limit,
  before it waits for any message.
* **silence** — a call whose first message has not arrived ``first_message_s`` after it
  opened, or a client stream silent for ``silence_s`` between two messages, is ended
  with DEADLINE_EXCEEDED (long-lived streams such as a node's ``Join``, where the
  server decides when the peer speaks, are watched by HTTP/2 keepalive instead).
* **text** — every free-text field a peer sends (a device name, a progress stage, an
  error detail) is at most ``max_text`` characters; :func:`clean_text` escapes control
  characters before anything is logged or shown, so a newline cannot forge a log line.
* **blobs** — completed blobs that no result has named yet are kept per stream up to
  ``max_blobs_kept`` and ``max_blob_bytes_kept`` bytes; the next one is refused.
* **logs** — malformed input is logged once per ``log_every_s`` per peer, with the count
  of those not logged (:class:`LogThrottle`), never a traceback each.

Worst case per peer: ``max_calls_per_peer`` threads, each for at most ``first_message_s``
unless it sends; on the coordinator ``max_blob_bytes_kept`` plus two blobs in flight of
memory per ``Join`` stream. A coalition of k certificates holds k times that, capped by
``max_calls`` in all.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Hashable
from dataclasses import dataclass, replace

from primia.errors import ConfigError, PrimiaError

MIB = 1 << 20


class LimitExceeded(PrimiaError):
    """A peer went over one of a server's limits; ``limit`` is the config key."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class ServerLimits:
    """``[limits]`` of a server's config; see the module docstring for what each bounds."""

    max_calls: int = 0
    """Concurrent calls in all (the worker pool has this many threads, plus a few); 0:
    sized by the server (:meth:`sized`)."""
    max_calls_per_peer: int = 4
    """Concurrent calls per certificate: a node needs 1 (Join) plus a status or a probe."""
    first_message_s: float = 10.0
    """How long a call may wait for its first message."""
    silence_s: float = 60.0
    """How long a client stream (other than a node's Join) may be silent mid-stream."""
    max_text: int = 1024
    """Characters in any free-text field a peer sends."""
    max_blobs_kept: int = 2
    """Completed blobs a stream may have that no result has named yet."""
    max_blob_bytes_kept: int = 1024 * MIB
    """Bytes of those blobs per stream, and the largest blob a stream may announce."""
    log_every_s: float = 60.0
    """At most one log line per peer and kind of malformed input this often."""

    def __post_init__(self) -> None:
        if self.max_calls < 0:
            raise ConfigError(
                f"limits.max_calls must be 0 (automatic) or more, got {self.max_calls}"
            )
        for key in ("max_calls_per_peer", "max_text", "max_blobs_kept"):
            if getattr(self, key) < 1:
                raise ConfigError(f"limits.{key} must be at least 1, got {getattr(self, key)}")
        for key in ("first_message_s", "silence_s", "log_every_s"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"limits.{key} must be positive, got {getattr(self, key)}")
        if self.max_blob_bytes_kept < MIB:
            raise ConfigError(
                f"limits.max_blob_bytes_kept must be at least {MIB} (1 MiB), got "
                f"{self.max_blob_bytes_kept}"
            )
        if self.max_calls and self.max_calls_per_peer > self.max_calls:
            raise ConfigError(
                f"limits.max_calls_per_peer ({self.max_calls_per_peer}) exceeds limits.max_calls "
                f"({self.max_calls}); raise max_calls or lower max_calls_per_peer"
            )

    def sized(self, automatic: int) -> ServerLimits:
        """These limits with ``max_calls`` set to ``automatic`` if it was left at 0."""
        if self.max_calls:
            return self
        return replace(self, max_calls=max(automatic, self.max_calls_per_peer))

    @property
    def pool_size(self) -> int:
        """Worker threads: one per admitted call, plus a few that refuse calls over a limit
        (so a refusal never waits behind held calls)."""
        return self.max_calls + REFUSING_THREADS


REFUSING_THREADS = 4
DEFAULT_MAX_CALLS = 64
"""``max_calls`` when left at 0, unless the server needs more (a coordinator's roster)."""


class Admission:
    """Counts open calls per peer and in all; :meth:`enter` refuses a call over a limit.

    >>> admission = Admission(ServerLimits(max_calls=3, max_calls_per_peer=2))
    >>> admission.enter("a"); admission.enter("a")
    >>> admission.enter("a")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    primia.limits.LimitExceeded: a already has 2 open calls, ...
    """

    def __init__(self, limits: ServerLimits) -> None:
        self._limits = limits.sized(DEFAULT_MAX_CALLS)
        self._open: dict[str, int] = {}
        self._total = 0
        self._lock = threading.Lock()

    def enter(self, peer: str) -> None:
        limits = self._limits
        with self._lock:
            held = self._open.get(peer, 0)
            if held >= limits.max_calls_per_peer:
                raise LimitExceeded(
                    "max_calls_per_peer",
                    f"{peer} already has {held} open calls, the most one certificate may hold "
                    f"(limits.max_calls_per_peer = {limits.max_calls_per_peer}); close one or "
                    "wait",
                )
            if self._total >= limits.max_calls:
                raise LimitExceeded(
                    "max_calls",
                    f"the server has {self._total} open calls, its maximum (limits.max_calls "
                    f"= {limits.max_calls}); try again shortly",
                )
            self._open[peer] = held + 1
            self._total += 1

    def leave(self, peer: str) -> None:
        with self._lock:
            held = self._open.get(peer, 0)
            if held <= 1:
                self._open.pop(peer, None)
            else:
                self._open[peer] = held - 1
            if held:
                self._total -= 1

    def open_calls(self, peer: str | None = None) -> int:
        with self._lock:
            return self._total if peer is None else self._open.get(peer, 0)


class Deadlines:
    """Deadlines by key on a caller's clock; :meth:`due` takes those that have passed."""

    def __init__(self) -> None:
        self._at: dict[Hashable, tuple[float, str]] = {}

    def arm(self, key: Hashable, at: float, reason: str) -> None:
        self._at[key] = (at, reason)

    def disarm(self, key: Hashable) -> None:
        self._at.pop(key, None)

    def due(self, now: float) -> list[tuple[Hashable, str]]:
        passed = [(key, reason) for key, (at, reason) in self._at.items() if at <= now]
        for key, _ in passed:
            del self._at[key]
        return passed

    def next_at(self) -> float | None:
        return min((at for at, _ in self._at.values()), default=None)

    def __len__(self) -> int:
        return len(self._at)


class LogThrottle:
    """One log line per key every ``every_s`` seconds, carrying how many were held back.

    >>> throttle = LogThrottle(every_s=60)
    >>> throttle.admit("site0", now=0.0), throttle.admit("site0", now=1.0)
    (0, None)
    >>> throttle.admit("site0", now=2.0), throttle.admit("site0", now=61.0)
    (None, 2)
    """

    MAX_KEYS = 1024
    """Keys remembered; beyond that the oldest are forgotten (a peer cannot grow this)."""

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._state: dict[Hashable, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def admit(self, key: Hashable, now: float) -> int | None:
        """None: do not log now. Otherwise log, saying the returned count were not."""
        with self._lock:
            last = self._state.get(key)
            if last is not None and now - last[0] < self._every_s:
                self._state[key] = (last[0], last[1] + 1)
                return None
            self._state.pop(key, None)
            if len(self._state) >= self.MAX_KEYS:
                del self._state[next(iter(self._state))]
            self._state[key] = (now, 0)
            return 0 if last is None else last[1]


def clean_text(text: str, limit: int) -> str:
    """``text`` safe to log or display: control and format characters (newlines, escape
    sequences, bidirectional overrides) escaped, and at most ``limit`` characters kept.

    >>> clean_text("cuda\\nINFO forged line", 64)
    'cuda\\\\nINFO forged line'
    >>> clean_text("x" * 10, 4)
    'xxxx…(+6 characters)'
    """
    cut = text[:limit]
    escaped = "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")
        else ch
        for ch in cut
    )
    if len(text) > limit:
        escaped += f"…(+{len(text) - limit} characters)"
    return escaped


def check_text(field: str, text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, escaped by :func:`clean_text`;
    else :class:`LimitExceeded` naming ``field``."""
    if len(text) > limit:
        raise LimitExceeded(
            "max_text",
            f"{field} has {len(text)} characters, more than the limit of {limit} "
            "(limits.max_text); send a shorter one",
        )
    return clean_text(text, limit)
