#!/usr/bin/env bash
# Sets up on a fresh machine and runs the main job on the local machine: bash scripts/demo.sh
# Today: synthesis with a tiny random-initialised pretrained set (the pipeline end to end; the
# voice is noise-like because the weights are random). Pass --pretrained-dir DIR to use real
# official weights instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VF=.venv/bin/voicefleet
PRETRAINED=pretrained/tiny
if [ "${1:-}" = "--pretrained-dir" ]; then PRETRAINED=$2; fi
mkdir -p out
if [ ! -d "$PRETRAINED" ]; then
    $VF init-pretrained --tiny "$PRETRAINED"
fi
[ -f out/reference.wav ] || .venv/bin/python scripts/make_reference.py out/reference.wav
$VF synthesize --pretrained "$PRETRAINED" --ref-audio out/reference.wav \
    --prompt-text "你好，这是我的声音。" --text "欢迎使用语音合成。今天天气很好，我们一起去公园散步吧！" --lang zh \
    --seed 0 --top-k 15 --output out/demo.wav --overwrite
echo "voicefleet demo: pretrained set in $PRETRAINED, reference clip out/reference.wav, speech in out/demo.wav"
