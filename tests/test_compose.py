"""Checks for docker-compose.yml, the Dockerfile and the helper scripts in docker/.

No Docker engine is needed: the compose file is validated against the official
Compose Specification JSON schema (compose-spec/compose-spec, schema/compose-spec.json),
using the copy vendored in the installed ``check-jsonschema`` package
(``check_jsonschema/builtin_schemas/vendor/compose-spec.json``), plus structural
assertions about the services that matter to Staccato.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.resources
import json
import os
import re
import shlex
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SEARCH_ATTRIBUTES = ["StaccatoSource", "StaccatoDestination", "StaccatoState"]

SCHEMA_PACKAGE = "check_jsonschema.builtin_schemas.vendor"
SCHEMA_NAME = "compose-spec.json"


# --------------------------------------------------------------------------- helpers


def load_compose_schema() -> dict[str, Any]:
    """The Compose Specification schema as shipped (vendored) by check-jsonschema."""
    resource = importlib.resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_NAME)
    return json.loads(resource.read_text(encoding="utf-8"))


def compose_errors(document: Any, schema: dict[str, Any]) -> list[str]:
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]


def depends_on_names(service: dict[str, Any]) -> dict[str, str | None]:
    """depends_on in either form -> {service: condition or None}."""
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {name: None for name in deps}
    return {name: (spec or {}).get("condition") for name, spec in deps.items()}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def as_argv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def image_tag(image: str) -> str | None:
    """The tag (or digest) of an image reference; None when it has neither."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


def bind_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            source = vol.split(":", 1)[0]
        else:
            source = vol.get("source", "") if vol.get("type", "volume") == "bind" else ""
        if source.startswith((".", "/")):
            sources.append(source)
    return sources


def named_volume_sources(service: dict[str, Any]) -> list[str]:
    names = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) >= 2 and not parts[0].startswith((".", "/", "~")):
                names.append(parts[0])
        elif vol.get("type", "volume") == "volume" and vol.get("source"):
            names.append(vol["source"])
    return names


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)  # exec (JSON array) form is required
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return load_compose_schema()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        document = yaml.safe_load(fh)
    assert isinstance(document, dict), "docker-compose.yml must be a mapping"
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the schema


def test_schema_is_the_vendored_compose_spec(schema: dict[str, Any]) -> None:
    from check_jsonschema.catalog import SCHEMA_CATALOG

    # check-jsonschema vendors it from the compose-spec repository.
    assert SCHEMA_CATALOG["compose-spec"]["url"].endswith(
        "compose-spec/master/schema/compose-spec.json"
    )
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]
    # The vendored file is intact (check-jsonschema records its sha256).
    vendor = importlib.resources.files(SCHEMA_PACKAGE)
    recorded = vendor.joinpath("sha256", "compose-spec.sha256").read_text().split()[0]
    actual = hashlib.sha256(vendor.joinpath(SCHEMA_NAME).read_bytes()).hexdigest()
    assert actual == recorded
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_compose_file_is_valid_against_compose_spec(
    compose: dict[str, Any], schema: dict[str, Any]
) -> None:
    errors = compose_errors(compose, schema)
    assert not errors, "docker-compose.yml violates the Compose Specification:\n" + "\n".join(
        errors
    )


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda d: d.update(servces=d.pop("services")), id="misspelled-top-level-key"),
        pytest.param(
            lambda d: d["services"]["worker"].update(comand=["worker"]), id="unknown-service-key"
        ),
        pytest.param(
            lambda d: d["services"]["worker"]["depends_on"]["temporal"].update(
                condition="service_ready"
            ),
            id="bad-depends-on-condition",
        ),
        pytest.param(
            lambda d: d["services"]["minio"].update(ports={"9000": 9000}), id="ports-not-a-list"
        ),
        pytest.param(
            lambda d: d["services"]["temporal"]["healthcheck"].update(retries=[3]),
            id="retries-a-list",
        ),
        pytest.param(
            lambda d: d["services"]["postgresql"].update(volumes="pgdata"), id="volumes-not-a-list"
        ),
    ],
)
def test_schema_check_rejects_broken_compose_files(
    compose: dict[str, Any], schema: dict[str, Any], breakage: Any
) -> None:
    """Guard against a validation that silently accepts anything."""
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert compose_errors(broken, schema)


def test_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


# --------------------------------------------------------------------------- services


def test_expected_services_present(services: dict[str, Any]) -> None:
    expected = {
        "postgresql", "temporal", "temporal-setup", "temporal-ui",
        "minio", "minio-setup", "sftp", "sftp-setup", "worker",
    }  # fmt: skip
    assert expected <= set(services)


def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service.get("image")
        if image is None:
            assert "build" in service, f"{name}: neither image nor build"
            continue
        assert "${" not in image, f"{name}: image tag must not come from the environment: {image}"
        tag = image_tag(image)
        assert tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} uses :latest"


def test_images(services: dict[str, Any]) -> None:
    assert services["postgresql"]["image"] == "postgres:16"
    assert services["temporal"]["image"].startswith("temporalio/auto-setup:")
    assert services["temporal-setup"]["image"].startswith("temporalio/admin-tools:")
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["minio"]["image"].startswith("minio/minio:")
    assert services["minio-setup"]["image"].startswith("minio/mc:")


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in named_volume_sources(service):
            assert volume in declared, f"{name}: volume {volume!r} is not declared"
    assert "postgresql-data" in named_volume_sources(services["postgresql"])


def test_bind_mounted_files_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for source in bind_sources(service):
            assert (ROOT / source).exists(), f"{name}: bind mount source {source} is missing"


def test_temporal_uses_postgres(services: dict[str, Any]) -> None:
    temporal = services["temporal"]
    env = environment(temporal)
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] == "postgresql"
    assert env["POSTGRES_PWD"] == environment(services["postgresql"])["POSTGRES_PASSWORD"]
    assert depends_on_names(temporal) == {"postgresql": "service_healthy"}
    assert "healthcheck" in services["postgresql"]
    assert "healthcheck" in temporal


def test_temporal_ui(services: dict[str, Any]) -> None:
    ui = services["temporal-ui"]
    assert environment(ui)["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert any(str(p).split(":")[-1] == "8080" for p in ui["ports"])


def test_worker(services: dict[str, Any], dockerfile: list[tuple[str, str]]) -> None:
    worker = services["worker"]
    build = worker["build"]
    assert (build if isinstance(build, str) else build.get("context")) == "."

    deps = depends_on_names(worker)
    assert "temporal" in deps, "worker must depend on temporal"
    assert deps["temporal"] == "service_healthy"
    assert deps.get("temporal-setup") == "service_completed_successfully"
    assert deps.get("minio-setup") == "service_completed_successfully"

    # Effective command: the image's ENTRYPOINT + the service's command.
    entrypoint = as_argv(worker.get("entrypoint")) or exec_form(
        [a for k, a in dockerfile if k == "ENTRYPOINT"][-1]
    )
    assert entrypoint + as_argv(worker.get("command")) == ["staccato", "worker"]

    env = environment(worker)
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    minio_env = environment(services["minio"])
    assert env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    assert any(str(v).split(":")[1] == "/data" for v in worker["volumes"] if isinstance(v, str))


def test_minio(services: dict[str, Any]) -> None:
    minio = services["minio"]
    assert as_argv(minio["command"]) == ["server", "/data", "--console-address", ":9001"]
    published = {str(p).split(":")[-1] for p in minio["ports"]}
    assert {"9000", "9001"} <= published
    assert "healthcheck" in minio

    setup = services["minio-setup"]
    assert depends_on_names(setup) == {"minio": "service_healthy"}
    script = " ".join(as_argv(setup.get("entrypoint")) + as_argv(setup.get("command")))
    assert "mc mb --ignore-existing local/staccato" in script


def test_sftp(services: dict[str, Any]) -> None:
    sftp = services["sftp"]
    assert "openssh-server" in sftp["image"]
    env = environment(sftp)
    assert env["USER_NAME"] == "staccato"
    assert env["PASSWORD_ACCESS"] == "false"
    key_dir = env["PUBLIC_KEY_DIR"]
    assert any(
        isinstance(v, str) and v.split(":")[1] == key_dir and v.startswith("./")
        for v in sftp["volumes"]
    ), "authorized key dir must be bind-mounted"
    assert depends_on_names(services["sftp-setup"]) == {"sftp": "service_healthy"}


# --------------------------------------------------------------------------- search attributes


def test_search_attributes_registered(services: dict[str, Any]) -> None:
    setup = services["temporal-setup"]
    assert depends_on_names(setup) == {"temporal": "service_healthy"}
    env = environment(setup)
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["STACCATO_SEARCH_ATTRIBUTES"].split() == SEARCH_ATTRIBUTES


def _fake_temporal(tmp_path: Path, listed: str) -> tuple[dict[str, str], Path]:
    """A stand-in `temporal` CLI that logs its arguments."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "bin" / "temporal"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {shlex.quote(str(log))}\n'
        'case "$*" in *"search-attribute list"*) printf %s "$LISTED" ;; esac\n'
        "exit 0\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {
        "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
        "LISTED": listed,
        "TEMPORAL_ADDRESS": "temporal:7233",
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_SEARCH_ATTRIBUTES": " ".join(SEARCH_ATTRIBUTES),
    }
    return env, log


def _setup_script(services: dict[str, Any]) -> Path:
    setup = services["temporal-setup"]
    argv = as_argv(setup["entrypoint"]) + as_argv(setup.get("command"))
    assert argv[0] == "/bin/sh"
    container_path = argv[1]
    for vol in setup["volumes"]:
        source, target = vol.split(":")[:2]
        if target == container_path:
            return ROOT / source
    raise AssertionError(f"{container_path} is not mounted into temporal-setup")


def test_search_attribute_script_creates_keyword_attributes(
    services: dict[str, Any], tmp_path: Path
) -> None:
    env, log = _fake_temporal(tmp_path, listed="")
    subprocess.run(["sh", str(_setup_script(services))], env=env, check=True, capture_output=True)
    created = [line for line in log.read_text().splitlines() if "search-attribute create" in line]
    names = [re.search(r"--name (\S+) --type Keyword", line).group(1) for line in created]  # type: ignore[union-attr]
    assert names == SEARCH_ATTRIBUTES
    assert all("--namespace default" in line for line in created)


def test_search_attribute_script_is_idempotent(services: dict[str, Any], tmp_path: Path) -> None:
    listed = "".join(f"  {name}  Keyword\n" for name in SEARCH_ATTRIBUTES)
    env, log = _fake_temporal(tmp_path, listed=listed)
    subprocess.run(["sh", str(_setup_script(services))], env=env, check=True, capture_output=True)
    assert "search-attribute create" not in log.read_text()


@pytest.mark.parametrize("script", sorted((ROOT / "docker").rglob("*.sh")), ids=lambda p: p.name)
def test_helper_scripts_parse(script: Path) -> None:
    subprocess.run(["sh", "-n", str(script)], check=True)


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile(dockerfile: list[tuple[str, str]]) -> None:
    froms = [args for k, args in dockerfile if k == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim"
    runs = " ".join(args for k, args in dockerfile if k == "RUN")
    assert re.search(r"pip install (--\S+ )*\.(\s|$)", runs), (
        "project must be installed with `pip install .`"
    )

    users = [args for k, args in dockerfile if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "must run as a non-root user"

    entrypoints = [args for k, args in dockerfile if k == "ENTRYPOINT"]
    assert entrypoints and exec_form(entrypoints[-1]) == ["staccato"]
    cmds = [args for k, args in dockerfile if k == "CMD"]
    assert cmds and exec_form(cmds[-1]) == ["worker"]


def test_entrypoint_is_the_projects_console_script() -> None:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        scripts = tomllib.load(fh)["project"]["scripts"]
    assert "staccato" in scripts


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list style: ignore everything, then re-include"
    assert {"!pyproject.toml", "!staccato/"} <= set(lines)
