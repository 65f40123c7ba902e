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
import time
import urllib.request
import uuid
from pathlib import Path

from pneumo import paths

ROOT = paths.project_root()


def multipart_file(data: bytes, filename: str, field: str = "files") -> tuple[bytes, str]:
    """A one-file ``multipart/form-data`` body and its Content-Type header value."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
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

    def __init__(self, model_dir: str | Path, instance_dir: str | Path, workers: int = 1,
                 threads: int = 4, log_path: str | Path | None = None,
                 env: dict | None = None, timeout: float = 180):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.instance_dir = Path(instance_dir)
        full_env = dict(os.environ, PNEUMO_PORT=str(self.port), PNEUMO_HOST="127.0.0.1",
                        PNEUMO_MODEL_DIR=str(model_dir), PNEUMO_INSTANCE_DIR=str(instance_dir),
                        PNEUMO_WORKERS=str(workers), PNEUMO_THREADS=str(threads), **(env or {}))
        self._own_log_dir = None
        if log_path is None:  # keep the output so a failed start can say why
            self._own_log_dir = Path(tempfile.mkdtemp(prefix="pneumo-server-"))
            log_path = self._own_log_dir / "gunicorn.log"
        self._log = out = open(log_path, "w")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
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
