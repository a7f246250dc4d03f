"""Send sprint-runner orchestrator events to sprint-dashboard.

One file, Python 3.9+ standard library only: copy it next to the orchestrator
(or put its folder on PYTHONPATH) and call ``emit_event`` where the
orchestrator emits its events::

    from sprint_dashboard_client import emit_event, flush

    emit_event("batch:start", {"batch_id": 7, "max_cycles": 2, "batch_mode": "fixed"})
    ...
    flush()  # optional: at exit, whatever is queued gets up to 5 s to go out

``emit_event`` returns at once and never raises: the event is stamped with the
time of the call, serialised, and put on a bounded in-memory queue. A daemon
thread POSTs the queue in order, up to 500 events per request, to
``$SPRINT_URL/api/events`` (default ``http://127.0.0.1:8080``) with
``Authorization: Bearer $SPRINT_INGEST_TOKEN`` when that variable is set.

Delivery:

* The service down, or answering 5xx (or 408/429): the same events are retried
  with capped exponential backoff (0.2 s doubling to 5 s), so nothing is lost
  or reordered while the service restarts. Each event carries an
  ``idempotencyKey`` (this emitter's random name and a counter), so an event
  the service stored although its answer never came is not stored twice when
  it is sent again.
* A 4xx (or any other answer) is final: the refused events are logged with the
  service's message and the following events still go. The service refuses an
  array as a whole, so after a 400 or 413 for several events they are sent
  again one by one and only the bad ones are dropped.
* The queue holds ``max_queue`` events (default 10,000). When it is full the
  oldest event is dropped and counted, with a warning at most once a minute.

Messages go to the ``sprint_dashboard_client`` logger; with logging not
configured, Python prints warnings and errors on stderr.
"""

from __future__ import annotations

import atexit
import collections
import http.client
import json
import logging
import os
import threading
import time
import uuid
import urllib.error
import urllib.parse
import urllib.request
import weakref
from typing import Any, Deque, List, Optional, Tuple

__all__ = ["DEFAULT_URL", "Emitter", "emit_event", "flush"]

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_MAX_QUEUE = 10_000
MAX_EVENTS_PER_REQUEST = 500
# The service reads at most 1 MiB per request; the margin covers the array's brackets and commas.
MAX_BYTES_PER_REQUEST = 1024 * 1024 - 64 * 1024
EXIT_FLUSH_SECONDS = 5.0
RETRY_FIRST_DELAY_SECONDS = 0.2
RETRY_MAX_DELAY_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 10.0
DROP_WARNING_INTERVAL_SECONDS = 60.0
# Statuses that say "not now" rather than "not this": retried like a 5xx.
RETRY_STATUSES = frozenset({408, 429})
# Statuses about the content of the request: the array is resent one event at a time to find the bad ones.
# Others (401, 403, 404, ...) would refuse each event alike, so the whole request is refused at once.
CONTENT_STATUSES = frozenset({400, 413, 422})

logger = logging.getLogger("sprint_dashboard_client")

# One queued event: (sequence number, event type, the JSON request item as UTF-8).
_Queued = Tuple[int, str, bytes]


class Emitter:
    """An ordered, bounded, retrying sender of events to one service.

    ``url`` is the service's base URL (default ``$SPRINT_URL``, else
    ``http://127.0.0.1:8080``), ``token`` the ingest token (default
    ``$SPRINT_INGEST_TOKEN``), ``max_queue`` the most events kept while the
    service cannot be reached. The thread starts with the first event.

    Example::

        emitter = Emitter("http://127.0.0.1:8080", token=None, max_queue=10_000)
        emitter.emit_event("cycle:start", {"cycle_number": 1, "story_keys": ["2a-1"]})
        delivered = emitter.flush(5.0)
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, max_queue: int = DEFAULT_MAX_QUEUE):
        base = url if url is not None else (os.environ.get("SPRINT_URL") or DEFAULT_URL)
        parsed = urllib.parse.urlsplit(base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"sprint_dashboard_client: not an http(s) URL: {base!r}")
        if not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"sprint_dashboard_client: max_queue must be a positive integer, got {max_queue!r}")
        self.endpoint = base.rstrip("/") + "/api/events"
        token = token if token is not None else os.environ.get("SPRINT_INGEST_TOKEN")
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        # A proxy from the environment must not capture requests to this machine.
        loopback = parsed.hostname in ("127.0.0.1", "localhost", "::1")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}) if loopback else urllib.request.ProxyHandler())
        self._max_queue = max_queue

        # Everything below is guarded by _cond; the sender thread and flush() wait on it.
        self._cond = threading.Condition()
        self._queue: Deque[_Queued] = collections.deque()
        self._next_seq = 1
        # Events of the request in flight stay at the head of the queue until the service answers;
        # this is the last sequence number of that request (0 when none is in flight).
        self._in_flight_through = 0
        # Dropped from the queue while in flight: lost only if that request fails.
        self._dropped_in_flight = 0
        # After a 400/413 for several events, events up to this number go one per request.
        self._one_by_one_through = 0
        self._thread: Optional[threading.Thread] = None
        # Names events for the service's idempotency check: unique per emitter and process (see _next_key).
        self._producer = ""
        self._producer_pid = 0
        self._next_key_number = 1
        self._closed = False
        self._stop = threading.Event()

        self._delivered = 0
        self._refused = 0
        self._dropped = 0
        self._dropped_reported = 0
        self._last_drop_warning = float("-inf")
        # Events dropped or refused since the last flush() that returned: flush() answers whether there were none.
        self._lost_since_flush = 0
        _emitters.add(self)

    # -- what the orchestrator calls --------------------------------------------------------

    def emit_event(self, event_type: str, payload: Any) -> None:
        """Queues one event stamped with the current time; returns at once and never raises."""
        try:
            timestamp = int(time.time() * 1000)
            with self._cond:
                key = self._next_key()
            try:
                # Serialised now, so that the caller may go on changing its payload object.
                item = json.dumps(
                    {"type": event_type, "payload": payload, "timestamp": timestamp, "idempotencyKey": key},
                    allow_nan=False, separators=(",", ":"),
                ).encode("utf-8")
            except (TypeError, ValueError, RecursionError) as error:
                logger.error("sprint_dashboard_client: %s event not sent: its payload is not JSON (%s)", event_type, error)
                return
            with self._cond:
                if len(self._queue) >= self._max_queue:
                    self._drop_oldest()
                self._queue.append((self._next_seq, str(event_type), item))
                self._next_seq += 1
                self._ensure_thread()
                self._cond.notify_all()
        except Exception:  # noqa: BLE001 - the orchestrator's loop must never see our failure
            try:
                logger.exception("sprint_dashboard_client: could not queue a %s event", event_type)
            except Exception:  # noqa: BLE001
                pass

    def flush(self, timeout: Optional[float] = 5.0) -> bool:
        """Waits until every event emitted before the call has had the service's answer.

        Returns True when they all were stored and nothing was dropped or refused
        since the previous flush; False when some were, or ``timeout`` seconds
        passed first (``None`` waits without limit). Never raises.
        """
        try:
            deadline = None if timeout is None else time.monotonic() + max(0.0, float(timeout))
            with self._cond:
                target = self._next_seq - 1
                while self._queue and self._queue[0][0] <= target:
                    if self._closed:
                        return False
                    self._ensure_thread()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                delivered = self._lost_since_flush == 0
                self._lost_since_flush = 0
                return delivered
        except Exception:  # noqa: BLE001
            logger.exception("sprint_dashboard_client: flush failed")
            return False

    def close(self, timeout: Optional[float] = 5.0) -> bool:
        """Flushes, then stops the thread; later events are dropped. Returns what flush returned."""
        delivered = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._stop.set()
            self._cond.notify_all()
        return delivered

    @property
    def delivered(self) -> int:
        """Events the service stored."""
        return self._delivered

    @property
    def refused(self) -> int:
        """Events the service refused with a 4xx (logged)."""
        return self._refused

    @property
    def dropped(self) -> int:
        """Events dropped because the queue was full."""
        return self._dropped

    @property
    def pending(self) -> int:
        """Events queued or in flight."""
        return len(self._queue)

    # -- the queue ---------------------------------------------------------------------------

    def _next_key(self) -> str:
        # Called with _cond held. A forked child holds a copy of this emitter: it takes a new name, or its
        # events and the parent's would share keys and the service would drop one of each pair as a retry.
        pid = os.getpid()
        if pid != self._producer_pid:
            self._producer = uuid.uuid4().hex
            self._producer_pid = pid
            self._next_key_number = 1
        key = f"{self._producer}:{self._next_key_number}"
        self._next_key_number += 1
        return key

    def _drop_oldest(self) -> None:
        seq, _type, _item = self._queue.popleft()
        if seq <= self._in_flight_through:
            self._dropped_in_flight += 1
        self._dropped += 1
        self._lost_since_flush += 1
        now = time.monotonic()
        if now - self._last_drop_warning >= DROP_WARNING_INTERVAL_SECONDS:
            self._last_drop_warning = now
            self._report_drops()

    def _report_drops(self) -> None:
        if self._dropped == self._dropped_reported:
            return
        logger.warning(
            "sprint_dashboard_client: queue full (%d events waiting for %s); dropped the oldest, %d dropped so far",
            self._max_queue, self.endpoint, self._dropped,
        )
        self._dropped_reported = self._dropped

    def _ensure_thread(self) -> None:
        # Called with _cond held. A thread does not survive fork(), so a child process starts its own.
        if self._closed or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._run, name="sprint-dashboard-emitter", daemon=True)
        self._thread.start()

    def _next_request(self) -> List[_Queued]:
        # Called with _cond held and the queue not empty.
        if self._queue[0][0] <= self._one_by_one_through:
            return [self._queue[0]]
        request: List[_Queued] = []
        size = 2
        for queued in self._queue:
            if request and (len(request) >= MAX_EVENTS_PER_REQUEST or size + len(queued[2]) + 1 > MAX_BYTES_PER_REQUEST):
                break
            request.append(queued)
            size += len(queued[2]) + 1
        return request

    def _settle(self, request: List[_Queued]) -> None:
        # Called with _cond held: the service answered for these events; they leave the queue.
        last = request[-1][0]
        while self._queue and self._queue[0][0] <= last:
            self._queue.popleft()
        self._in_flight_through = 0
        self._cond.notify_all()

    # -- the sender thread -------------------------------------------------------------------

    def _run(self) -> None:
        delay = RETRY_FIRST_DELAY_SECONDS
        outage_since: Optional[float] = None
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                request = self._next_request()
                self._in_flight_through = request[-1][0]
                self._dropped_in_flight = 0
            status, message = self._post(request)
            # No answer, 5xx, 408 and 429 mean "not now"; any other answer is the service's final word.
            retry = status is None or status >= 500 or status in RETRY_STATUSES
            with self._cond:
                if retry:
                    self._in_flight_through = 0
                elif 200 <= status < 300:
                    # Events dropped from the head while this request was out were stored after all.
                    self._dropped -= self._dropped_in_flight
                    self._dropped_reported = min(self._dropped_reported, self._dropped)
                    self._lost_since_flush = max(0, self._lost_since_flush - self._dropped_in_flight)
                    self._delivered += len(request) - self._dropped_in_flight
                    self._settle(request)
                elif len(request) > 1 and status in CONTENT_STATUSES:
                    # Nothing of the array was stored: send it again one by one, so only the bad events go.
                    self._one_by_one_through = request[-1][0]
                    self._in_flight_through = 0
                else:
                    self._refuse(request, status, message)
                    self._settle(request)
            if not retry:
                if outage_since is not None:
                    logger.warning("sprint_dashboard_client: %s reachable again after %.1f s", self.endpoint, time.monotonic() - outage_since)
                    outage_since = None
                delay = RETRY_FIRST_DELAY_SECONDS
                continue
            if outage_since is None:
                outage_since = time.monotonic()
                logger.warning("sprint_dashboard_client: %s: %s; retrying, events are kept in order", self.endpoint, message)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, RETRY_MAX_DELAY_SECONDS)

    def _refuse(self, request: List[_Queued], status: int, message: str) -> None:
        # Called with _cond held. Events dropped while in flight are not counted twice.
        refused = [queued for queued in request if self._queue and queued[0] >= self._queue[0][0]]
        count = len(refused)
        if count == 0:
            return
        self._refused += count
        self._lost_since_flush += count
        types = ", ".join(sorted({queued[1] for queued in refused}))
        if count == 1:
            logger.error("sprint_dashboard_client: the service refused a %s event (%d): %s", types, status, message)
        else:
            logger.error("sprint_dashboard_client: the service refused %d events (%s) (%d): %s", count, types, status, message)

    def _post(self, request: List[_Queued]) -> Tuple[Optional[int], str]:
        """Sends one request; returns (HTTP status or None when there was no answer, what to log)."""
        body = b"[" + b",".join(queued[2] for queued in request) + b"]"
        http_request = urllib.request.Request(self.endpoint, data=body, headers=self._headers, method="POST")
        try:
            with self._opener.open(http_request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
                response.read()
                return response.status, ""
        except urllib.error.HTTPError as error:
            return error.code, _describe_refusal(error)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            reason = getattr(error, "reason", error)
            return None, f"service not reachable ({reason})"
        except Exception as error:  # noqa: BLE001 - the thread must outlive any surprise and keep the events
            return None, f"request failed ({error!r})"

    def _flush_at_exit(self, timeout: float) -> None:
        delivered = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._stop.set()
            self._cond.notify_all()
            self._report_drops()
            if not delivered and self._queue:
                logger.warning(
                    "sprint_dashboard_client: exiting with %d event(s) not delivered to %s", len(self._queue), self.endpoint,
                )


def _describe_refusal(error: urllib.error.HTTPError) -> str:
    """The service's own message (`code: message`), else the start of the body, else the reason phrase."""
    try:
        text = error.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001
        text = ""
    try:
        body = json.loads(text)
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            code = body.get("code")
            return f"{code}: {body['message']}" if isinstance(code, str) else body["message"]
    except ValueError:
        pass
    return text[:500] or str(error.reason)


_emitters: "weakref.WeakSet[Emitter]" = weakref.WeakSet()
_default: Optional[Emitter] = None
_default_lock = threading.Lock()


def _default_emitter() -> Emitter:
    global _default
    with _default_lock:
        if _default is None:
            _default = Emitter()
        return _default


def emit_event(event_type: str, payload: Any) -> None:
    """Queues one event for the default emitter (``$SPRINT_URL``, ``$SPRINT_INGEST_TOKEN``). Never raises."""
    try:
        emitter = _default_emitter()
    except Exception as error:  # noqa: BLE001 - e.g. SPRINT_URL is not a URL
        logger.error("sprint_dashboard_client: %s event not sent: %s", event_type, error)
        return
    emitter.emit_event(event_type, payload)


def flush(timeout: Optional[float] = 5.0) -> bool:
    """Flushes the default emitter; see ``Emitter.flush``. True when nothing was ever emitted."""
    return True if _default is None else _default.flush(timeout)


@atexit.register
def _flush_all_at_exit() -> None:
    # One budget for all emitters: a short-lived process delivers what it emitted, but never hangs at exit.
    deadline = time.monotonic() + EXIT_FLUSH_SECONDS
    for emitter in list(_emitters):
        try:
            emitter._flush_at_exit(max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001
            pass
