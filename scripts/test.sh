#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, builds, runs `swift test`
# (XCTest; the suite has no Swift Testing tests) and ends with one "N passed, N failed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build --build-tests
log=$(mktemp)
# A throwaway PostgreSQL cluster for the PostgreSQL store's tests, stopped and removed on exit.
pgdir=$(mktemp -d /tmp/layerskip-pg.XXXXXX)
trap 'bash scripts/pg-test-cluster.sh stop "$pgdir" || true; rm -rf "$pgdir" "$log"' EXIT
LAYERSKIP_TEST_POSTGRES=$(bash scripts/pg-test-cluster.sh start "$pgdir")
export LAYERSKIP_TEST_POSTGRES LAYERSKIP_TEST_POSTGRES_DIR="$pgdir" LAYERSKIP_REQUIRE_POSTGRES=1
status=0
swift test --skip-build --disable-swift-testing "$@" 2>&1 | tee "$log" || status=$?
summary=$(grep -E "Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -1 || true)
if [ -n "$summary" ]; then
    total=$(sed -E 's/.*Executed ([0-9]+) tests?.*/\1/' <<<"$summary")
    failed=$(sed -E 's/.*with ([0-9]+) failures?.*/\1/' <<<"$summary")
    echo "tests: $((total - failed)) passed, $failed failed"
fi
exit $status
