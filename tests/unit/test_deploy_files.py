"""docker-compose.yml and the Dockerfile, checked without a Docker engine: structure, health checks, start order,
and that every variable they set or read is one sizer knows."""
from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from backend.cli import cli
from backend.config import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SIZER_SERVICES = ("migrate", "api", "worker")
SETTINGS = {name.upper() for name in VARIABLES}
DOCKERFILE = [line.strip() for line in (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
              if line.strip() and not line.lstrip().startswith("#")]


def sizer_commands() -> set[str]:
    names = {c.name or c.callback.__name__.replace("_", "-") for c in cli.registered_commands}
    return names | {g.name for g in cli.registered_groups}


def test_the_console_script_is_the_cli():
    module, _, name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["sizer"].partition(":")
    assert getattr(importlib.import_module(module), name) is cli


def test_the_default_stack_needs_no_broker_account_and_workers_join_by_profile():
    assert set(SERVICES) == {"postgres", "redis", "migrate", "api", "worker"}
    default = {name for name, spec in SERVICES.items() if "profiles" not in spec}
    assert default == {"postgres", "migrate", "api"}
    assert SERVICES["redis"]["profiles"] == SERVICES["worker"]["profiles"] == ["workers"]
    assert SERVICES["postgres"]["image"] == "postgres:16" and SERVICES["redis"]["image"] == "redis:7"
    assert "--appendonly" in SERVICES["redis"]["command"]
    # the API takes BROKER from .env (the simulator unless told otherwise); migrations never need broker keys
    assert "BROKER" not in SERVICES["api"]["environment"] and SERVICES["migrate"]["environment"]["BROKER"] == "sim"
    assert SERVICES["worker"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_services_start_in_order():
    def conditions(name):
        return {dep: spec["condition"] for dep, spec in SERVICES[name]["depends_on"].items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert conditions("api") == {"migrate": "service_completed_successfully"}  # no dependency on a profile
    assert conditions("worker") == {"migrate": "service_completed_successfully", "redis": "service_healthy"}


def test_compose_keeps_to_plain_forms():
    """Forms every Compose implementation reads: env_file as a plain path, depends_on conditions, profiles."""
    for name in SIZER_SERVICES:
        assert SERVICES[name]["env_file"] == ".env"
    for spec in SERVICES.values():
        for dep in spec.get("depends_on", {}).values():
            assert set(dep) == {"condition"}


@pytest.mark.parametrize("service, probe", [("postgres", "pg_isready"), ("redis", "redis-cli ping"),
                                            ("api", "/healthz")])
def test_health_checks(service, probe):
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and probe in " ".join(test[1:])


def test_data_lives_in_declared_named_volumes():
    used = {v.split(":")[0] for s in SERVICES.values() for v in s.get("volumes", [])}
    assert used == {"postgres-data", "redis-data"} and used <= set(COMPOSE["volumes"])


def test_workers_scale():
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"] == ["sizer", "worker"]


@pytest.mark.parametrize("service", SIZER_SERVICES)
def test_sizer_services_set_only_known_settings(service):
    spec = SERVICES[service]
    unknown = set(spec["environment"]) - SETTINGS
    assert not unknown, f"{service} sets variables sizer does not read: {unknown}"
    assert spec["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")


def test_every_interpolated_variable_is_known_and_the_key_is_required():
    text = (ROOT / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert referenced and all(v in SETTINGS or v.startswith("POSTGRES_") for v in referenced), referenced
    assert SERVICES["api"]["environment"]["SIZER_API_KEY"].startswith("${SIZER_API_KEY:?")


@pytest.mark.parametrize("service", SIZER_SERVICES)
def test_compose_runs_real_sizer_commands(service):
    program, command, *_ = SERVICES[service]["command"]
    assert program == "sizer" and command in sizer_commands()


def instruction(name: str) -> list[str]:
    return [line[len(name):].strip() for line in DOCKERFILE if line.upper().startswith(name + " ")]


def test_dockerfile_builds_in_stages_and_runs_unprivileged():
    assert len(instruction("FROM")) >= 2
    assert any(c.startswith("--from=builder ") for c in instruction("COPY"))
    users = instruction("USER")
    assert users and users[-1] not in ("root", "0")
    assert "/healthz" in instruction("HEALTHCHECK")[-1] and "urllib" in instruction("HEALTHCHECK")[-1]


def test_dockerfile_installs_cpu_torch_before_the_package():
    runs = instruction("RUN")
    torch = next(i for i, r in enumerate(runs) if "torch==2.13.0" in r)
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs[torch]
    package = next(i for i, r in enumerate(runs) if re.search(r"pip install (-e )?\.$", r))
    assert torch < package


def test_dockerfile_serves_with_a_real_command():
    cmd = instruction("CMD")[-1]
    args = json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd)
    assert args[:2] == ["sizer", "serve"] and "serve" in sizer_commands()
    assert args[args.index("--host") + 1] == "0.0.0.0"
