#!/bin/bash
# Batched self-speculation against batched autoregressive decoding at the same sequence count, in
# the same `bench` run (the strategies interleave run by run; the machine is shared and noisy).
# 32-token prompts from four repository files, 48 new tokens each, 2 threads, exit layer 8,
# load-aware d (the decode loop's choice; adaptive up to 12), exact and int8 drafts.
#   usage: scripts/bench-selfspec-batched.sh MODEL_DIR [RUNS] [ACTIVATIONS] [BATCHES]
# ACTIVATIONS: f32 (default) or bf16 (`--activations bf16`, CPUs with AVX512_BF16).
# BATCHES: the sequence counts, default "2 4 16".
set -eu
cd "$(dirname "$0")/.."
M=$1; RUNS=${2:-3}; ACT=${3:-f32}; BATCHES=${4:-2 4 16}
LS=.build/release/layerskip
[ -x "$LS" ] || swift build -c release --product layerskip >/dev/null
for b in $BATCHES; do
  "$LS" bench --model "$M" --threads 2 --activations "$ACT" --batch "$b" --runs "$RUNS" --new-tokens 48 --prompt-tokens 0 \
    --prompt-file-tokens 32 --prompt-file README.md --prompt-file Package.swift --prompt-file etc/layerskip.yaml \
    --prompt-file Sources/Engine/Pass.swift --strategy autoregressive --strategy self-speculative:exit_layer=8 \
    --strategy self-speculative:exit_layer=8,draft_precision=int8 --json \
  | python3 -c '
import sys, json
b = sys.argv[1]
r = json.load(sys.stdin)["strategies"]
ar = r[0]["median_batch_decode_tokens_per_second"]
for s in r:
    name = s["strategy"] + "".join(",%s=%s" % kv for kv in sorted(s.get("options", {}).items())).replace(",", ":", 1)
    t = s["median_batch_decode_tokens_per_second"]
    same = "" if s is r[0] else (", output identical" if s.get("identical_to_baseline") else ", OUTPUT DIFFERS")
    runs = [round(x, 2) for x in s["batch_decode_tokens_per_second"]]
    print("batch %s: %s: %.2f tok/s, %.2fx autoregressive (median of per-run ratios); drafts per round %s; runs %s%s"
          % (b, name, t, s.get("median_ratio_to_baseline", 1), s.get("drafts_per_round", "-"), runs, same))
' "$b"
done
