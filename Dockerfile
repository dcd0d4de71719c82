# One image for every aioshop process; the command picks the role:
#   aioshop serve users|products|orders|gateway|web      aioshop migrate
# Build: docker build -t aioshop .   (or `make images`, which also works without a registry:
# PYTHON_IMAGE names another Python 3.11 base, e.g. one bootstrapped from Debian's packages)
# Run it all: `make compose-up` (README, Containers).
# The image runs with AIOSHOP_ENV=production: give it a JWT key pair (docs/security.md).
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv of aioshop and every dependency (compilers stay in this stage) ---
FROM ${PYTHON_IMAGE} AS build
# The compilers only build wheels here and never reach the runtime image: the distribution's
# current version is the one wanted.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The same install as `make install` and CI, into a venv that the runtime stage copies whole:
# no file of it is ever deleted in a later layer. The dependencies first, in a layer that only
# setup.cfg changes (no package is there yet: this installs what it requires, and an empty
# aioshop; the README is only its long description); then the code, in seconds.
COPY setup.cfg pyproject.toml ./
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
 && touch README.md \
 && /opt/venv/bin/python -m pip install --quiet --no-cache-dir --upgrade pip \
 && /opt/venv/bin/python -m pip install --quiet --no-cache-dir .
COPY README.md ./
COPY core ./core
COPY services ./services
COPY gateway ./gateway
COPY web ./web
COPY migrations ./migrations
RUN /opt/venv/bin/python -m pip install --quiet --no-cache-dir --no-deps . \
 && /opt/venv/bin/python -m pip uninstall --quiet --yes pip

# --- runtime: slim, no compilers, non-root ---
FROM ${PYTHON_IMAGE} AS runtime
# production: the settings refuse the public development JWT keys (core/auth/devkeys.py), so a
# container only starts with real keys (JWT_PUBLIC_KEY_FILE, ...; see docs/security.md).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    AIOSHOP_ENV=production
# A fixed uid, so that files made for the containers (keys, secrets) can be owned by it. The
# key directories are mount points of the compose file's named volumes, which copy their owner
# and mode when created: only aioshop can write them, and read the private one.
RUN groupadd --system --gid 10001 aioshop \
 && useradd --system --uid 10001 --gid aioshop --home /app aioshop \
 && install -d -o aioshop -g aioshop -m 0700 /var/lib/aioshop/jwt-private \
 && install -d -o aioshop -g aioshop -m 0755 /var/lib/aioshop/jwt-public
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
EXPOSE 8000 8001 8002 8003 8080
# Every role: HTTP on HEALTH_PORT, or HTTPS verified against HEALTH_CAFILE when that is set
# (the gateway of the compose file serves TLS with its own certificate).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, ssl, urllib.request as u; ca = os.environ.get('HEALTH_CAFILE'); u.urlopen(('https' if ca else 'http') + '://127.0.0.1:' + os.environ.get('HEALTH_PORT', '8000') + '/healthz', timeout=2, context=ssl.create_default_context(cafile=ca) if ca else None)"]
CMD ["aioshop", "serve", "gateway", "--host", "0.0.0.0"]
