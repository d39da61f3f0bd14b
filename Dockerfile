# syntax=docker/dockerfile:1
# Build stage: compile wheels (asyncpg, zstandard …) with the build tools here only.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir .

# Final stage: the venv and the migrations, no compilers, a non-root user.
FROM python:3.11-slim
RUN groupadd --system ecswatch && useradd --system --gid ecswatch --home /app ecswatch
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
# service.migrate finds alembic/ beside the package; keep the package in /app too.
COPY alembic ./alembic
COPY service ./service
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ECSWATCH_DATA_DIR=/app/.ecswatch \
    ECSWATCH_LOG_FORMAT=json
RUN mkdir -p /app/.ecswatch && chown -R ecswatch:ecswatch /app
USER ecswatch
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["ecswatch"]
CMD ["run", "--host", "0.0.0.0", "--port", "8000"]
