"""The nginx in front of gunicorn when the service is exposed (``PNEUMO_PROXY=1``).

gunicorn's threaded workers hold a thread for each connection while they read its
headers and body, so a handful of clients that send a byte now and then can take
every thread (four slow connections took the service offline in the Hardening II
probe). nginx reads each request whole, with short header and body timeouts, before
it hands it to gunicorn on a unix socket; slow clients then cost nginx a few
kilobytes each and gunicorn nothing. The configuration is made from the settings
(port, request size limit, worker timeout), so nothing is written twice.

gunicorn starts nginx itself (``when_ready`` in ``gunicorn.conf.py``), once it listens
on its socket and before its workers start, so nginx never forwards to a socket that is
not there yet, and stops it when it exits. ``pneumo proxy-config RUN_DIR`` writes the
configuration for a look (or an nginx run by hand).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from app.settings import Settings

#: Seconds a client may take to send its request headers, and between two reads of its
#: body: a slow client is dropped (408) instead of holding a connection.
HEADER_TIMEOUT_S = 10
BODY_TIMEOUT_S = 20


def listen_address(settings: Settings) -> str:
    """nginx's ``listen`` value for the public host and port."""
    host = settings.host.strip("[]")
    return f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"


def nginx_config(settings: Settings, run_dir: str | Path) -> str:
    """A complete nginx.conf for running nginx as the service's own user (no root), with
    its pid file and temporary files under ``run_dir``."""
    run = Path(run_dir).resolve()
    # Started by root, nginx would run its workers as "nobody", who cannot open gunicorn's
    # private socket (umask 077): they run as the user gunicorn runs as. As any other user
    # (the Docker image: uid 10001) nginx runs as that user anyway.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {run / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# Made by `pneumo proxy-config` from the PNEUMO_* settings; do not edit.
{user}worker_processes 1;
pid {run / "nginx.pid"};
error_log stderr warn;
events {{
    worker_connections 1024;
}}
http {{
    # gunicorn logs every request (escaped, without queries or UIDs; app/accesslog.py)
    access_log off;
    server_tokens off;
{temp}
    client_header_timeout {HEADER_TIMEOUT_S}s;
    client_body_timeout {BODY_TIMEOUT_S}s;
    send_timeout 60s;
    keepalive_timeout 15s;
    client_max_body_size {settings.max_content_length};
    client_body_buffer_size 1m;
    large_client_header_buffers 4 8k;
    upstream pneumo {{
        server unix:{settings.upstream_socket};
    }}
    server {{
        listen {listen_address(settings)};
        location / {{
            proxy_pass http://pneumo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_connect_timeout 5s;
            proxy_read_timeout {settings.timeout + 10}s;
        }}
    }}
}}
"""


class ProxyError(RuntimeError):
    """nginx could not be started in front of gunicorn."""


def run_dir(settings: Settings) -> Path:
    """nginx's folder: its configuration, pid file and temporary files."""
    return settings.instance_dir / "nginx"


def write_config(settings: Settings, folder: str | Path | None = None) -> Path:
    """Write nginx.conf for ``settings`` into ``folder`` (the instance's by default)."""
    folder = Path(folder) if folder is not None else run_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    conf = folder / "nginx.conf"
    conf.write_text(nginx_config(settings, folder))
    return conf


def _nginx(conf: Path, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise ProxyError(
            "PNEUMO_PROXY is on but nginx is not installed (apt-get install nginx-light)"
        )
    # not captured: the daemon keeps its output open, and nginx's own [emerg] line is
    # the reason the operator needs to read in the service's log
    return subprocess.run([binary, "-e", "stderr", "-c", str(conf), *args], timeout=30)


def start_nginx(settings: Settings) -> Path:
    """Write the configuration and start nginx (it runs in the background); raises
    :class:`ProxyError` when it cannot start (nginx's own reason is in the log above)."""
    conf = write_config(settings)
    if _nginx(conf).returncode != 0:
        raise ProxyError(
            "nginx could not start in front of gunicorn (PNEUMO_PROXY=1); "
            "its reason is on the line above"
        )
    return conf


def stop_nginx(settings: Settings) -> None:
    """Ask the nginx started by :func:`start_nginx` to finish its requests and stop."""
    conf = run_dir(settings) / "nginx.conf"
    if (run_dir(settings) / "nginx.pid").exists():
        _nginx(conf, "-s", "quit")
