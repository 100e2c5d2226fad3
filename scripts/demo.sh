#!/usr/bin/env bash
# The main job: builds layerskip (release) and writes Python with the project's own LayerSkip model
# (models/default, trained by `layerskip train --config models/default/train.yaml`): once with every
# layer, once self-speculatively (the same text, exactly, from fewer layer evaluations), then runs the
# example jobs in jobs/ through the daemon's runner and job store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product layerskip
B=.build/release/layerskip
MODEL=${MODEL:-default}
PROMPT=${PROMPT:-$'def fibonacci(n):\n'}
N=${MAX_NEW_TOKENS:-96}
echo "== autoregressive (all layers) =="
$B generate --model "$MODEL" --max-new-tokens "$N" "$PROMPT"
echo "== self-speculative (draft with the first ${EXIT_LAYER:=5} layers, ${SPECULATIONS:=3} tokens per round) =="
$B generate --model "$MODEL" --strategy self-speculative --exit-layer "$EXIT_LAYER" --speculations "$SPECULATIONS" \
    --max-new-tokens "$N" "$PROMPT"
# The example jobs (one per strategy, plus a batch), in the foreground, with a summary table; a
# throwaway state directory unless one is given.
LAYERSKIP_STATE_DIRECTORY="${LAYERSKIP_STATE_DIRECTORY:-$(mktemp -d)}" $B run jobs/*.yaml
