#!/usr/bin/env bash
# The suite after lint, types and the unit tier: `make pytest`, and with CI=true (as .ci/run
# runs it) `make compose-test` beside it: the system in containers, built and faulted on this
# machine's Docker engine (deploy/images/kit.py installs and starts it where it is missing).
# Side by side because the container test mostly waits (faults last 20 s, recoveries are
# timed) while the suite keeps both cores busy; its output goes to compose-test.log and is
# printed after the suite's. Fails when either fails; the containers are removed afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."

case "${CI:-}" in
  true | 1) ;;
  *) exec make --no-print-directory pytest ;;
esac

make --no-print-directory compose-test >compose-test.log 2>&1 &
containers=$!
make --no-print-directory pytest
suite=$?
wait "$containers"
system=$?
echo "=== make compose-test (exit $system) ==="
cat compose-test.log
make --no-print-directory compose-down >/dev/null 2>&1 || true
[ "$suite" -eq 0 ] && [ "$system" -eq 0 ]
