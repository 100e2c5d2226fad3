#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, builds, runs `swift test`
# (XCTest; the suite has no Swift Testing tests) and ends with one "tests: N passed, N failed, N skipped" line.
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
# One line per test case: "Test Case '...' passed|failed|skipped (N seconds)". (The closing
# "Executed N tests, with M failures" counts failed assertions, not tests, and gains "K tests skipped
# and" when some skip.)
count() { grep -a -c -E "^Test Case '.*' $1 \(" "$log" || true; }
echo "tests: $(count passed) passed, $(count failed) failed, $(count skipped) skipped"
exit $status
