#!/usr/bin/env bash
# Queue throughput of N real daemons on one PostgreSQL with trivial jobs (tiny model, one prompt,
# one token each): jobs/s from the first claim to the last finish, end to end through the spools.
#   scripts/bench-multihost.sh ADMIN_URL [DAEMONS=3] [JOBS=600]
# ADMIN_URL: a PostgreSQL URL whose user may CREATE DATABASE (scripts/pg-test-cluster.sh start prints one).
# Uses .build/release/layerskip (swift build -c release first).
set -euo pipefail
admin=${1:?usage: bench-multihost.sh ADMIN_URL [DAEMONS] [JOBS]}
daemons=${2:-3}
jobs=${3:-600}
cd "$(dirname "$0")/.."
bin=.build/release/layerskip
[ -x "$bin" ] || { echo "build first: swift build -c release" >&2; exit 1; }
db="bench_$(date +%s)_$$"
psql "$admin" -qc "CREATE DATABASE $db"
url="${admin%/*}/$db"
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
for d in $(seq 0 $((daemons - 1))); do
    mkdir -p "$work/h$d/spool/incoming"
    cat > "$work/h$d/layerskip.yaml" <<EOC
state_directory: state
spool_directory: spool
models: {tiny: $PWD/Tests/Fixtures/tiny-bytelevel-gqa-f32}
store: {postgresql: "$url"}
worker_name: bench-h$d
log_level: warning
scan_interval_seconds: 0.2
EOC
done
# The files first (into each host's spool, round robin), then the daemons: intake and runs overlap
# as they would under load.
for j in $(seq 0 $((jobs - 1))); do
    d=$((j % daemons))
    printf 'model: tiny\nmax_new_tokens: 1\nprompts: ["job %d"]\n' "$j" > "$work/h$d/spool/incoming/.j$j.tmp"
    mv "$work/h$d/spool/incoming/.j$j.tmp" "$work/h$d/spool/incoming/j$j.yaml"
done
for d in $(seq 0 $((daemons - 1))); do
    "$bin" serve --config "$work/h$d/layerskip.yaml" 2> "$work/h$d/serve.log" &
    pids+=($!)
done
while [ "$(psql "$url" -Atc "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'" 2>/dev/null || echo 0)" -lt "$jobs" ]; do sleep 0.2; done
psql "$url" -At -F ' ' -c "
  SELECT COUNT(*), MAX(at) - MIN(at), COUNT(*) / NULLIF(MAX(at) - MIN(at), 0),
         (SELECT COUNT(DISTINCT worker) FROM events WHERE to_state = 'running')
  FROM events WHERE to_state IN ('running', 'succeeded') AND (to_state = 'succeeded' OR note LIKE 'attempt 1 %')" |
while read -r events span rate hosts; do
    awk -v n="$jobs" -v s="$span" -v d="$daemons" -v h="$hosts" 'BEGIN { printf "%d daemons (%d ran jobs), %d trivial jobs in %.2f s: %.1f jobs/s\n", d, h, n, s, n / s }'
done
