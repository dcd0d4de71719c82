# syntax=docker/dockerfile:1
# One image for every aioshop process; the command picks the role:
#   aioshop serve users|products|orders   python -m gateway   python -m web   aioshop migrate
# Build: docker build -t aioshop .      Run it all: docker compose up

# --- build: wheels of aioshop and every dependency (compilers stay in this stage) ---
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY core ./core
COPY services ./services
COPY gateway ./gateway
COPY web ./web
COPY migrations ./migrations
# The same install as `make install` and CI, built into wheels instead of a venv.
RUN python -m pip install --quiet --upgrade pip \
 && python -m pip wheel --quiet --wheel-dir /wheels .

# --- runtime: slim, no compilers, non-root ---
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
RUN groupadd --system aioshop && useradd --system --gid aioshop --home /app aioshop
COPY --from=build /wheels /wheels
RUN python -m pip install --quiet --no-index --find-links /wheels aioshop \
 && rm -rf /wheels
WORKDIR /app
USER aioshop
EXPOSE 8000 8001 8002 8003 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"HEALTH_PORT\", \"8000\")}/healthz', timeout=2)"]
CMD ["python", "-m", "gateway", "--host", "0.0.0.0"]
