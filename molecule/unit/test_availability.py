"""The availability probe must tell "nothing failed" from "nothing happened": each
of its checks fails against a local server (127.0.0.1) that misbehaves that way."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from availability import Probe


class Behaviour:
    mode = "ok"  # ok, error, slow, hang


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        mode = Behaviour.mode
        if mode == "hang":
            time.sleep(4)
        elif mode == "slow":
            time.sleep(1.5)
        status = 503 if mode == "error" else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Behaviour.mode = "ok"
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def disrupt(probe: Probe, mode: str, seconds: float) -> None:
    time.sleep(1)
    probe.mark("begin")
    Behaviour.mode = mode
    time.sleep(seconds)
    Behaviour.mode = "ok"
    probe.mark("end")
    time.sleep(1)
    probe.stop()


def test_a_healthy_server_passes(server: str) -> None:
    probe = Probe(server, timeout=2).start()
    disrupt(probe, "ok", 2.5)
    probe.check(("begin", "end"), max_latency=1.0)
    assert probe.during(("begin", "end")) > 20


def test_error_answers_fail_with_a_timeline(server: str) -> None:
    probe = Probe(server, timeout=2).start()
    disrupt(probe, "error", 1.5)
    with pytest.raises(AssertionError, match=r"(?s)requests failed.*timeline:.*failed=.*503"):
        probe.check(("begin", "end"), max_latency=1.0)


def test_a_hang_is_a_failure(server: str) -> None:
    probe = Probe(server, timeout=1).start()
    disrupt(probe, "hang", 1.5)
    with pytest.raises(AssertionError, match=r"(?s)requests failed.*ReadTimeout"):
        probe.check(("begin", "end"), max_latency=5.0)


def test_a_second_without_success_fails_even_without_errors(server: str) -> None:
    """Slow answers within the timeout: nothing failed, but whole seconds passed without a success."""
    probe = Probe(server, timeout=3).start()
    disrupt(probe, "slow", 3.5)
    assert not probe.failures
    with pytest.raises(AssertionError, match="no successful request in seconds"):
        probe.check(("begin", "end"), max_latency=5.0)


def test_the_latency_bound(server: str) -> None:
    probe = Probe(server, timeout=3).start()
    disrupt(probe, "slow", 1.0)
    with pytest.raises(AssertionError, match="a request took"):
        probe.check(("begin", "end"), max_latency=1.0)


def test_a_loop_that_stopped_early_fails(server: str) -> None:
    probe = Probe(server, timeout=1, max_seconds=1.0).start()
    disrupt(probe, "ok", 2.0)
    with pytest.raises(AssertionError, match="stopped sending before it was stopped"):
        probe.check(("begin", "begin"), max_latency=1.0)


def test_a_refused_connection_is_a_failure() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    probe = Probe(f"http://127.0.0.1:{port}/", timeout=1).start()
    time.sleep(0.5)
    probe.mark("begin")
    probe.mark("end")
    probe.stop()
    with pytest.raises(AssertionError, match=r"(?s)requests failed.*ConnectionError"):
        probe.check(("begin", "end"), max_latency=1.0)
