"""The container images and the "Docker" section of docs/operations.md.

The Dockerfile checks and the first-login command line run everywhere. The
real thing, ``scripts/docker_smoke.sh`` (build the image, run the documented lines,
upload a SIIM DICOM, restart, stop), needs a Docker engine: marker ``docker``,
skipped with the reason when none is reachable.
"""

import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

SMOKE = ROOT / "scripts" / "docker_smoke.sh"
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]


def instructions(dockerfile: str, keyword: str) -> list[str]:
    """Every ``keyword`` instruction of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / dockerfile).read_text())
    return [line for line in text.splitlines() if line.startswith(keyword + " ")]


def pins() -> dict[str, str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_healthcheck_reports_healthy_soon_without_hammering(dockerfile):
    (check,) = instructions(dockerfile, "HEALTHCHECK")
    options = dict(re.findall(r"--([\w-]+)=(\d+)s", check))
    assert "start-interval" not in options, "Docker 20.10 rejects --start-interval"
    interval, timeout = int(options["interval"]), int(options["timeout"])
    assert 2 <= interval <= 10 and timeout < interval
    assert int(options["start-period"]) >= 60 and "pneumo-healthcheck" in check


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_user_has_a_writable_home_and_no_build_leftovers(dockerfile):
    (useradd,) = [r for r in instructions(dockerfile, "RUN") if "useradd" in r]
    assert "--uid 10001" in useradd and "--create-home --home-dir /home/pneumo" in useradd
    text = (ROOT / dockerfile).read_text()
    env = "ENV HOME=/home/pneumo MPLCONFIGDIR=/home/pneumo/.config/matplotlib"
    assert env in text and text.index(env) < text.index("USER 10001:10001")
    installs = [r for r in instructions(dockerfile, "RUN") if "pip install --no-deps ." in r]
    assert installs and all("rm -rf build ./*.egg-info" in r for r in installs)
    assert any(
        "chown pneumo:pneumo /data /home/pneumo/.config" in r
        for r in instructions(dockerfile, "RUN")
    )


def test_gpu_image_runs_the_pinned_tensorflow_and_keras():
    (base,) = instructions("Dockerfile.gpu", "FROM")
    assert base == f"FROM tensorflow/tensorflow:{pins()['tensorflow']}-gpu"
    (filter_run,) = [r for r in instructions("Dockerfile.gpu", "RUN") if "requirements.txt" in r]
    dropped = re.search(r"grep -v -E '([^']+)' requirements.txt", filter_run).group(1)
    kept = [
        line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if not re.search(dropped, line)
    ]
    assert f"keras=={pins()['keras']}" in kept
    assert not any(line.startswith("tensorflow") for line in kept)


def _requirements_installed(install: str) -> list[str]:
    """The requirement lines a Dockerfile's ``RUN <filter> > /tmp/req.txt && pip install``
    gives pip."""
    res = subprocess.run(
        [
            "sh",
            "-c",
            install.removeprefix("RUN ").split(" && ")[0].replace("/tmp/req.txt", "/dev/stdout"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return res.stdout.splitlines()


def test_cpu_images_install_the_pinned_requirements():
    """The full image: the CPU build of the pinned TensorFlow and everything else as
    pinned; the slim (default, last) image: the same without TensorFlow and Keras, with
    the bundled model's network converted in the full one."""
    full, slim = [r for r in instructions("Dockerfile", "RUN") if "requirements.txt" in r]
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    installed = _requirements_installed(full)
    assert f"tensorflow-cpu=={pins()['tensorflow']}" in installed
    assert f"keras=={pins()['keras']}" in installed and "tensorflow==" not in "\n".join(installed)
    assert len(installed) == len(requirements)
    lean = _requirements_installed(slim)
    assert not any(line.startswith(("tensorflow", "keras")) for line in lean)
    assert any(line.startswith(f"openvino=={pins()['openvino']}") for line in lean)
    assert len(lean) == len(requirements) - 2
    stages = instructions("Dockerfile", "FROM")
    assert stages[-1] == "FROM base AS slim" and "FROM base AS full" in stages
    (convert,) = [r for r in instructions("Dockerfile", "RUN") if "convert-network" in r]
    assert "PNEUMO_NETWORKS" in convert
    assert "COPY --from=full /opt/pneumo/networks /opt/pneumo/networks" in instructions(
        "Dockerfile", "COPY"
    )


def test_smoke_script_takes_readme_docker_lines_as_written():
    """Both first logins are documented, and the smoke script finds each line it runs."""
    res = subprocess.run(
        ["bash", str(SMOKE), "--print-commands"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    build, plain, password, user, token, curl = res.stdout.splitlines()
    assert build == "docker build -t pneumo ."
    assert re.fullmatch(
        r"docker run -d --name (\S+) -p 127\.0\.0\.1:\d+:8000 "
        r"-v \1-data:/data pneumo",
        plain,
    )
    assert "-e PNEUMO_ACCESS_PASSWORD=" in password
    assert user.startswith("docker run --rm -i -v ") and user.endswith("--password-stdin")
    assert " pneumo pneumo create-token " in token
    assert "Authorization: Bearer pn_..." in curl


def _cli(*args, stdin: str):
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def _authenticates(data_dir, name, password) -> bool:
    from app.store.repository import Store

    return Store(str(data_dir)).accounts.authenticate(name, password) is not None


def test_create_user_reads_a_piped_password_once(tmp_path):
    """`docker run -i ... create-user` gives a pipe: one line, no prompt, no second ask."""
    res = _cli(
        "create-user", "erin", "--data-dir", str(tmp_path), stdin="first line pw\nsecond line pw\n"
    )
    assert res.returncode == 0 and "created user erin" in res.stdout, res.stderr
    assert "Password" not in res.stderr and "Warning" not in res.stderr
    assert _authenticates(tmp_path, "erin", "first line pw")
    res = _cli(
        "create-user",
        "fay",
        "--password-stdin",
        "--data-dir",
        str(tmp_path),
        stdin="crlf line pw\r\n",
    )
    assert res.returncode == 0 and _authenticates(tmp_path, "fay", "crlf line pw")


def test_create_user_at_a_terminal_asks_twice(tmp_path, monkeypatch, capsys):
    import getpass

    from app import cli

    class Terminal:
        def isatty(self):
            return True

        def readline(self):  # pragma: no cover - must not be read
            raise AssertionError("read stdin at a terminal")

    answers = iter(["typed once pw", "typed twice pw", "same pw here", "same pw here"])
    prompts = []
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr(getpass, "getpass", lambda prompt: prompts.append(prompt) or next(answers))
    assert cli.main(["create-user", "gus", "--data-dir", str(tmp_path)]) == 2
    assert "do not match" in capsys.readouterr().err and len(prompts) == 2
    assert cli.main(["create-user", "gus", "--data-dir", str(tmp_path)]) == 0
    assert len(prompts) == 4 and _authenticates(tmp_path, "gus", "same pw here")


def docker_engine_problem() -> str | None:
    """Why the smoke test cannot run here, or None when a Docker engine answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "no Docker engine reachable: no `docker` command on PATH"
    try:
        res = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "no Docker engine reachable: `docker info` timed out"
    if res.returncode != 0:
        why = (res.stderr.strip().splitlines() or ["no answer"])[-1]
        return f"no Docker engine reachable (`docker info`: {why})"
    return None


def run_smoke(script, dicom) -> dict:
    """Run a smoke script (``scripts/*_smoke.sh --dicom FILE``); its ``SMOKE`` figures."""
    res = subprocess.run(
        ["bash", str(script), "--dicom", str(dicom)],
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("SMOKE "), res.stdout[-2000:]
    print(res.stdout)
    return json.loads(last.removeprefix("SMOKE "))


@pytest.mark.docker
@pytest.mark.slow
def test_readme_docker_commands_on_a_real_engine(positive_dicom):
    problem = docker_engine_problem()
    if problem:
        pytest.skip(problem)
    figures = run_smoke(SMOKE, positive_dicom)
    assert figures["image_bytes"] <= 800e6  # the slim image (issue 36)
    assert figures["uid"] == 10001
    assert figures["stop_s"] < 10
    assert figures["healthy_after_ready_s"] <= 10
