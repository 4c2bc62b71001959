"""The vm scenario's prepared image bakes in the Debian packages the roles
install on its single host: the list must stay what the roles ask for, or the
scenario would quietly test a host the roles never prepare."""

from __future__ import annotations

import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def role_vars(role: str) -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load((ROOT / "roles" / role / "vars" / "main.yml").read_text())
    return data


def test_the_prepared_image_holds_exactly_the_roles_packages() -> None:
    listed = {
        line.strip()
        for line in (ROOT / "vm" / "packages-prepared").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    postgresql = role_vars("postgresql")
    versions = postgresql["__postgresql_default_versions"]
    assert isinstance(versions, dict)
    wanted: set[str] = set()
    for role, name in (
        ("postgresql", "__postgresql_packages"),
        ("mlflow", "__mlflow_os_packages"),
        ("mlflow_backup", "__mlflow_backup_os_packages"),
    ):
        packages = role_vars(role)[name]
        assert isinstance(packages, list)
        wanted |= {str(p).replace("{{ __postgresql_version }}", str(versions["Debian-12"])) for p in packages}
    assert listed == wanted
