"""docker-compose.yml holds what docs/operations.md says it does: one worker per GPU, each with
its own device, name and scratch volume; health checks and init; images built or pinned; a CPU
profile; PgBouncer in transaction mode with a direct LISTEN; a max_connections that fits.
(.ci/run also runs `docker-compose config` on it where the binary installs.)"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from drtrain.kit.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
WORKERS = {name: s for name, s in SERVICES.items() if name.startswith("worker-")}
GPU_WORKERS = {name: s for name, s in WORKERS.items() if "gpu" in s.get("profiles", [])}


def _env(service: dict[str, Any]) -> dict[str, str]:
    return service.get("environment", {})


def _host(url: str) -> str:
    return re.sub(r"^.*@([^:/]+).*$", r"\1", url)


def test_every_image_is_built_here_or_pinned() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert tag and tag != "latest", (name, image)
    for name in ("api", "migrate", *WORKERS):
        assert "build" in SERVICES[name], name


def test_our_images_carry_the_packages_version() -> None:
    # one version for the package, its images and `drtrain --version`
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name in ("api", "migrate", *WORKERS):
        assert SERVICES[name]["image"].endswith(f":{version}"), (name, SERVICES[name]["image"])


def test_the_api_image_has_no_torch() -> None:
    assert SERVICES["api"]["build"]["target"] == "api"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    api_stage = dockerfile.split("AS api", 1)[1]
    assert "torch" not in api_stage.split("!", 1)[0]  # installs nothing with torch...
    assert '! python -c "import torch"' in api_stage  # ...and the build proves it


def test_one_worker_per_gpu_each_with_its_device_name_and_scratch() -> None:
    assert len(GPU_WORKERS) >= 2
    devices, names, volumes = [], [], []
    for name, service in GPU_WORKERS.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert "count" not in device, name  # count spreads nothing: every replica gets GPU 0
        devices += device["device_ids"]
        names.append(_env(service)["WORKER_NAME"])
    for name, service in WORKERS.items():
        (volume,) = service["volumes"]
        assert volume.endswith(":/data"), (name, volume)
        volumes.append(volume.split(":")[0])
        assert volumes[-1] in COMPOSE["volumes"]
    assert len(set(devices)) == len(devices) == len(GPU_WORKERS)
    assert len(set(names)) == len(names)
    assert len(set(volumes)) == len(volumes) == len(WORKERS)


def test_workers_are_named_health_checked_and_run_under_init() -> None:
    for name, service in WORKERS.items():
        assert service["init"] is True, name
        assert "--name \"$$WORKER_NAME\"" in service["command"][-1], name
        check = service["healthcheck"]["test"][-1]
        assert "inspect ping" in check and "$$WORKER_NAME@$$HOSTNAME" in check, name
    assert SERVICES["api"]["init"] is True and "healthcheck" in SERVICES["api"]


def test_a_cpu_profile_worker_without_a_gpu() -> None:
    cpu = [s for s in WORKERS.values() if "cpu" in s.get("profiles", [])]
    assert cpu and all("deploy" not in s for s in cpu)
    assert all(s["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu") for s in cpu)


def test_pgbouncer_in_transaction_mode_with_a_direct_listen_and_migration() -> None:
    env = _env(SERVICES["api"])
    assert _host(env["DRTRAIN_DATABASE_URL"]) == "pgbouncer"
    assert _host(env["DRTRAIN_DATABASE_LISTEN_URL"]) == "postgres"
    assert _host(_env(SERVICES["migrate"])["DRTRAIN_DATABASE_URL"]) == "postgres"
    bouncer = _env(SERVICES["pgbouncer"])
    assert bouncer["POOL_MODE"] == "transaction"
    assert int(bouncer["MAX_PREPARED_STATEMENTS"]) > 0
    # Clients: two per training worker and 2 x api_threads per API process, for 100 workers
    # and a few API processes.
    assert int(bouncer["MAX_CLIENT_CONN"]) >= 2 * 100 + 4 * 2 * Settings().api_threads


def test_max_connections_fits_the_documented_sizing() -> None:
    command = SERVICES["postgres"]["command"]
    max_connections = int(next(c.split("=")[1] for c in command if "max_connections" in c))
    pooled = int(_env(SERVICES["pgbouncer"])["DEFAULT_POOL_SIZE"])
    listens, migrate, superuser_reserved, operators = 10, 1, 3, 5
    assert max_connections >= pooled + listens + migrate + superuser_reserved + operators


def test_every_drtrain_variable_is_a_setting() -> None:
    fields = {f"DRTRAIN_{name.upper()}" for name in Settings.model_fields}
    for name, service in SERVICES.items():
        unknown = {k for k in _env(service) if k.startswith("DRTRAIN_")} - fields
        assert not unknown, (name, unknown)
