#!/bin/bash
# Single-stream decode (tg64) and prefill (pp64) with int8 and q4 weights side by side with
# llama.cpp's llama-bench on its Q8_0 and Q4_0 quantisations of the same stand-in, in the same run:
# each round runs llama-bench (3 repetitions) and then `layerskip bench` (3 runs) for each pair, so
# drifts of this shared machine hit both; the ratio is the median of per-round ratios. 2 threads.
#   usage: scripts/bench-quantized.sh MODEL_DIR [ROUNDS] [REF_DIR]
# REF_DIR is where ../shared/tools/reference-llamacpp.sh built llama.cpp and converted MODEL_DIR
# (default ${TMPDIR:-/tmp}/llamacpp-ref); run that script once first.
set -eu
cd "$(dirname "$0")/.."
M=$(cd "$1" && pwd); ROUNDS=${2:-3}; REF=${3:-${TMPDIR:-/tmp}/llamacpp-ref}
LS=.build/release/layerskip
[ -x "$LS" ] || swift build -c release --product layerskip >/dev/null
OUT=$(mktemp -d)
for r in $(seq 1 "$ROUNDS"); do
  for pair in int8:q8_0 q4:q4_0; do
    W=${pair%%:*}; GG=${pair##*:}; G=$REF/gguf/$(basename "$M")/$GG.gguf
    [ -f "$G" ] || { echo "no $G: run ../shared/tools/reference-llamacpp.sh $LS $M first" >&2; exit 2; }
    "$REF/llama.cpp/build/bin/llama-bench" -m "$G" -t 2 -p 64 -n 64 -r 3 -o csv 2>/dev/null \
      | python3 -c "
import csv, sys
for row in csv.DictReader(sys.stdin):
    kind = 'pp' if int(row['n_prompt']) > 0 else 'tg'
    print('$W', kind, 'llama', row['avg_ts'])" >> "$OUT/rows"
    "$LS" bench --model "$M" --weights "$W" --threads 2 --runs 3 --prompts 1 --new-tokens 64 --prompt-tokens 64 --json \
      | python3 -c "
import json, sys
d = json.load(sys.stdin)
print('$W', 'pp', 'ours', d['median_prefill_tokens_per_second'])
print('$W', 'tg', 'ours', d['strategies'][0]['median_tokens_per_second'])
print('$W', 'rss', 'ours', d['peak_rss_bytes'] / 1e9, d['peak_rss_over_weights_plus_kv'])" >> "$OUT/rows"
  done
  echo "round $r" >> "$OUT/rows"
done
python3 - "$OUT/rows" <<'PY'
import sys, statistics
rounds, cur = [], {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "round": rounds.append(cur); cur = {}; continue
    cur[(f[0], f[1], f[2])] = [float(x) for x in f[3:]]
print("weights  test  llama.cpp tok/s (rounds)          layerskip tok/s (rounds)          ratio (median of per-round)")
for w, ref in (("int8", "Q8_0"), ("q4", "Q4_0")):
    for kind in ("tg", "pp"):
        l = [r[(w, kind, "llama")][0] for r in rounds]; o = [r[(w, kind, "ours")][0] for r in rounds]
        ratios = [b / a for a, b in zip(l, o)]
        print(f"{w:5s} {kind}64 vs {ref}  {statistics.median(l):6.2f} {[round(x, 2) for x in l]}  "
              f"{statistics.median(o):6.2f} {[round(x, 2) for x in o]}  {statistics.median(ratios):.2f}x")
    rss = rounds[-1][(w, "rss", "ours")]
    print(f"{w:5s} peak RSS {rss[0]:.2f} GB = {rss[1]:.2f} x (weights + KV caches)")
PY
rm -rf "$OUT"
