#!/usr/bin/env bash
# The main job on the embedded model: builds layerskip (release) and generates text.
# Until the project's trained default model exists, this runs the tiny test model in
# Tests/Fixtures (random weights: the text is gibberish, the numbers are Hugging Face-exact).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product layerskip
MODEL=${MODEL:-Tests/Fixtures/tiny-spm-mha-bf16-sharded}
.build/release/layerskip generate --model "$MODEL" --max-new-tokens "${MAX_NEW_TOKENS:-24}" "${PROMPT:-def fibonacci(n):}"
# The example jobs in jobs/ (one per strategy, plus a batch) through the daemon's runner and job
# store, in the foreground, with a summary table; a throwaway state directory unless one is given.
LAYERSKIP_STATE_DIRECTORY="${LAYERSKIP_STATE_DIRECTORY:-$(mktemp -d)}" .build/release/layerskip run jobs/*.yaml
