#!/usr/bin/env bash
# Sets up on a fresh machine and runs the whole pipeline on the embedded local Ray:
#   bash scripts/demo.sh                          # tiny random pretrained set, generated demo corpus
#   bash scripts/demo.sh --pretrained-dir DIR     # the official pretrained_models folder instead
#   bash scripts/demo.sh --version v2ProPlus      # a v2Pro / v2ProPlus voice (tiny folder of that version)
# prepare -> sweep (Ray Tune + Optuna over Ray Train trials) -> register -> serve (Ray Serve), then
# one sentence through POST /v1/tts into out/demo.wav. Running it again reuses what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VF=.venv/bin/voicefleet
PRETRAINED=""
VERSION=""
while [ $# -gt 0 ]; do
    case "$1" in
        --pretrained-dir) PRETRAINED=${2:?--pretrained-dir needs a folder}; shift 2 ;;
        --version) VERSION=${2:?--version needs v2, v2Pro or v2ProPlus}; shift 2 ;;
        *) echo "usage: bash scripts/demo.sh [--pretrained-dir DIR] [--version v2|v2Pro|v2ProPlus]" >&2; exit 2 ;;
    esac
done
TAG=$(printf '%s' "${VERSION:+-$VERSION}" | tr 'A-Z' 'a-z')  # voice ids and folders per version: -v2proplus
PRETRAINED=${PRETRAINED:-pretrained/tiny$TAG}
if [ ! -d "$PRETRAINED" ]; then
    $VF init-pretrained --tiny ${VERSION:+--version "$VERSION"} "$PRETRAINED"
fi
[ -f demo_corpus/list.txt ] || .venv/bin/python scripts/make_demo_corpus.py demo_corpus
# A small sweep sized for a 2-core laptop; real voices want the defaults (8 trials x 4 rounds x 20 steps).
$VF run demo_corpus/list.txt --voice demo$TAG --pretrained "$PRETRAINED" ${VERSION:+--version "$VERSION"} \
    --workdir work$TAG \
    --trials 4 --rounds 2 --steps-per-round 4 --batch-size 2 \
    --say "欢迎使用语音合成。今天天气很好，我们一起去公园散步吧！" --output out/demo.wav --exit --seed 0
echo "voicefleet demo: corpus demo_corpus/, work in work$TAG/ (dataset, sweep report, registry), speech in out/demo.wav"
echo "serve the voice again with: .venv/bin/voicefleet serve --storage work$TAG/runs --pretrained $PRETRAINED"
