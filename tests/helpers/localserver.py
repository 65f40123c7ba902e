"""Start the app under gunicorn on a free loopback port: a harness for tests, benchmarks
and load runs (not part of the product; scripts put tests/ on sys.path to import it).

Only ``127.0.0.1`` is used. No Flask import here: the server is a subprocess.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from pneumo import paths

ROOT = paths.project_root()


def multipart_file(data: bytes, filename: str, field: str = "files") -> tuple[bytes, str]:
    """A one-file ``multipart/form-data`` body and its Content-Type header value."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM a server process, SIGKILL it if it is still there after ``grace_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LocalServer:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` with the given model and data folder.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        cold_start_s: seconds from process start to ``/readyz`` answering 200.
    """

    def __init__(
        self,
        model_dir: str | Path,
        instance_dir: str | Path,
        workers: int = 1,
        threads: int = 4,
        log_path: str | Path | None = None,
        env: dict | None = None,
        timeout: float = 180,
        proxy: bool = False,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.instance_dir = Path(instance_dir)
        full_env = dict(
            os.environ,
            PNEUMO_PORT=str(self.port),
            PNEUMO_HOST="127.0.0.1",
            PNEUMO_MODEL_DIR=str(model_dir),
            PNEUMO_INSTANCE_DIR=str(instance_dir),
            PNEUMO_WORKERS=str(workers),
            PNEUMO_THREADS=str(threads),
            **(env or {}),
        )
        self._own_log_dir = None
        if log_path is None:  # keep the output so a failed start can say why
            self._own_log_dir = Path(tempfile.mkdtemp(prefix="pneumo-server-"))
            log_path = self._own_log_dir / "gunicorn.log"
        self._log = out = open(log_path, "w")
        started = time.perf_counter()
        if proxy:  # gunicorn on a unix socket, the nginx it starts on the port (app/proxy.py)
            full_env["PNEUMO_PROXY"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.cold_start_s = self._wait_ready(started, timeout, log_path)

    def _wait_ready(self, started: float, timeout: float, log_path) -> float:
        while time.perf_counter() - started < timeout:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                break
        log = Path(log_path).read_text()[-3000:]
        self.stop()
        raise RuntimeError(f"gunicorn did not become ready\n{log}")

    def nginx_pid(self) -> int | None:
        """The pid of the nginx gunicorn started in front (PNEUMO_PROXY), if it runs."""
        pid_file = self.instance_dir / "nginx" / "nginx.pid"
        if not pid_file.exists():
            return None
        pid = int(pid_file.read_text())
        return pid if Path(f"/proc/{pid}").exists() else None

    def worker_pids(self) -> list[int]:
        """Process ids of gunicorn's workers."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        """Stop gunicorn (SIGTERM, then SIGKILL after 60 s) and remove its own log folder."""
        stop_process(self.proc, 60)
        self._log.close()
        if self._own_log_dir is not None:  # the caller did not ask to keep the log
            shutil.rmtree(self._own_log_dir, ignore_errors=True)


class SlowClients:
    """``n`` connections that trickle a request: the headers one line every ``every_s``
    seconds (``bodies`` of them send complete headers and then a POST body one byte at a
    time). A connection the server drops is opened again, as an attacker would. Use as a
    context manager; ``reconnects`` counts the drops."""

    def __init__(self, port: int, n: int = 50, bodies: int = 10, every_s: float = 2.0):
        import threading

        self.port, self.n, self.bodies, self.every_s = port, n, bodies, every_s
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, i: int) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if i < self.bodies:
            s.sendall(
                b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: multipart/form-data; boundary=zz\r\n"
                b"Content-Length: 1000000\r\n\r\n"
            )
        else:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        return s

    def _run(self) -> None:
        conns = {}
        while not self._stop.is_set():
            for i in range(self.n):
                try:
                    if i not in conns:
                        conns[i] = self._open(i)
                    else:
                        conns[i].sendall(b"z" if i < self.bodies else b"X-Slow: 1\r\n")
                except OSError:
                    dropped = conns.pop(i, None)
                    if dropped is not None:
                        dropped.close()
                        self.reconnects += 1
            self._stop.wait(self.every_s)
        for s in conns.values():
            s.close()

    def __enter__(self) -> "SlowClients":
        self._thread.start()
        time.sleep(1.0)  # every connection open before the measurements start
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def probe_latencies(
    url: str, duration_s: float, every_s: float = 0.5, timeout_s: float = 5.0
) -> list[float]:
    """GET ``url`` every ``every_s`` seconds for ``duration_s``: each answer's seconds
    (``timeout_s`` when none came in time)."""
    out = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end:
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as r:
                r.read()
            out.append(time.perf_counter() - t)
        except OSError:
            out.append(timeout_s)
        time.sleep(max(0.0, every_s - (time.perf_counter() - t)))
    return out


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def multipart_files(files: list[tuple[bytes, str]], field: str = "files") -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with several files, and its Content-Type value."""
    boundary = uuid.uuid4().hex
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + b"\r\n"
        for data, name in files
    ]
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def stow_body(data: bytes, boundary: str = "pneumo-stow-boundary") -> tuple[bytes, str]:
    """A one-instance STOW-RS ``multipart/related`` body and its Content-Type value."""
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


class Colleagues:
    """Threads that GET ``paths`` of ``url`` with each bearer token in turn until the
    block ends (colleagues reading results: every view an audit write); ``statuses``
    counts their answers (``"no_answer"`` when none came)."""

    def __init__(self, url: str, tokens: list[str], paths: list[str]):
        import collections

        self.url, self.tokens, self.paths = url, tokens, paths
        self.statuses: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, args=(t,), daemon=True) for t in tokens
        ]

    def _read(self, token: str) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                req = urllib.request.Request(
                    self.url + path, headers={"Authorization": f"Bearer {token}"}
                )
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        resp.read()
                        self.statuses[resp.status] += 1
                except urllib.error.HTTPError as exc:
                    with exc:
                        self.statuses[exc.code] += 1
                except OSError:
                    self.statuses["no_answer"] += 1

    def __enter__(self) -> "Colleagues":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
