"""MLflow's server flags as the installer sets them: the frame header (DENY,
NONE and the default), the cross-origin rule (a listed origin is granted,
another is not), the keep-alive timeout and telemetry, seen in the server's
answers."""

from __future__ import annotations

import http.client
import time
import urllib.parse
from typing import Any

import requests
import testinfra.host
from conftest import answers, main_pid, role_defaults, run_site, wait_for

NOTEBOOKS = "https://notebooks.example"


def preflight(mlflow_url: str, origin: str) -> requests.Response:
    """A browser's CORS preflight for a POST from `origin`."""
    return requests.options(
        f"{mlflow_url}/api/2.0/mlflow/experiments/search",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )


def converge(extra_vars: dict[str, Any], mlflow_url: str) -> None:
    result = run_site(extra_vars)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    wait_for(lambda: answers(f"{mlflow_url}/health"), timeout=120)


def test_answers_forbid_framing_by_other_sites(mlflow_url: str) -> None:
    response = requests.get(f"{mlflow_url}/health", timeout=10)
    assert response.headers.get("X-Frame-Options") == "SAMEORIGIN"


def test_an_unlisted_origin_gets_no_cross_origin_grant(mlflow_url: str) -> None:
    response = preflight(mlflow_url, "https://evil.example")
    assert "https://evil.example" not in response.headers.get("Access-Control-Allow-Origin", "")
    assert response.headers.get("Access-Control-Allow-Origin") != "*"


def test_the_frame_header_and_allowed_origins_follow_the_variables(mlflow_url: str) -> None:
    """SAMEORIGIN (above) is MLflow's own default: only DENY, NONE and a listed
    origin show that the variables reach the server. The default comes back last."""
    try:
        converge({"mlflow_x_frame_options": "DENY", "mlflow_cors_allowed_origins": [NOTEBOOKS]}, mlflow_url)
        assert requests.get(f"{mlflow_url}/health", timeout=10).headers.get("X-Frame-Options") == "DENY"
        granted = preflight(mlflow_url, NOTEBOOKS)
        assert granted.ok, granted.text
        assert granted.headers.get("Access-Control-Allow-Origin") == NOTEBOOKS
        assert "POST" in granted.headers.get("Access-Control-Allow-Methods", "")
        refused = preflight(mlflow_url, "https://evil.example")
        assert refused.headers.get("Access-Control-Allow-Origin") in (None, ""), refused.headers

        converge({"mlflow_x_frame_options": "NONE"}, mlflow_url)
        assert "X-Frame-Options" not in requests.get(f"{mlflow_url}/health", timeout=10).headers
        assert "Access-Control-Allow-Origin" not in preflight(mlflow_url, NOTEBOOKS).headers
    finally:
        converge({}, mlflow_url)
    assert requests.get(f"{mlflow_url}/health", timeout=10).headers.get("X-Frame-Options") == "SAMEORIGIN"


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
