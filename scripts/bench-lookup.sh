#!/usr/bin/env bash
# Lookup and hybrid drafting against autoregressive decoding on copy-heavy prompts built from the
# default model's held-out files (scripts/copy-prompts.py), greedy, one sequence at a time, every
# strategy interleaved in each run of one `layerskip bench` process (medians of RUNS runs; the
# report says whether each output is identical to autoregressive decoding's).
#   scripts/bench-lookup.sh [RUNS] [NEW_TOKENS] [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}; new=${2:-100}; model=${3:-default}
swift build -c release --product layerskip >&2
B=.build/release/layerskip
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mapfile -t files < <($B eval --model default --config models/default/train.yaml --list-files)
python3 scripts/copy-prompts.py rewrite "${files[@]}" > "$work/all.jsonl" && head -12 "$work/all.jsonl" > "$work/rewrite.jsonl"
python3 scripts/copy-prompts.py heads 300 "${files[@]}" > "$work/all.jsonl" && head -12 "$work/all.jsonl" > "$work/heads.jsonl"
$B generate --model "$model" --max-new-tokens "$new" --prompts-file "$work/heads.jsonl" --json > "$work/heads-out.jsonl" 2>/dev/null
python3 scripts/copy-prompts.py repeat "$work/heads.jsonl" "$work/heads-out.jsonl" > "$work/repeat.jsonl"
for set in repeat rewrite; do
    echo "== $set: $(wc -l < "$work/$set.jsonl") prompts, $new new tokens, $runs runs"
    $B bench --model "$model" --prompts-file "$work/$set.jsonl" --prompt-tokens 0 --new-tokens "$new" --runs "$runs" \
        --strategy autoregressive \
        --strategy self-speculative \
        --strategy self-speculative:adaptive=false \
        --strategy self-speculative:drafter=lookup \
        --strategy self-speculative:drafter=lookup,lookup_span=4 \
        --strategy self-speculative:exit_layer=6,speculations=2 \
        --strategy self-speculative:exit_layer=6,speculations=2,lookup_span=4 \
        --strategy self-speculative:exit_layer=6,speculations=2,drafter=early-exit \
        ${BENCH_ARGS:-}
done
