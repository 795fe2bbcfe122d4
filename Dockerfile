# syntax=docker/dockerfile:1
#
# chat-unread-exporter container image.
#
#   docker build -t chat-unread-exporter:0.1.0 .
#   docker run --rm -p 9866:9866 chat-unread-exporter:0.1.0 --demo
#   docker run --rm -p 9866:9866 \
#     -v "$PWD/config.yaml:/etc/chat-unread-exporter/config.yaml:ro" \
#     -v "$PWD/secrets:/run/secrets:ro" -e CRISP_IDENTIFIER \
#     chat-unread-exporter:0.1.0
#
# Nothing site-specific is baked in: the config file is mounted at
# /etc/chat-unread-exporter/config.yaml and secrets come from environment variables
# (`${VAR}` in the config) or files mounted under /run/secrets (`*_file:` fields).
# See deploy/README.md.

# ---------------------------------------------------------------------------------------------
# Builder: installs the project and its dependencies into a self-contained venv in /opt/venv.
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed.
# ---------------------------------------------------------------------------------------------
FROM python:3.11.13-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter

# Install the project (non-editable) with its runtime dependencies, byte-compile it so that a
# read-only root filesystem costs nothing at start-up, then drop the packaging tools: the
# runtime image needs neither pip nor setuptools.
RUN pip install --no-cache-dir /src \
    && python -m compileall -q /opt/venv/lib \
    && pip uninstall --yes pip setuptools \
    && chat-unread-exporter --version

# ---------------------------------------------------------------------------------------------
# Runtime: the same slim base, only the venv copied in, non-root numeric user.
# ---------------------------------------------------------------------------------------------
FROM python:3.11.13-slim-bookworm

LABEL org.opencontainers.image.title="chat-unread-exporter" \
      org.opencontainers.image.description="Prometheus exporter for unread chat messages (Crisp, QuickBlox, IMKit, Sendbird, Intercom, Stream Chat, Matrix, and plugins)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHAT_UNREAD_HEALTHCHECK_URL=http://127.0.0.1:9866/-/healthy

COPY --from=builder /opt/venv /opt/venv

# 65532 is the conventional "nonroot" UID/GID; it needs no passwd entry. The venv stays owned
# by root, so the process cannot modify its own code.
USER 65532:65532
WORKDIR /tmp

EXPOSE 9866

# No curl in the slim image: probe with the interpreter that is already there. Override
# CHAT_UNREAD_HEALTHCHECK_URL if you change --web.listen-address.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['CHAT_UNREAD_HEALTHCHECK_URL'], timeout=4).status == 200 else 1)"]

# The config path is part of the ENTRYPOINT, so arguments add to it instead of replacing it:
# `IMAGE --log.level=debug` still reads the mounted config, and a later `--config.file=...`
# overrides it (the last one wins). `--demo` ignores the config file. No default arguments.
ENTRYPOINT ["chat-unread-exporter", "--config.file=/etc/chat-unread-exporter/config.yaml"]
CMD []
