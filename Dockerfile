# syntax=docker/dockerfile:1
# One image for every aioshop process; the command picks the role:
#   aioshop serve users|products|orders|gateway|web      aioshop migrate
# Build: docker build -t aioshop .      Run it all: sh deploy/gen-secrets.sh && docker compose up
# The image runs with AIOSHOP_ENV=production: give it a JWT key pair (docs/security.md).

# --- build: wheels of aioshop and every dependency (compilers stay in this stage) ---
FROM python:3.11-slim AS build
# The compilers only build wheels here and never reach the runtime image: the distribution's
# current version is the one wanted.
# hadolint ignore=DL3008
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
# hadolint ignore=DL3013
RUN python -m pip install --quiet --no-cache-dir --upgrade pip \
 && python -m pip wheel --quiet --no-cache-dir --wheel-dir /wheels .

# --- runtime: slim, no compilers, non-root ---
FROM python:3.11-slim AS runtime
# production: the settings refuse the public development JWT keys (core/auth/devkeys.py), so a
# container only starts with real keys (JWT_PUBLIC_KEY_FILE, ...; see docs/security.md).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    AIOSHOP_ENV=production
# A fixed uid, so that files made for the containers (keys, secrets) can be owned by it. The
# key directories are mount points of the compose file's named volumes, which copy their owner
# and mode when created: only aioshop can write them, and read the private one.
RUN groupadd --system --gid 10001 aioshop \
 && useradd --system --uid 10001 --gid aioshop --home /app aioshop \
 && install -d -o aioshop -g aioshop -m 0700 /var/lib/aioshop/jwt-private \
 && install -d -o aioshop -g aioshop -m 0755 /var/lib/aioshop/jwt-public
COPY --from=build /wheels /wheels
# The wheels were built from this source in the build stage: they pin themselves.
# hadolint ignore=DL3013
RUN python -m pip install --quiet --no-cache-dir --no-index --find-links /wheels aioshop \
 && rm -rf /wheels
WORKDIR /app
USER 10001:10001
EXPOSE 8000 8001 8002 8003 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"HEALTH_PORT\", \"8000\")}/healthz', timeout=2)"]
CMD ["aioshop", "serve", "gateway", "--host", "0.0.0.0"]
