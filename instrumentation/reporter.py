"""Ships lifecycle snapshots to the sidecar as OTLP/HTTP log records.

Exports coalesce: whatever changed since the last export is snapshotted once
(latest state wins), so a burst of events becomes one record per cascade instead
of a queue that drops. Each snapshot is an OTLP log record whose ``trace_id`` is
the cascade's, ``event.name`` says which kind, and whose body is a JSON object
(see docs/wire.md). Nothing here runs inside the agent's own code: the agent only
flips dirty bits and wakes the reporter. A prompt export (something that can
settle a cascade changed) woken on the agent's event loop runs as a callback on
that loop after the gathering delay (``loop_export``: no thread switch); a
background thread does the rest (the lazy timer, heartbeats, retries, wakes from
other threads, HTTPS, the flush at shutdown).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse

from a2a_quiescence import environment_variables as env
from a2a_quiescence.instrumentation.connection import Sender
from a2a_quiescence.instrumentation.loop_export import LoopExport, Taken
from a2a_quiescence.instrumentation.snapshot_encoding import encode  # noqa: F401 - also imported from here
from a2a_quiescence.instrumentation.tracker import HopTracker

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = env.ENDPOINT.default
# ~300 bytes each: far below the collector's default 4 MiB body limit
MAX_SNAPSHOTS_PER_REQUEST = 1000
# the adaptive window opens once it would gather this many wakes on average: below that
# it saves few requests and delays every settle by up to its length (see Reporter._adapt)
GATHERED_WAKES = 2.0
# a change that can wait rides along with any export once it has been kept this share of
# the lazy interval; the lazy timer ships it at the whole interval only when no export
# came by (under load prompt exports, on the agent's loop, take nearly all of them)
RIDE_ALONG = 0.5


def resolve_endpoint(environ: dict[str, str] | None = None) -> str:
    """Where snapshots go: our own variable, else the standard OTLP ones when
    they name an HTTP endpoint, else the sidecar's default OTLP/HTTP port."""
    if own := env.ENDPOINT.raw(environ):
        return own
    protocol = env.OTEL_EXPORTER_OTLP_LOGS_PROTOCOL.raw(environ) or env.OTEL_EXPORTER_OTLP_PROTOCOL.raw(environ) or ""
    if protocol.startswith("http"):
        if logs := env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT.raw(environ):
            return logs
        if base := env.OTEL_EXPORTER_OTLP_ENDPOINT.raw(environ):
            return base.rstrip("/") + "/v1/logs"
    return DEFAULT_ENDPOINT


def resolve_headers(environ: dict[str, str] | None = None) -> dict[str, str]:
    headers: dict[str, str] = {}
    raw = env.OTEL_EXPORTER_OTLP_LOGS_HEADERS.raw(environ) or env.OTEL_EXPORTER_OTLP_HEADERS.raw(environ) or ""
    for part in raw.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            headers[urllib.parse.unquote(key.strip()).lower()] = urllib.parse.unquote(value.strip())
    if token := env.TOKEN.raw(environ):
        headers["authorization"] = "Bearer " + token
    return headers


class Reporter:
    """The background exporter thread for one ``HopTracker``."""

    def __init__(
        self,
        tracker: HopTracker,
        service_name: str,
        *,
        endpoint: str | None = None,
        headers: dict[str, str] | None = None,
        flush_interval: float | None = None,
        heartbeat: float | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.tracker = tracker
        self.service_name = service_name
        self.endpoint = endpoint or resolve_endpoint()
        parsed = urllib.parse.urlsplit(self.endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"snapshot endpoint must be an http(s) URL, got {self.endpoint!r}")
        self.headers = {"content-type": "application/x-protobuf", **(headers if headers is not None else resolve_headers())}
        self.flush_interval = flush_interval if flush_interval is not None else env.FLUSH_MS.get() / 1000.0
        self.heartbeat = heartbeat if heartbeat is not None else env.HEARTBEAT_SECONDS.get()
        self.lazy_interval = env.LAZY_MS.get() / 1000.0
        # the load-adaptive coalescing window (see _run): from flush_interval up to this
        self.max_window = max(self.flush_interval, env.COALESCE_MS.get() / 1000.0)
        self._window = self.flush_interval
        self._last_prompt = 0.0
        self._wakes = 0
        self._rate = 0.0  # prompt wakes per second, smoothed
        self._woken_at: float | None = None  # the first wake since the last prompt export (monotonic)
        self.timeout = timeout
        self._event = threading.Event()
        self._send_lock = threading.Lock()
        self._stop = False
        self._collector_id: str | None = None
        self._failures = 0
        self._warned = False
        self._sender = Sender(parsed, self.headers, timeout)
        # prompt exports as callbacks on the agent's loop (see loop_export); plain HTTP only
        plain = self._sender.plain
        self._loop_export = (LoopExport(plain, self._take_prompt, self._loop_result, self._wake_thread)
                             if plain is not None and env.LOOP_EXPORT.get() else None)
        self.exports = 0
        self.export_failures = 0
        self._thread: threading.Thread | None = None
        tracker.wake = self._wake

    @property
    def loop_export(self) -> LoopExport | None:
        """The prompt exports on the agent's loop (None: plain HTTP unavailable, or switched off)."""
        return self._loop_export

    def _wake(self) -> None:
        """What the tracker calls when something can settle a cascade (any thread:
        the count is a load estimate, not exact)."""
        self._wakes += 1
        woken = self._woken_at  # read once: the thread may clear it meanwhile
        if woken is None:
            woken = self._woken_at = time.monotonic()  # the gathering delay counts from here, not from when we run
        loop_export = self._loop_export
        if loop_export is not None and not self._failures:
            if loop_export.schedule(max(0.0, self._prompt_due(woken) - time.monotonic())):
                return
        if not self._event.is_set():
            self._event.set()

    def _prompt_due(self, woken_at: float) -> float:
        """When a prompt export woken at ``woken_at`` runs (monotonic), on the loop or the
        thread: ``flush_interval`` after the wake, and under load not before the adaptive
        window since the last prompt export has passed."""
        return max(woken_at + self.flush_interval, self._last_prompt + self._window)

    def _wake_thread(self) -> None:
        self._event.set()

    def _take_prompt(self) -> Taken | None:
        """On the loop: the due snapshots as one request, or None (nothing due, or the
        thread is exporting: then it is told to take them)."""
        if not self._send_lock.acquire(blocking=False):
            self._event.set()
            return None
        try:
            self._woken_at = None
            if not self.tracker.has_dirty():
                return None
            hop, cascades = self.tracker.take_snapshots(lazy=self.lazy_interval * RIDE_ALONG)
            self._adapt()
            if hop is None and not cascades:
                return None
            if len(cascades) > MAX_SNAPSHOTS_PER_REQUEST:  # a resend of everything: the thread splits it
                self.tracker.requeue(hop is not None, [t for t, _ in cascades])
                self._event.set()
                return None
            body = encode(self.service_name, self.tracker.incarnation, hop, cascades)
            return body, hop is not None, [t for t, _ in cascades]
        finally:
            self._send_lock.release()

    def _loop_result(self, ok: bool, hop: bool, trace_ids: list[str], collector_id: str | None, why: str) -> None:
        """An export on the loop was answered (or given up): as ``flush`` does for its own."""
        if not ok:
            self._delivery_failed(why, hop, trace_ids)
            self._event.set()  # the thread retries, with its backoff; the loop waits for it
            return
        self.exports += 1
        self._note_collector(collector_id)

    def _delivery_failed(self, why: object, hop: bool, trace_ids: list[str]) -> None:
        """An export failed: counted, warned of once, and what it carried owed again
        (nothing is lost: it is sent again later)."""
        self._failures += 1
        self.export_failures += 1
        if not self._warned:
            self._warned = True
            logger.warning("a2a-quiescence: cannot deliver snapshots to %s: %s", self.endpoint, why)
        self.tracker.requeue(hop, trace_ids)

    def _note_collector(self, collector_id: str | None) -> None:
        if collector_id and self._collector_id and collector_id != self._collector_id:
            # the collector restarted and lost its view: resend everything
            self.tracker.mark_all_dirty()
            self._event.set()
        if collector_id:
            self._collector_id = collector_id

    def after_fork(self) -> None:
        """In a forked child: the parent's thread, connection and locks are not ours;
        start afresh (the tracker has become a new incarnation)."""
        self._event = threading.Event()
        self._send_lock = threading.Lock()
        self._sender.after_fork()
        if self._loop_export is not None:
            self._loop_export.after_fork()
        self._collector_id = None
        self._failures = 0
        self._window, self._last_prompt, self._wakes, self._rate = self.flush_interval, 0.0, 0, 0.0
        self._woken_at = None
        self._thread = None
        self.tracker.wake = self._wake
        if not self._stop:
            self.start()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="a2a-quiescence-reporter", daemon=True)
            self._thread.start()

    def stop(self, flush: bool = True) -> None:
        self._stop = True
        self._event.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
            self._thread = None
        if self._loop_export is not None:
            self._loop_export.abandon(force=True)  # what the loop has in flight ships with the flush
        if flush:
            self.flush()
        self.tracker.wake = lambda: None

    def _run(self) -> None:
        next_beat = time.monotonic() + self.heartbeat
        while not self._stop:
            # woken by what can settle a cascade (see HopTracker); the rest of what changed
            # is shipped with it when it is due, or when its lazy interval runs out
            now = time.monotonic()
            due = self.tracker.next_due(self.lazy_interval)
            wait = min(next_beat, now + self.lazy_interval if due is None else due) - now
            woke = self._event.wait(timeout=max(0.0, wait))
            if self._stop:
                break
            if woke and self.flush_interval > 0:
                # let a burst accumulate (the latest state wins): flush_interval from the
                # first wake, and under load until the adaptive window since the last
                # prompt export has passed
                start = self._woken_at if self._woken_at is not None else time.monotonic()
                pause = self._prompt_due(start) - time.monotonic()
                if pause > 0:  # a sleep of 0 still gives up the GIL
                    time.sleep(pause)
            self._event.clear()
            self._woken_at = None
            self._serve_loop_export()
            if time.monotonic() >= next_beat:
                self.tracker.heartbeat()
                next_beat = time.monotonic() + self.heartbeat
            elif not woke and self._failures == 0:
                # the lazy timer: a pass only for what has waited the whole lazy interval
                # (else it would take along what the next prompt export, often on the
                # agent's loop, ships anyway: a thread switch and a request for nothing)
                due = self.tracker.next_due(self.lazy_interval)
                if due is None or due > time.monotonic():
                    continue
            # what is due: urgent cascades, and changes kept lazily for half the lazy
            # interval or more (RIDE_ALONG; the lazy timer fires when the oldest reaches
            # the whole interval): under load the prompt exports take them along before
            # the timer fires, and when it does fire it takes a batch; none waits longer
            # than the lazy interval
            ok = self.flush(due=self.lazy_interval * RIDE_ALONG)
            if woke:
                self._adapt()
            if not ok and not self._stop:
                # back off, but keep the dirty state: nothing is lost, only late
                time.sleep(min(2.0, 0.05 * (2 ** min(self._failures, 6))))

    def _serve_loop_export(self) -> None:
        """The thread's part of the loop's exports: give back what waited too long for its
        answer (or whose loop closed), and connect the socket the loop asked for."""
        loop_export = self._loop_export
        if loop_export is None:
            return
        try:
            loop_export.abandon(timeout=self.timeout)
            if not self._failures:
                loop_export.offer(self.timeout)
        except OSError:
            pass  # the collector is not there: the thread's own export finds out and backs off

    def _adapt(self) -> None:
        """The load-adaptive window: while prompt wakes come often enough that a
        window of ``max_window`` would gather ``GATHERED_WAKES`` of them or more on
        average, prompt exports are at least ``max_window`` apart (fewer requests for
        agent and collector, each a little later); otherwise ``flush_interval`` after
        a wake. At 20 ms that is from 100 wakes a second (a process serving ~50
        requests a second, or several hops in one process). Below that a window
        gathers fewer than two wakes: it saves few requests, and adds up to its whole
        length to the settle of every cascade this hop is the last to leave (the
        agents of benchmarks/bench_settlement_loaded.py see about 25-45 a second)."""
        now = time.monotonic()
        wakes, self._wakes = self._wakes, 0
        elapsed = now - self._last_prompt
        self._last_prompt = now
        if elapsed <= 0 or elapsed > 10 * self.max_window:
            self._rate = 0.0  # idle for a while: a lone wake
        else:
            self._rate = 0.7 * self._rate + 0.3 * (wakes / elapsed)
        self._window = self.max_window if self._rate * self.max_window >= GATHERED_WAKES else self.flush_interval

    def flush(self, due: float | None = None) -> bool:
        """Send whatever changed, synchronously (``due``: only what is due, changes
        kept lazily that long or longer; see ``HopTracker.take_snapshots``).
        Returns False on failure."""
        with self._send_lock:
            if not self.tracker.has_dirty():
                return True
            hop, cascades = self.tracker.take_snapshots(lazy=due)
            if hop is None and not cascades:
                return True
            # bounded requests: a resend of everything after a collector restart
            # must not become one body the collector refuses as too large
            chunks = [cascades[i : i + MAX_SNAPSHOTS_PER_REQUEST] for i in range(0, len(cascades), MAX_SNAPSHOTS_PER_REQUEST)]
            for n, chunk in enumerate(chunks or [[]]):
                try:
                    body = encode(self.service_name, self.tracker.incarnation, hop if n == 0 else None, chunk)
                    collector_id = self._sender.post(body)
                except Exception as exc:  # noqa: BLE001 - fail-open: never reach the agent
                    owed = [t for rest in chunks[n:] for t, _ in rest]
                    self._delivery_failed(exc, hop is not None and n == 0, owed)
                    return False
                self._failures = 0
                self.exports += 1
                self._note_collector(collector_id)
            return True

