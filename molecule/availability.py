"""The availability probe every "no failed request" test uses: failover, the rolling
restart, and the roll-outs still to come.

A thread sends one request after another to one URL. Each request has its own
connection (a new session, `Connection: close`) and no retries, and a short
timeout, so a hang counts as a failure, as does a connection that a stopping server
closed. Every request is recorded with its start, latency and outcome. `check`
then asserts zero failures, that the loop was alive until it was stopped, at least
one success in every second of the disruption window (not only before and after
it), and a latency bound. When a check fails, the message carries the timeline,
second by second. The loop is bounded in count and time, whatever the test does.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

# What a request carries: its JSON body, made from its sequence number, or None.
Body = Callable[[int], dict[str, Any] | None]


def no_body(_: int) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class Outcome:
    start: float  # seconds since the probe started
    latency: float
    ok: bool
    detail: str


@dataclasses.dataclass
class Probe:
    url: str
    method: str = "GET"
    body: Body = no_body
    timeout: float = 3.0
    pause: float = 0.02
    max_requests: int = 30_000
    max_seconds: float = 600.0
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    marks: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str = ""
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _origin: float = 0.0
    _stopped_at: float = 0.0

    def start(self) -> Probe:
        self._origin = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="availability-probe", daemon=True)
        self._thread.start()
        return self

    def now(self) -> float:
        return time.monotonic() - self._origin

    def mark(self, name: str) -> None:
        """Note when something happened, e.g. the start and end of a disruption."""
        self.marks[name] = self.now()

    def stop(self) -> None:
        """Stop the loop and wait for its thread; a second call does nothing."""
        if self._stop.is_set():
            return
        self._stopped_at = self.now()
        self._stop.set()
        assert self._thread is not None, "the probe was never started"
        self._thread.join(timeout=self.timeout + 10)
        assert not self._thread.is_alive(), "the probe's thread did not stop"

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def successes(self) -> int:
        return sum(1 for o in self.outcomes if o.ok)

    def _run(self) -> None:
        try:
            for number in range(self.max_requests):
                if self._stop.is_set() or self.now() > self.max_seconds:
                    return
                self.outcomes.append(self._send(number))
                time.sleep(self.pause)
        except Exception as err:
            self.error = repr(err)

    def _send(self, number: int) -> Outcome:
        start = self.now()
        try:
            with requests.Session() as session:
                response = session.request(
                    self.method,
                    self.url,
                    json=self.body(number),
                    headers={"Connection": "close"},
                    timeout=self.timeout,
                )
            ok = response.status_code == 200
            detail = "" if ok else f"{response.status_code} {response.text[:200]}"
        except requests.RequestException as err:
            ok, detail = False, repr(err)[:300]
        return Outcome(start, self.now() - start, ok, detail)

    def timeline(self) -> str:
        """Per-second successes, failures and the slowest request, with the marks."""
        last = max([o.start for o in self.outcomes] + [self._stopped_at, 0.0])
        lines = []
        for second in range(math.ceil(last) + 1):
            bucket = [o for o in self.outcomes if second <= o.start < second + 1]
            marks = " ".join(f"<{name}>" for name, at in self.marks.items() if second <= at < second + 1)
            slowest = max((o.latency for o in bucket), default=0.0)
            lines.append(
                f"{second:4d}s ok={sum(o.ok for o in bucket):3d} failed={sum(not o.ok for o in bucket):3d}"
                f" max={slowest:.2f}s {marks}".rstrip()
            )
        failures = [f"  at {o.start:.2f}s after {o.latency:.2f}s: {o.detail}" for o in self.failures[:5]]
        return "\n".join(["timeline:", *lines, *(["first failures:", *failures] if failures else [])])

    def check(self, window: tuple[str, str], max_latency: float) -> None:
        """Assert what a "no failed request" test claims, across the window between two marks."""
        begin, end = self.marks[window[0]], self.marks[window[1]]
        report = f"{len(self.outcomes)} requests, {len(self.failures)} failed\n{self.timeline()}"
        assert not self.error, f"the probe's loop died: {self.error}\n{report}"
        assert not self.failures, f"requests failed\n{report}"
        assert self.outcomes, "the probe sent no request"
        # Alive until stopped: the last request began within one request of the stop.
        assert self._stopped_at - self.outcomes[-1].start <= self.timeout + self.pause + 1, (
            f"the probe's loop stopped sending before it was stopped\n{report}"
        )
        # The latency bound before the gaps: a slow request also leaves its second
        # empty, and "a request took" names the cause where the gap names an effect.
        slowest = max(o.latency for o in self.outcomes)
        assert slowest < max_latency, f"a request took {slowest:.2f} s (bound {max_latency} s)\n{report}"
        empty = [
            second
            for second in range(math.floor(begin), math.ceil(end))
            if not any(o.ok and second <= o.start < second + 1 for o in self.outcomes)
        ]
        assert not empty, f"no successful request in seconds {empty} of the window {window}\n{report}"

    def during(self, window: tuple[str, str]) -> int:
        """Requests that started within the window."""
        begin, end = self.marks[window[0]], self.marks[window[1]]
        return sum(1 for o in self.outcomes if begin <= o.start <= end)
