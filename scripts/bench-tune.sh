#!/usr/bin/env bash
# Does `layerskip tune` find the best setting? Tunes MODEL (not stored: --no-store), then one
# `layerskip bench` process runs autoregressive decoding, the tuned choice and a hand-picked E × d
# grid, interleaved, medians of RUNS runs: the tuned line should be within 5% of the grid's best.
#   scripts/bench-tune.sh [MODEL] [RUNS] [NEW_TOKENS] [EXITS] [DRAFTS]
# e.g. scripts/bench-tune.sh models/stand-in/llama3.2-1b-late0.02 2 48 "4 6 8 10 12" "2 4"
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-default}; runs=${2:-3}; new=${3:-64}; exits=${4:-"2 3 4 5 6 7"}; drafts=${5:-"1 2 3 4"}
swift build -c release --product layerskip >&2
B=.build/release/layerskip
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
$B tune --model "$model" --no-store --runs "$runs" --new-tokens "$new" --max-tokens "${TUNE_TOKENS:-1024}" --out "$work" --json > "$work/tune.json"
tuned=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["chosen"]; print("self-speculative:" + ",".join(f"{k}={s[k]}" for k in sorted(s) if not (s.get("drafter") == "lookup" and k in ("exit_layer", "speculations"))))' "$work/tune.json")
python3 - "$work/tune.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for f in r["finalists"]:
    print(f"tune finalist {f['drafter']}: {f['median_ratio']:.2f}x (runs {' '.join(f'{x:.2f}' for x in f['ratios'])})")
b = r["best"]
print(f"tune predicted best: exit_layer {b['exit_layer']}, speculations {b['drafts']}: {b['speedup']:.2f}x")
PY
echo "tuned: $tuned"
args=(--strategy autoregressive --strategy "$tuned")
for e in $exits; do for d in $drafts; do args+=(--strategy "self-speculative:exit_layer=$e,speculations=$d,drafter=early-exit"); done; done
$B bench --model "$model" --prompts 2 --prompt-tokens 0 --new-tokens "$new" --runs "$runs" "${args[@]}"
