# CPU image (the default): docker build -t pneumo . && docker run -p 8000:8000 -v pneumo-data:/data pneumo
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PNEUMO_HOST=0.0.0.0 PNEUMO_PORT=8000 PNEUMO_WORKERS=1 PNEUMO_THREADS=4 \
    PNEUMO_INSTANCE_DIR=/data PNEUMO_DATA_DIR=/data/results-store

RUN groupadd --system --gid 10001 pneumo \
    && useradd --system --uid 10001 --gid pneumo --home-dir /app pneumo

WORKDIR /app
# Dependencies first, so code changes do not reinstall TensorFlow.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY pyproject.toml README.md wsgi.py gunicorn.conf.py ./
COPY pneumo/ pneumo/
COPY app/ app/
COPY templates/ templates/
COPY static/ static/
COPY configs/ configs/
COPY models/ models/
COPY docker/entrypoint.sh /usr/local/bin/pneumo-entrypoint
COPY docker/healthcheck.py /usr/local/bin/pneumo-healthcheck
RUN pip install --no-deps . \
    && mkdir -p /data && chown pneumo:pneumo /data \
    && chmod 0755 /usr/local/bin/pneumo-entrypoint /usr/local/bin/pneumo-healthcheck

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# Model load + warm-up take ~10-20 s on a CPU: allow a generous start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["pneumo-healthcheck"]
ENTRYPOINT ["pneumo-entrypoint"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
