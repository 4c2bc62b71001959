"""MLflow's server flags as the installer sets them by default, seen in the
server's answers: the frame header, no cross-origin grant, the keep-alive
timeout and telemetry. (DENY, NONE and a listed origin: test_reconfigure.py.)"""

from __future__ import annotations

import http.client
import time
import urllib.parse

import requests
import testinfra.host
from conftest import main_pid, role_defaults


def preflight(mlflow_url: str, origin: str) -> requests.Response:
    """A browser's CORS preflight for a POST from `origin`."""
    return requests.options(
        f"{mlflow_url}/api/2.0/mlflow/experiments/search",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )


def test_answers_forbid_framing_by_other_sites(mlflow_url: str) -> None:
    response = requests.get(f"{mlflow_url}/health", timeout=10)
    assert response.headers.get("X-Frame-Options") == "SAMEORIGIN"


def test_an_unlisted_origin_gets_no_cross_origin_grant(mlflow_url: str) -> None:
    response = preflight(mlflow_url, "https://evil.example")
    assert "https://evil.example" not in response.headers.get("Access-Control-Allow-Origin", "")
    assert response.headers.get("Access-Control-Allow-Origin") != "*"


def test_an_idle_connection_outlives_uvicorns_default_keep_alive(mlflow_url: str) -> None:
    """uvicorn closes idle connections after 5 s unless told otherwise: a second
    request on the same connection after 8 s idle must still be answered on it."""
    assert int(role_defaults("mlflow")["mlflow_keepalive_timeout"]) > 8
    url = urllib.parse.urlsplit(mlflow_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        connection.request("GET", "/health")
        first = connection.getresponse()
        first.read()
        assert first.status == 200
        local = connection.sock.getsockname()
        time.sleep(8)
        connection.request("GET", "/health")
        second = connection.getresponse()
        second.read()
        assert second.status == 200
        assert connection.sock.getsockname() == local, "the server closed the idle connection"
    finally:
        connection.close()


def test_the_server_and_its_ui_report_no_usage(host: testinfra.host.Host, mlflow_url: str) -> None:
    """mlflow_telemetry_enabled false: the workers run with MLFLOW_DISABLE_TELEMETRY
    and the UI is told to send nothing."""
    pid = main_pid(host, "mlflow")
    environment = host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines()
    assert "MLFLOW_DISABLE_TELEMETRY=true" in environment
    ui = requests.get(f"{mlflow_url}/ajax-api/3.0/mlflow/ui-telemetry", timeout=10)
    assert ui.status_code == 200
    assert ui.json()["disable_ui_telemetry"] is True
