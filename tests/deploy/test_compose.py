"""deploy/docker-compose.yml and deploy/Dockerfile, checked without Docker (none in CI).

The compose file must parse, build the image from deploy/Dockerfile, mount
the rendered ACL file where deploy/redis.conf's ``aclfile`` looks, keep
protected mode on, and give every multipair process its Redis role's
password from a file the documented setup makes, never from the compose file
itself. The Dockerfile must copy only files that exist and run as a non-root
user.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (a test extra) is not installed")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
TEXT = COMPOSE.read_text(encoding="utf-8")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(TEXT)
    return loaded


def setup_lines() -> str:
    """The setup the file's header comment tells to run (comment text, ``#`` removed)."""
    return "\n".join(line.lstrip("#").strip() for line in TEXT.splitlines() if line.startswith("#"))


def supervisors() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return {name: s for name, s in services.items() if name != "redis"}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts (``./x:/y[:ro]``)."""
    found = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith((".", "/")):
            found[container] = host
    return found


def test_it_parses_and_runs_redis_and_two_supervisors() -> None:
    services = compose()["services"]
    assert {"redis", "host-a", "host-b"} == set(services)
    assert [["supervise", "--host-id", h, "--capacity", "100"] for h in ("host-a", "host-b")] == [
        services[h]["command"] for h in ("host-a", "host-b")
    ]


def test_redis_loads_the_rendered_acl_file_and_keeps_protected_mode_on() -> None:
    redis = compose()["services"]["redis"]
    command = [str(word) for word in redis["command"]]
    assert "--protected-mode" not in command
    assert "--aclfile" not in command, "redis.conf names the ACL file"
    conf = (DEPLOY / "redis.conf").read_text(encoding="utf-8")
    [aclfile] = re.findall(r"^aclfile (\S+)$", conf, re.M)
    where = mounts(redis)
    assert "./secrets/users.acl" == where[aclfile]
    assert where[command[1]] == "./redis.conf"
    # The healthcheck holds no password.
    assert "--pass" not in " ".join(redis["healthcheck"]["test"])


def test_every_host_path_exists_or_is_made_by_the_documented_setup() -> None:
    setup = setup_lines()
    paths = [p for s in compose()["services"].values() for p in mounts(s).values()]
    paths += [e for s in supervisors().values() for e in s.get("env_file", [])]
    paths += [s["file"] for s in compose()["secrets"].values()]
    for path in paths:
        relative = path.removeprefix("./")
        if relative.startswith("secrets/"):
            assert relative in setup, f"{path}: the setup does not say how to make it"
        else:
            assert (DEPLOY / relative).exists(), path
    rendered = re.search(r"render_users_acl\.py(.*?)--output (\S+)", setup, re.S)
    assert rendered is not None
    assert {"pos", "service", "ops", "admin"} == set(
        re.findall(r"--(\w+)-password-file", rendered.group(1))
    )
    assert "secrets/users.acl" == rendered.group(2)
    assert (DEPLOY / "redis" / "render_users_acl.py").exists()


def test_supervisors_get_the_service_role_password_from_a_file_not_from_this_one() -> None:
    setup = setup_lines()
    assert "MULTIPAIR_REDIS_URL=redis://multipair-service:" in setup
    for name, service in supervisors().items():
        assert ["./secrets/service.env"] == service["env_file"], name
        assert "MULTIPAIR_REDIS_URL" not in service.get("environment", {}), name
        assert "MULTIPAIR_MASTER_KEY" not in service.get("environment", {}), name
        assert "/run/secrets/master_key" == service["environment"]["MULTIPAIR_MASTER_KEY_FILE"]
        assert ["master_key"] == service["secrets"]
        assert (True, ["ALL"]) == (service["read_only"], service["cap_drop"]), name
        assert 0 == service["ulimits"]["core"], name
    assert "redis://" not in "\n".join(
        line for line in TEXT.splitlines() if not line.lstrip().startswith("#")
    ), "no Redis URL (and so no password) outside the comments"


def test_the_image_is_built_from_deploy_dockerfile_and_runs_as_a_user() -> None:
    for name, service in supervisors().items():
        build = service["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert (ROOT, DOCKERFILE) == (context, (context / build["dockerfile"]).resolve()), name
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for line in lines:
        if line.startswith("COPY "):
            *sources, _ = shlex.split(line)[1:]
            for source in sources:
                assert (ROOT / source).exists(), line
    [user] = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user.split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["multipair"]' in lines
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert "*" in ignore, "the context is the repository: send only what the image needs"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(ignore)
