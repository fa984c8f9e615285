#!/usr/bin/env bash
# Sets up on a fresh machine and runs the whole pipeline on the embedded local Ray:
#   bash scripts/demo.sh                          # tiny random pretrained set, generated demo corpus
#   bash scripts/demo.sh --pretrained-dir DIR     # the official pretrained_models folder instead
# prepare -> sweep (Ray Tune + Optuna over Ray Train trials) -> register -> serve (Ray Serve), then
# one sentence through POST /v1/tts into out/demo.wav. Running it again reuses what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VF=.venv/bin/voicefleet
PRETRAINED=pretrained/tiny
if [ "${1:-}" = "--pretrained-dir" ]; then PRETRAINED=$2; fi
if [ ! -d "$PRETRAINED" ]; then
    $VF init-pretrained --tiny "$PRETRAINED"
fi
[ -f demo_corpus/list.txt ] || .venv/bin/python scripts/make_demo_corpus.py demo_corpus
# A small sweep sized for a 2-core laptop; real voices want the defaults (8 trials x 4 rounds x 20 steps).
$VF run demo_corpus/list.txt --voice demo --pretrained "$PRETRAINED" --workdir work \
    --trials 4 --rounds 2 --steps-per-round 4 --batch-size 2 \
    --say "欢迎使用语音合成。今天天气很好，我们一起去公园散步吧！" --output out/demo.wav --exit --seed 0
echo "voicefleet demo: corpus demo_corpus/, work in work/ (dataset, sweep report, registry), speech in out/demo.wav"
echo "serve the voice again with: .venv/bin/voicefleet serve --storage work/runs --pretrained $PRETRAINED"
