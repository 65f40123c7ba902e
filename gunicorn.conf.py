"""gunicorn settings for a model-holding Flask app.

Every value can be overridden by an environment variable (documented in
README). Each worker holds its own model: keep workers few (1 per GPU, 1-2
on CPU) and use threads for I/O. Never preload: TensorFlow does not survive
fork.
"""
import os

bind = f"{os.environ.get('PNEUMO_HOST', '127.0.0.1')}:{os.environ.get('PNEUMO_PORT', '8000')}"
workers = int(os.environ.get("PNEUMO_WORKERS", "1"))
threads = int(os.environ.get("PNEUMO_THREADS", "4"))
worker_class = "gthread"
preload_app = False
# the first request after start-up may include graph tracing; model load happens before ready
timeout = int(os.environ.get("PNEUMO_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
max_requests = int(os.environ.get("PNEUMO_MAX_REQUESTS", "0"))
# Access log without query strings or bodies: method, path, status, size, time.
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
loglevel = os.environ.get("PNEUMO_LOG_LEVEL", "info").lower()
limit_request_line = 4094
