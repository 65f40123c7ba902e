"""gunicorn settings for a model-holding Flask app.

Every value comes from the ``PNEUMO_*`` environment variables through
``app.settings.Settings`` (documented in README). Each worker holds its own
model: keep workers few (1 per GPU, 1-2 on CPU) and use threads for I/O.
Never preload: TensorFlow does not survive fork.
"""

import os
import sys

from app.proxy import ProxyError, start_nginx, stop_nginx
from app.settings import Settings, SettingsError, login_problem, shared_secret_problem
from app.store.database import StoreProblem
from app.store.repository import Store

try:
    _settings = Settings.from_env()
except SettingsError as _exc:
    print(f"pneumo refuses to start: {_exc}", file=sys.stderr)
    sys.exit(3)

bind = _settings.gunicorn_bind  # a unix socket behind nginx (PNEUMO_PROXY, app/proxy.py)
workers = _settings.workers
threads = _settings.threads
worker_class = "gthread"
# A gthread worker accepts connections up to worker_connections, then leaves the rest in the
# shared listen queue. Tied to its threads, a worker holds only what it is working on, so a
# killed worker loses only those requests; the others wait for a live worker (measured in
# benchmarks/README.md, asserted by tests/test_load.py).
worker_connections = _settings.worker_connections or _settings.threads
preload_app = False
# the first request after start-up may include graph tracing; the model loads in the background
timeout = _settings.timeout
graceful_timeout = 30
# Keep-alive needs connections beyond the threads (gthread holds idle keep-alive connections
# apart); with connections tied to threads it is off, so gunicorn has nothing to warn about.
keepalive = 5 if worker_connections > threads else 0
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# results (stored DICOMs, images) readable by the service's user only: files 0600, folders 0700
# (gunicorn's own umask setting applies to daemons only; the hooks below set it everywhere)
umask = 0o077
max_requests = _settings.max_requests
# Access log without query strings or bodies: method, path, status, size, time. The path is
# escaped (no forged lines, no NUL bytes) and DICOMweb UIDs are written as {uid}.
logger_class = "app.accesslog.SafeAccessLogger"
accesslog = "-"
access_log_format = (
    "%({x-forwarded-for}i)s" if _settings.proxy else "%(h)s"
) + ' "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
loglevel = _settings.log_level.lower()
limit_request_line = 4094


def post_fork(server, worker):
    """In each worker: files it writes are its user's alone."""
    os.umask(0o077)


def on_starting(server):
    """In the master, before it listens: refuse an open service beyond loopback."""
    os.umask(0o077)
    if _settings.proxy:  # gunicorn's socket goes into the instance folder (app/proxy.py)
        _settings.instance_dir.mkdir(parents=True, exist_ok=True)
    problem = shared_secret_problem(_settings)
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(3)
    store = Store.from_settings(_settings)
    try:
        if _settings.shared_database:
            store.init()  # the schema once, before any worker (the workers find it made)
        n_users = store.accounts.count() if store.db.exists else 0
    except StoreProblem as exc:  # the workers start and /readyz says why; a login needs it
        n_users = 0
        if not (_settings.loopback or _settings.access_password):
            print(f"pneumo refuses to start: {exc}", file=sys.stderr)
            sys.exit(3)
    store.close()  # the master keeps no database connection: its workers open their own
    problem = login_problem(_settings, n_users)
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(3)


def when_ready(server):
    """In the master, listening and before any worker: the nginx in front (PNEUMO_PROXY),
    so that nginx never forwards to a socket that is not there yet."""
    if _settings.proxy:
        try:
            start_nginx(_settings)
        except ProxyError as exc:
            print(f"pneumo refuses to start: {exc}", file=sys.stderr)
            sys.exit(3)


def on_exit(server):
    """In the master, at the end: stop the nginx it started."""
    if _settings.proxy:
        stop_nginx(_settings)
