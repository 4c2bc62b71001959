"""What only a real machine shows: Ansible came in over SSH and sudo, the
kernel gives the services user namespaces of their own (PrivateUsers=), and
after a real reboot everything comes back on its own, in order, with its data."""

from __future__ import annotations

import re
import time
import uuid

import mlflow
import pytest
import requests
import testinfra.host
from conftest import PG_UNIT, answers, check_exposure, record, wait_for
from mlflow import MlflowClient


def test_a_virtual_machine_not_a_container(host: testinfra.host.Host) -> None:
    assert host.run("systemd-detect-virt --container").rc != 0
    assert host.check_output("systemd-detect-virt") in {"qemu", "kvm"}
    assert host.check_output("cat /proc/1/comm") == "systemd"


def test_ansible_came_in_over_ssh_and_sudo(host: testinfra.host.Host) -> None:
    """The lab user logged in with its key, and became root through sudo."""
    sshd = host.check_output("journalctl -b --no-pager -o cat -u ssh.service")
    assert re.search(r"Accepted publickey for lab from 10\.0\.2\.2 ", sshd), sshd[-500:]
    sudo = host.check_output("journalctl -b --no-pager -o cat _COMM=sudo")
    assert re.search(r"lab : .*USER=root ; COMMAND=", sudo), sudo[-500:]


@pytest.mark.parametrize(("unit", "user"), [("minio.service", "minio"), ("mlflow.service", "mlflow")])
def test_private_users_in_effect(host: testinfra.host.Host, unit: str, user: str) -> None:
    """PrivateUsers=: the server's user namespace maps root and its own user, nothing else."""
    assert host.check_output(f"systemctl show -p PrivateUsers --value {unit}") == "yes"
    pid = host.check_output(f"systemctl show -p MainPID --value {unit}")
    uid_map = host.check_output(f"cat /proc/{pid}/uid_map").split("\n")
    uid = host.check_output(f"id -u {user}")
    assert sorted(line.split()[0] for line in uid_map) == sorted({"0", uid}), uid_map
    # Every other user is unmapped inside: PostgreSQL's files belong to the overflow uid there.
    assert host.check_output(f"nsenter -U -t {pid} -- stat -c %u /var/lib/postgresql") == "65534"
    check_exposure(host, unit)


def since_boot(host: testinfra.host.Host, unit: str) -> int:
    """When a unit became active, in microseconds since boot."""
    return int(host.check_output(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}"))


def test_reboot_brings_everything_back_in_order_with_its_data(
    host: testinfra.host.Host, mlflow_url: str
) -> None:
    client = MlflowClient(tracking_uri=mlflow_url)
    mlflow.set_tracking_uri(mlflow_url)
    experiment_id = client.create_experiment(f"reboot-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_param("before", "reboot")
        mlflow.log_metric("loss", 0.25)
        mlflow.log_text("survives the reboot", "note.txt")
    boot_id = host.check_output("cat /proc/sys/kernel/random/boot_id")

    # systemd reboots a second later, so that this command returns first.
    host.check_output("systemd-run --on-active=1 --unit=verify-reboot systemctl reboot")
    start = time.monotonic()
    wait_for(lambda: not answers(f"{mlflow_url}/health", timeout=2), timeout=60)
    wait_for(lambda: answers(f"{mlflow_url}/health", timeout=2), timeout=600)
    seconds = time.monotonic() - start
    record(f"reboot (systemctl reboot) to a healthy /health: {seconds:.1f} s")

    assert host.check_output("cat /proc/sys/kernel/random/boot_id") != boot_id
    for unit in (PG_UNIT, "minio", "mlflow"):
        assert host.service(unit).is_running, unit
    # In order: MLflow after the stores it needs, at its first start.
    assert since_boot(host, "mlflow") > since_boot(host, PG_UNIT)
    assert since_boot(host, "mlflow") > since_boot(host, "minio")
    assert host.check_output("systemctl show -p NRestarts --value mlflow") == "0"

    stored = client.get_run(run.info.run_id)
    assert stored.data.params == {"before": "reboot"}
    assert stored.data.metrics == {"loss": 0.25}
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/note.txt") == "survives the reboot"
    assert requests.get(f"{mlflow_url}/version", timeout=10).ok
