#!/usr/bin/env bash
# Builds the libFuzzer harnesses of Fuzz/ and runs each for a while on its seed corpus.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET (default 60)] [TARGET ...]
#
# Targets: fuzz-safetensors fuzz-model-config fuzz-tokenizer fuzz-job-file (default: all).
# FUZZ_CONFIGURATION=debug builds unoptimised (default: release); FUZZ_KEEP_WORK=1 keeps the logs.
# Exits non-zero if the build fails or any target finds a crash, timeout, leak or OOM; each
# finding's input and log are copied to Fuzz/findings/ (git-ignored; FUZZ_FINDINGS_DIR overrides).
# The seeds in Fuzz/Corpus/<target>/ are only read: new corpus units go to a temporary folder.
# Linux only (the toolchain's libFuzzer and ASan runtimes); needs nothing but the repository.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ="$ROOT/Fuzz"
ALL_TARGETS=(fuzz-safetensors fuzz-model-config fuzz-tokenizer fuzz-job-file)

SECONDS_PER_TARGET=60
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then SECONDS_PER_TARGET=$1; shift; fi
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
    if [[ ! " ${ALL_TARGETS[*]} " =~ \ $t\  ]]; then
        echo "fuzz: unknown target '$t' (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done
FINDINGS="${FUZZ_FINDINGS_DIR:-$FUZZ/findings}"
# release: about 4x the executions per second of debug (the parsers are -Onone in debug), with
# Swift's overflow and bounds checks still on; debug: unoptimised frames in stack traces.
CONFIGURATION="${FUZZ_CONFIGURATION:-release}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/layerskip-fuzz.XXXXXX")
# FUZZ_KEEP_WORK=1 keeps it (each target's log and the corpus units it found) and prints where.
if [[ ${FUZZ_KEEP_WORK:-0} == 1 ]]; then
    trap 'echo "fuzz: logs and new corpus units kept in $WORK"' EXIT
else
    trap 'rm -rf "$WORK"' EXIT
fi

# -- Build --------------------------------------------------------------------------------------
# - `--sanitize fuzzer --sanitize address` tells SwiftPM that libFuzzer supplies `main` (without
#   it SwiftPM links each executable with `--defsym main=<module>_main`, an undefined symbol here)
#   and instruments the C targets too (CKernels, Yams' libyaml).
# - But SwiftPM hands swiftc those as two flags, `-sanitize=fuzzer -sanitize=address`, and swiftc
#   keeps only the last: the Swift code would get ASan but no coverage, and libFuzzer would fuzz
#   blind. `-Xswiftc -sanitize=fuzzer,address` comes after them on the command line and wins.
# - -parse-as-library keeps main.swift from defining a `main` of its own.
BUILD=(swift build --package-path "$FUZZ" --scratch-path "$FUZZ/.build" -c "$CONFIGURATION"
       --sanitize fuzzer --sanitize address -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)
echo "fuzz: building (${BUILD[*]})"
build_start=$(date +%s)
if ! "${BUILD[@]}" >"$WORK/build.log" 2>&1; then
    # ld.gold warns about every ASan symbol it cannot export; they are noise.
    grep -v "Cannot export local symbol" "$WORK/build.log" | tail -40 >&2
    echo "fuzz: build failed" >&2
    exit 1
fi
BIN=$("${BUILD[@]}" --show-bin-path)
echo "fuzz: built in $(( $(date +%s) - build_start )) s ($BIN)"

# -- Run ----------------------------------------------------------------------------------------
# SWIFT_BACKTRACE=enable=no: Swift's backtracer would otherwise keep the pipe open after a finding.
# Leak detection stays on (libFuzzer runs LeakSanitizer after any input whose mallocs and frees
# do not balance); the Swift runtime's caches are reachable from globals, so they are not reported.
export SWIFT_BACKTRACE=enable=no

failed=0
summaries=()
for t in "${TARGETS[@]}"; do
    dir="$WORK/$t"
    mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/tmp"
    echo "fuzz: running $t for $SECONDS_PER_TARGET s"
    start=$(date +%s)
    rc=0
    # The first corpus folder receives new units; the seed folder after it is only read. The
    # harnesses' scratch files go under TMPDIR, removed with the rest even after a crash.
    TMPDIR="$dir/tmp" "$BIN/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
        "$dir/corpus" "$FUZZ/Corpus/$t" >"$dir/log" 2>&1 || rc=$?
    elapsed=$(( $(date +%s) - start ))

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
    # Corpus size from libFuzzer's last status line; before its first one, the inputs it was given.
    units=$(grep -o 'corp: [0-9]*' "$dir/log" | tail -1 | grep -o '[0-9]*$' || true)
    [[ -n $units ]] || units=$(find "$dir/corpus" "$FUZZ/Corpus/$t" -type f | wc -l)
    artifacts=("$dir"/artifacts/*)
    [[ -e ${artifacts[0]} ]] || artifacts=()

    if [[ $rc -eq 0 && ${#artifacts[@]} -eq 0 ]]; then
        result="ok"
    else
        failed=1
        stamp="$t-$(date +%Y%m%d-%H%M%S)"
        mkdir -p "$FINDINGS"
        cp "$dir/log" "$FINDINGS/$stamp.log"
        saved=()
        for a in "${artifacts[@]}"; do
            cp "$a" "$FINDINGS/$stamp-$(basename "$a")"
            saved+=("$FINDINGS/$stamp-$(basename "$a")")
        done
        # What happened: a Swift runtime failure's message if there is one, else the sanitizer's.
        kind=$( { grep -m1 'Fatal error: ' "$dir/log" || grep -m1 -E '==[0-9]+== ?ERROR: ' "$dir/log" || echo "exit status $rc"; } \
                | sed -E 's/^==[0-9]+== ?//' )
        result="CRASH (${saved[*]:-no artifact; log $FINDINGS/$stamp.log})"
        echo "fuzz: $t: $kind; log $FINDINGS/$stamp.log; its last lines:" >&2
        grep -v '^#[0-9]' "$dir/log" | tail -40 | sed 's/^/  | /' >&2
    fi
    summaries+=("fuzz: $t: ${execs:-?} executions in $elapsed s, ${units:-?} corpus units, result: $result")
    echo "${summaries[-1]}"
done

echo "fuzz: summary"
printf '%s\n' "${summaries[@]}"
exit $failed
