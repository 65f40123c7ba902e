"""The nginx in front of gunicorn when the service is exposed (``PNEUMO_PROXY=1``).

gunicorn's threaded workers hold a thread for each connection while they read its
headers and body, so a handful of clients that send a byte now and then can take
every thread (four slow connections took the service offline in the Hardening II
probe). nginx reads each request whole, with short header and body timeouts, before
it hands it to gunicorn on a unix socket; slow clients then cost nginx a few
kilobytes each and gunicorn nothing. The configuration is made from the settings
(port, request size limit, worker timeout), so nothing is written twice:
``pneumo proxy-config RUN_DIR`` prints it (the container entrypoint uses it).
"""
from __future__ import annotations

import os
import pwd
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
    temp = "\n".join(f"    {kind}_temp_path {run / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
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
