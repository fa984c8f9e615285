"""Platform test fixtures: one Ray instance for the whole session, and a generated speech corpus.

`ray_session` (tests/conftest.py) is the one Ray instance of the test session; this module adds the corpus helpers.
`make_corpus` writes voice-like clips (`voicefleet.platform.data.synthetic`) and the kinds of bad
entries real list files contain, with the reject reason each should get.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voicefleet.platform.data.synthetic import add_white_noise, voice_like


ZH_TEXTS = ("你好，今天天气很好。", "我们一起去公园散步吧。", "这个声音听起来很自然。", "谢谢你的帮助！",
            "明天早上八点见。", "我喜欢用Python写代码。")
EN_TEXTS = ("Hello there, how are you today?", "The quick brown fox jumps over the lazy dog.",
            "Please call me back tomorrow.", "This voice sounds quite natural.")
# (list-file code, transcript) for the languages besides zh and en, one clip each
OTHER_TEXTS = (("JA", "今日はいい天気ですね。"), ("ko", "안녕하세요, 만나서 반갑습니다."), ("yue", "我哋今日去飲茶。"))


@dataclass
class Corpus:
    """A generated list file; `expected` maps each clip id to its reject reason (None = kept)."""

    root: Path
    list_path: Path
    expected: dict[str, str | None] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def kept(self) -> set[str]:
        return {c for c, r in self.expected.items() if r is None}

    def add(self, clip_id: str, speaker: str, lang: str, text: str, expected: str | None) -> None:
        self.lines.append(f"{clip_id}|{speaker}|{lang}|{text}")
        self.expected.setdefault(clip_id, expected)

    def write_list(self) -> Path:
        self.list_path.write_text("\n".join(self.lines) + "\n", encoding="utf-8")
        return self.list_path


def write_wav(path: Path, wave: np.ndarray, sr: int = 32000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, sr, subtype=subtype)
    return path


def make_corpus(root: Path, *, n_good: int = 6, bad: bool = True, seed: int = 0) -> Corpus:
    """Write a corpus under `root/wavs` and its list file `root/voice.list` (relative paths).

    Good clips: `n_good` clips of 1.5-3.5 s for speakers alice (zh) and bob (en), one of them
    8 kHz stereo and one 44.1 kHz FLAC. Bad entries (with `bad`): corrupt, truncated, silent,
    clipped (float peak 3.0, and hard-clipped 16-bit), too short, noisy (0 dB SNR), missing,
    empty transcript, unsupported language, and a duplicate row; with them, carol's three good clips
    in Japanese, Korean and Cantonese (`OTHER_TEXTS`).
    """
    rng = np.random.default_rng(seed)
    corpus = Corpus(root, root / "voice.list")
    wavs = root / "wavs"
    for i in range(n_good):
        speaker, lang = ("alice", "zh") if i % 2 == 0 else ("bob", "en")
        text = ZH_TEXTS[i // 2 % len(ZH_TEXTS)] if lang == "zh" else EN_TEXTS[i // 2 % len(EN_TEXTS)]
        wave = voice_like(float(rng.uniform(1.5, 3.5)), 32000, seed=seed * 1000 + i)
        if i == 1:  # 8 kHz stereo
            mono = voice_like(2.0, 8000, seed=seed * 1000 + i)
            write_wav(wavs / f"{speaker}_{i:02d}.wav", np.stack([mono, 0.8 * mono], axis=1), 8000)
            name = f"{speaker}_{i:02d}.wav"
        elif i == 2:
            name = f"{speaker}_{i:02d}.flac"
            write_wav(wavs / name, voice_like(2.5, 44100, seed=seed * 1000 + i), 44100)
        else:
            name = f"{speaker}_{i:02d}.wav"
            write_wav(wavs / name, wave)
        corpus.add(f"wavs/{name}", speaker, lang.upper() if i == 3 else lang, text, None)
    if not bad:
        corpus.write_list()
        return corpus
    good = voice_like(2.0, 32000, seed=seed * 1000 + 99)
    (wavs / "corrupt.wav").write_bytes(b"RIFF" + rng.bytes(4000))
    corpus.add("wavs/corrupt.wav", "alice", "zh", ZH_TEXTS[0], "corrupt_file")
    buf = io.BytesIO()
    sf.write(buf, good, 32000, format="WAV", subtype="PCM_16")
    (wavs / "truncated.wav").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    corpus.add("wavs/truncated.wav", "alice", "zh", ZH_TEXTS[1], "truncated_file")
    write_wav(wavs / "silent.wav", np.zeros(64000, dtype=np.float32))
    corpus.add("wavs/silent.wav", "alice", "zh", ZH_TEXTS[2], "silent")
    write_wav(wavs / "clipped_float.wav", good / np.abs(good).max() * 3.0, subtype="FLOAT")
    corpus.add("wavs/clipped_float.wav", "bob", "en", EN_TEXTS[0], "clipped")
    write_wav(wavs / "clipped_pcm.wav", np.clip(good * 8.0, -1.0, 1.0))
    corpus.add("wavs/clipped_pcm.wav", "bob", "en", EN_TEXTS[1], "clipped")
    write_wav(wavs / "short.wav", voice_like(0.3, 32000, seed=5))
    corpus.add("wavs/short.wav", "alice", "zh", ZH_TEXTS[3], "too_short")
    write_wav(wavs / "noisy.wav", np.clip(add_white_noise(good, 0.0, seed=3), -1, 1))
    corpus.add("wavs/noisy.wav", "bob", "en", EN_TEXTS[2], "noisy")
    corpus.add("wavs/missing.wav", "alice", "zh", ZH_TEXTS[4], "missing_file")
    write_wav(wavs / "untranscribed.wav", good)
    corpus.add("wavs/untranscribed.wav", "alice", "zh", "", "empty_transcript")
    for i, (code, text) in enumerate(OTHER_TEXTS):  # carol speaks Japanese, Korean and Cantonese
        name = f"wavs/carol_{i:02d}.wav"
        write_wav(root / name, voice_like(float(rng.uniform(1.5, 3.5)), 32000, seed=seed * 1000 + 50 + i))
        corpus.add(name, "carol", code, text, None)
    write_wav(wavs / "french.wav", good)
    corpus.add("wavs/french.wav", "alice", "FR", "Bonjour.", "unsupported_language")
    first = next(c for c, r in corpus.expected.items() if r is None)
    corpus.lines.append(f"{first}|alice|zh|{ZH_TEXTS[5]}")  # a second row for the same file
    corpus.write_list()
    return corpus


@pytest.fixture
def corpus(tmp_path) -> Corpus:
    return make_corpus(tmp_path / "input")


def tree_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (and every folder's path) under `folder`."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cli_app():
    """A local typer app with just the platform commands (voicefleet.cli registers the same functions)."""
    import typer

    from voicefleet.cli.data import prepare_cmd, slice_cmd

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("prepare")(prepare_cmd)
    app.command("slice")(slice_cmd)
    return app
