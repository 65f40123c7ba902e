# CPU images. Build and first start: docs/operations.md, "Docker"
# (bound to 0.0.0.0, the app refuses to start until a login exists).
#
#   docker build -t pneumo .                          # slim (the default): no TensorFlow
#   docker build --target full -t pneumo:full .       # full: TensorFlow + Keras as well
#
# Both serve the bundled model through OpenVINO (its card's choice) from the network
# converted once here, at build time, so neither converts at start. The slim image has no
# TensorFlow or Keras: it serves only networks converted beforehand (the bundled one, or one
# `pneumo convert-network` kept with the full image); the full image also serves any other
# model folder, runtime (PNEUMO_RUNTIME=keras) or Keras backend, and trains.

# --- what both images share: user, nginx, entrypoint, settings, health check -----------
FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PNEUMO_HOST=0.0.0.0 PNEUMO_PORT=8000 PNEUMO_WORKERS=1 PNEUMO_THREADS=4 \
    PNEUMO_INSTANCE_DIR=/data PNEUMO_DATA_DIR=/data/results-store PNEUMO_HOME=/app \
    PNEUMO_PROXY=1

# A real, writable home: gunicorn keeps its control socket in ~/.gunicorn, and
# matplotlib (a training extra) its cache in MPLCONFIGDIR. /app stays root-owned.
RUN groupadd --system --gid 10001 pneumo \
    && useradd --system --uid 10001 --gid pneumo --create-home --home-dir /home/pneumo \
       --shell /usr/sbin/nologin pneumo

# nginx in front of gunicorn (PNEUMO_PROXY=1, app/proxy.py): it reads each request whole,
# with short timeouts, so slow clients cannot hold gunicorn's threads. Debian's own
# security updates decide its version (not pinned).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx-light \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

COPY docker/entrypoint.sh /usr/local/bin/pneumo-entrypoint
COPY docker/healthcheck.py /usr/local/bin/pneumo-healthcheck
RUN mkdir -p /data /home/pneumo/.config/matplotlib \
    && chown pneumo:pneumo /data /home/pneumo/.config /home/pneumo/.config/matplotlib \
    && chmod 0755 /usr/local/bin/pneumo-entrypoint /usr/local/bin/pneumo-healthcheck

# Converted networks are kept on the data volume (XDG_CACHE_HOME); the entrypoint puts the
# one converted at build time (PNEUMO_NETWORKS) there when it is missing.
ENV HOME=/home/pneumo MPLCONFIGDIR=/home/pneumo/.config/matplotlib XDG_CACHE_HOME=/data/cache \
    PNEUMO_NETWORKS=/opt/pneumo/networks
VOLUME ["/data"]
EXPOSE 8000
# Docker 20.10 has no --start-interval, so the interval itself is short: the
# first probe that finds /readyz at 200 marks the container healthy, at most
# 5 s after the model is ready; one GET of a cheap endpoint every 5 s after
# that. Failures during the start period (model load) do not count.
HEALTHCHECK --interval=5s --timeout=3s --start-period=120s --retries=3 \
    CMD ["pneumo-healthcheck"]
ENTRYPOINT ["pneumo-entrypoint"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
WORKDIR /app

# --- full: TensorFlow + Keras; converts the bundled model's network ---------------------
FROM base AS full
# Dependencies first, so code changes do not reinstall TensorFlow. The CPU
# build of the pinned TensorFlow (same version, no CUDA kernels: a smaller
# image, and no "failed call to cuInit" ERROR line at every start); everything
# else exactly as requirements.txt pins it.
COPY requirements.txt ./
RUN sed -E 's/^tensorflow==/tensorflow-cpu==/' requirements.txt > /tmp/req.txt \
    && pip install -r /tmp/req.txt \
    && rm /tmp/req.txt
COPY pyproject.toml README.md wsgi.py gunicorn.conf.py ./
COPY pneumo/ pneumo/
COPY app/ app/
COPY templates/ templates/
COPY static/ static/
COPY configs/ configs/
COPY models/ models/
# The in-tree build leaves build/ and *.egg-info behind: remove them in the same layer.
# Then the bundled model's OpenVINO network, converted once (the files of a cache folder).
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && HOME=/tmp/convert XDG_CACHE_HOME=/tmp/convert pneumo convert-network \
    && mkdir -p "$PNEUMO_NETWORKS" \
    && mv /tmp/convert/pneumo/* "$PNEUMO_NETWORKS"/ \
    && rm -rf /tmp/convert
USER 10001:10001

# --- slim (the default): the same app without TensorFlow or Keras -------------------------
FROM base AS slim
COPY requirements.txt ./
# OpenVINO as the slim image uses it: the CPU plugin and the IR reader (the GPU and NPU
# plugins, their kernel cache and the converters from other formats are left out: 78 MB).
RUN grep -v -E '^(tensorflow|keras)==' requirements.txt > /tmp/req.txt \
    && pip install -r /tmp/req.txt \
    && rm /tmp/req.txt \
    && ov="$(python -c 'import openvino, os; print(os.path.dirname(openvino.__file__))')/libs" \
    && rm -f "$ov"/libopenvino_intel_gpu_plugin.so "$ov"/libopenvino_intel_npu_plugin.so \
       "$ov"/cache.json \
    && find "$ov" -name 'libopenvino_*_frontend.so*' ! -name 'libopenvino_ir_frontend.so*' -delete
# the same project files as the full stage (copied there from the build context)
COPY --from=full /app /app
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info
COPY --from=full /opt/pneumo/networks /opt/pneumo/networks
USER 10001:10001
