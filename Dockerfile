# syntax=docker/dockerfile:1
# ecswatch image: the wheel is built in the first stage and installed in the final
# one, with the migrations inside the package (no source tree, no PYTHONPATH).
# Every dependency ships wheels for linux/amd64 and linux/arm64 on CPython 3.11, so
# neither stage needs a compiler; a dependency without a wheel fails the build here.

# Build stage: the ecswatch wheel and the wheels of all its dependencies.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY service ./service
COPY alembic ./alembic
RUN pip wheel --no-cache-dir --prefer-binary --wheel-dir /wheels .

# Final stage: a venv with the wheels installed offline, a non-root user.
FROM python:3.11-slim
ARG UID=10001
# The Amazon RDS certificate authorities, added to the system trust store, so that
# ECSWATCH_DATABASE_SSLMODE=verify-full verifies an RDS or Aurora server
# (docs/deploy.md "Database TLS"). Fetched at build time over HTTPS from AWS.
# checkov:skip=CKV_DOCKER_4:ADD fetches the RDS CA bundle from its HTTPS URL; no local file is copied with ADD
ADD --chmod=644 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /usr/local/share/ca-certificates/amazon-rds-global-bundle.crt
RUN update-ca-certificates
RUN groupadd --system --gid "${UID}" ecswatch \
 && useradd --system --uid "${UID}" --gid ecswatch --home-dir /app --no-create-home ecswatch
WORKDIR /app
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/ecswatch-*.whl \
 && mkdir -p /app/.ecswatch \
 && chown -R "${UID}:${UID}" /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ECSWATCH_DATA_DIR=/app/.ecswatch \
    ECSWATCH_LOG_FORMAT=json
USER ${UID}:${UID}
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["ecswatch"]
CMD ["run", "--host", "0.0.0.0", "--port", "8000"]
