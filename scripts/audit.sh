#!/usr/bin/env bash
# `make audit`: pip-audit of the installed environment (the project's venv, $VENV, default .venv)
# against a vulnerability service ($AUDIT_SERVICE: pypi, the default, or osv).
#
# Exit status: 0 no known vulnerability; 1 vulnerabilities found, or pip-audit failed part-way;
# 2 pip-audit is not installed; 3 the vulnerability service cannot be reached. An environment
# that was not audited never passes: no network means a failure that says so, never a silent 0.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="$VENV/bin/python"
SERVICE="${AUDIT_SERVICE:-pypi}"
TIMEOUT="${AUDIT_TIMEOUT:-15}"

case "$SERVICE" in
  pypi) PROBE="https://pypi.org/pypi/pip/json" ;;
  osv) PROBE="https://api.osv.dev/v1/query" ;;
  *) echo "audit: AUDIT_SERVICE must be pypi or osv, not '$SERVICE'" >&2; exit 2 ;;
esac

if [ ! -x "$PYTHON" ]; then
  echo "audit: no Python at $PYTHON (run 'make install' first, or set VENV)" >&2
  exit 2
fi
if ! "$PYTHON" -m pip_audit --version >/dev/null 2>&1; then
  echo "audit: pip-audit is not installed in $VENV: $PYTHON -m pip install 'pip-audit>=2.9,<3'" >&2
  exit 2
fi

# One request to the service first, so that "cannot reach it" is told apart from the findings.
if ! reason=$("$PYTHON" - "$PROBE" "$TIMEOUT" <<'PY' 2>&1
import json
import sys
import urllib.error
import urllib.request

url, timeout = sys.argv[1], float(sys.argv[2])
data = None
if url.endswith("/v1/query"):  # OSV answers POSTs only
    data = json.dumps({"package": {"name": "pip", "ecosystem": "PyPI"}, "version": "0"}).encode()
request = urllib.request.Request(url, data=data, headers={"User-Agent": "aioshop-audit"})
try:
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # nosec B310: fixed https URL
        response.read(1)
except (urllib.error.URLError, OSError, ValueError) as exc:
    print(getattr(exc, "reason", exc))
    sys.exit(1)
PY
); then
  echo "audit: FAILED: cannot reach the vulnerability service ($PROBE): $reason" >&2
  echo "audit: the environment was NOT audited" >&2
  exit 3
fi

echo "audit: auditing $VENV against $SERVICE" >&2
status=0
"$PYTHON" -m pip_audit --local --skip-editable --strict --progress-spinner off \
  --vulnerability-service "$SERVICE" --timeout "$TIMEOUT" --desc on || status=$?
if [ "$status" -ne 0 ]; then
  echo "audit: FAILED (pip-audit exit status $status): known vulnerabilities above, or the" \
    "audit could not finish (see its error)" >&2
  exit 1
fi
echo "audit: no known vulnerabilities" >&2
