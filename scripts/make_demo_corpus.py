"""Write the demo corpus: about a minute of voice-like clips with Chinese transcripts, and a list file.

    python scripts/make_demo_corpus.py demo_corpus        # -> demo_corpus/list.txt, demo_corpus/clips/*.wav

The audio is synthesised here (one speaker's pitch, vowel formants, syllables and pauses; see
`voicefleet.platform.data.synthetic`), so the corpus is free of any licence and needs no download.
It stands in for a real minute of speech: the pipeline runs end to end on it, but a voice trained on
it says nothing intelligible. The transcripts are sentences written for this demo. 16 kHz, 16-bit
mono keeps it under 2 MB (about 55 s); `voicefleet prepare` resamples to the model's 32 kHz.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from voicefleet.platform.data.synthetic import voice_like

SAMPLE_RATE = 16000
SPEAKER_F0_HZ = 165.0  # one speaker: every clip shares the mean pitch
SENTENCES = [
    "今天早上我去公园散步，空气很新鲜。",
    "这家小店的面条很好吃，价格也不贵。",
    "我们下周一起去海边看日出吧。",
    "他每天晚上都会读半个小时的书。",
    "窗外下着小雨，街上的行人不多。",
    "请把这份文件交给楼下的同事。",
    "周末的时候，我喜欢在家里做饭。",
    "火车就要开了，大家快点上车吧。",
    "这个问题很有意思，我们再讨论一下。",
    "妈妈在厨房里准备晚饭，香味飘满了屋子。",
    "明天的会议改到下午三点开始。",
    "春天来了，山上的花都开了。",
]


def main(out: Path) -> None:
    clips = out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, text in enumerate(SENTENCES):
        duration = 3.0 + 0.12 * len(text)  # about 4-5.5 s, roughly as long as the sentence
        wave = voice_like(duration, SAMPLE_RATE, seed=100 + i, f0=SPEAKER_F0_HZ * (1 + 0.03 * np.sin(i)), peak=0.6)
        name = f"demo_{i:02d}.wav"
        sf.write(clips / name, wave, SAMPLE_RATE, subtype="PCM_16")
        lines.append(f"clips/{name}|demo|zh|{text}")
    (out / "list.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    total = sum(sf.info(clips / f"demo_{i:02d}.wav").duration for i in range(len(SENTENCES)))
    print(f"demo corpus: {len(SENTENCES)} clips, {total:.0f} s, list file {out / 'list.txt'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/make_demo_corpus.py OUT_DIR")
    main(Path(sys.argv[1]))
