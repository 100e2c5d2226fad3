#!/bin/bash
# Batched decoding side by side with llama.cpp's llama-batched-bench, in the same run (the machine is
# shared and noisy: compare the per-round ratios). 32-token prompts, 32 new tokens each, 2 threads,
# 1/4/8/16 sequences; llama.cpp's S_TG (generation tok/s) against layerskip's decode-only tok/s
# (`bench --batch N`: passes that carry no prompt rows).
#   usage: scripts/bench-batching.sh MODEL_DIR [ROUNDS] [REF_DIR] [WEIGHTS]
# WEIGHTS: stored (default; against llama.cpp's bf16 conversion), int8 (`--weights int8`, against
# its Q8_0 quantisation) or q4 (against its Q4_0).
# REF_DIR is where ../shared/tools/reference-llamacpp.sh built llama.cpp and converted MODEL_DIR
# (default ${TMPDIR:-/tmp}/llamacpp-ref); run that script once first.
set -eu
cd "$(dirname "$0")/.."
M=$(cd "$1" && pwd); ROUNDS=${2:-3}; REF=${3:-${TMPDIR:-/tmp}/llamacpp-ref}; WEIGHTS=${4:-stored}
LS=.build/release/layerskip
case $WEIGHTS in stored) GG=bf16 ;; int8) GG=q8_0 ;; q4) GG=q4_0 ;; *) echo "WEIGHTS: stored, int8 or q4, not $WEIGHTS" >&2; exit 2 ;; esac
G=$REF/gguf/$(basename "$M")/$GG.gguf
[ -x "$LS" ] || swift build -c release --product layerskip >/dev/null
[ -f "$G" ] || { echo "no $G: run ../shared/tools/reference-llamacpp.sh $LS $M first" >&2; exit 2; }
OUT=$(mktemp -d)
for r in $(seq 1 "$ROUNDS"); do
  "$REF/llama.cpp/build/bin/llama-batched-bench" -m "$G" -t 2 -c 4096 -b 512 -ub 512 -npp 32 -ntg 32 -npl 1,4,8,16 2>/dev/null \
    | awk -F'|' '/^\| +32/ { gsub(/ /, "", $4); gsub(/ /, "", $9); print $4, $9 }' > "$OUT/llama-$r"
  for b in 1 4 8 16; do
    "$LS" bench --model "$M" --weights "$WEIGHTS" --threads 2 --batch "$b" --runs 1 --new-tokens 32 --prompt-tokens 0 --prompt-file-tokens 32 \
      --prompt-file README.md --prompt-file Package.swift --prompt-file etc/layerskip.yaml --prompt-file Sources/Engine/Pass.swift \
      --json | python3 -c "import sys, json; s = json.load(sys.stdin)['strategies'][0]; print($b, s['median_batch_decode_tokens_per_second'])" >> "$OUT/ls-$r"
  done
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import sys, statistics
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for r in range(1, rounds + 1):
    ref = dict(l.split() for l in open(f"{out}/llama-{r}"))
    ours = dict(l.split() for l in open(f"{out}/ls-{r}"))
    for b in ours:
        rows.setdefault(int(b), []).append((float(ref[b]), float(ours[b])))
print("sequences  llama.cpp S_TG tok/s (runs)        layerskip tok/s (runs)          ratio (median of per-round)")
for b in sorted(rows):
    ref = [x for x, _ in rows[b]]; ours = [y for _, y in rows[b]]
    ratios = [y / x for x, y in rows[b]]
    print(f"{b:9d}  {statistics.median(ref):6.2f} {[round(x, 2) for x in ref]}  {statistics.median(ours):6.2f} {[round(y, 2) for y in ours]}  {statistics.median(ratios):.2f}x")
PY
rm -rf "$OUT"
