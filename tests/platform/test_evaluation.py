"""`voicefleet.platform.evaluation` with the real instruments on audio made at test time.

Speech comes from espeak-ng when it is installed (two voices: a low US English male and a raised
female variant); otherwise from `voicefleet.platform.data.synthetic`'s voice-like generator at
two pitches. Only the WER tests need real words, so only they skip without espeak-ng.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("resemblyzer", reason="the evaluation instruments are the voicefleet[eval] extra")

from voicefleet.inference.pipeline import SynthesisParams, Synthesizer  # noqa: E402
from voicefleet.platform.data.listfile import parse_list_text  # noqa: E402
from voicefleet.platform.data.synthetic import add_white_noise, voice_like  # noqa: E402
from voicefleet.platform.evaluation import (SUMMARY_FIELDS, EvaluationError, MissingInstrument,  # noqa: E402
                                            evaluate_audio, evaluate_voice, instruments, select_lines,
                                            write_evaluation)
from voicefleet.platform.evaluation.metrics import words  # noqa: E402
from voicefleet.platform.evaluation.runner import TOKEN_CAP_FACTOR  # noqa: E402

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="WER needs real words: espeak-ng is not installed "
                                                         "(apt-get install espeak-ng)")
# Sentences the built-in recogniser gets partly right from espeak-ng's voice
SENTENCES = ("Please call Stella and ask her to bring these things from the store.",
             "It is easy to tell the depth of a well.",
             "These days a chicken leg is a rare dish.",
             "Open the door and turn on the light.",
             "I would like a cup of coffee in the morning.")
VOICES = {"low": (["-v", "en-us", "-s", "130", "-p", "35"], 100.0),
          "high": (["-v", "en-us+f3", "-s", "150", "-p", "75"], 240.0)}


@dataclass
class Corpus:
    root: Path
    clips: dict[str, list[Path]] = field(default_factory=dict)  # speaker -> clips, one per sentence

    def lines(self, speaker: str, texts=SENTENCES, lang: str = "en", count: int | None = None):
        rows = [f"{p.name}|{speaker}|{lang}|{t}" for p, t in zip(self.clips[speaker], texts)][:count]
        return parse_list_text("\n".join(rows), location=str(self.root / "x.list"), base=str(self.root))


def _speak(path: Path, speaker: str, index: int, text: str) -> Path:
    args, f0 = VOICES[speaker]
    if ESPEAK:
        subprocess.run([ESPEAK, *args, "-w", str(path), text], check=True, capture_output=True)
    else:
        sf.write(path, voice_like(2.5, 32000, seed=10 * index + len(speaker), f0=f0), 32000)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    root = tmp_path_factory.mktemp("speech")
    out = Corpus(root)
    for speaker in VOICES:
        out.clips[speaker] = [_speak(root / f"{speaker}{i}.wav", speaker, i, t) for i, t in enumerate(SENTENCES)]
    # a 3-10 s reference clip of the low voice for synthesis
    ref, sr = sf.read(out.clips["low"][0], dtype="float32")
    ref = np.concatenate([ref, np.zeros(sr // 2, np.float32), sf.read(out.clips["low"][1], dtype="float32")[0]])
    sf.write(root / "reference.wav", ref if len(ref) >= 3 * sr else np.tile(ref, 2), sr)
    return out


@pytest.fixture(scope="module")
def tiny_voice(tiny_pretrained, corpus):
    synth = Synthesizer.from_pretrained(tiny_pretrained)
    voice = synth.load_voice("tiny", tiny_pretrained.gpt, tiny_pretrained.sovits_g, corpus.root / "reference.wav",
                             SENTENCES[0], "en")
    return synth, voice


def test_same_speaker_scores_higher_than_another_speaker(corpus):
    lines = corpus.lines("low", count=3)[1:] + corpus.lines("high", count=2)
    result = evaluate_audio(lines, corpus.clips["low"][0], metrics="similarity")
    same = [r["speaker_similarity"] for r in result.utterances if r["speaker"] == "low"]
    other = [r["speaker_similarity"] for r in result.utterances if r["speaker"] == "high"]
    assert min(same) > max(other) + 0.05, (same, other)
    assert all(-1 <= s <= 1 for s in same + other)
    assert result.summary["speaker_similarity_to_ref"] is None  # no voice reference in audio mode


def test_dnsmos_is_in_range_and_noise_lowers_background_quality(corpus, tmp_path):
    clean, sr = sf.read(corpus.clips["low"][1], dtype="float32")
    sf.write(tmp_path / "noisy.wav", np.clip(add_white_noise(clean, 0.0, seed=1), -1, 1), sr)
    shutil.copy(corpus.clips["low"][1], tmp_path / "clean.wav")
    lines = parse_list_text("clean.wav|a|en|x\nnoisy.wav|a|en|x", location=str(tmp_path / "l.list"))
    rows = evaluate_audio(lines, corpus.clips["low"][0], metrics=["dnsmos"]).utterances
    for row in rows:
        for key in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"):
            assert 1.0 <= row[key] <= 5.0, (key, row[key])
    assert rows[1]["dnsmos_bak"] < rows[0]["dnsmos_bak"] - 0.3
    assert rows[1]["dnsmos_ovrl"] < rows[0]["dnsmos_ovrl"]


@needs_espeak
def test_wer_is_lower_against_the_spoken_transcript_than_against_another(corpus):
    right = evaluate_audio(corpus.lines("low"), corpus.clips["low"][0], metrics="wer")
    shifted = SENTENCES[1:] + SENTENCES[:1]  # every clip paired with another line's text
    wrong = evaluate_audio(corpus.lines("low", texts=shifted), corpus.clips["low"][0], metrics="wer")
    assert all(r["transcript"] for r in right.utterances), "the recogniser heard nothing"
    assert right.summary["wer"] < wrong.summary["wer"] - 0.1, (right.summary["wer"], wrong.summary["wer"])
    for row in right.utterances:  # the number is WER over the normalised words
        import jiwer

        assert row["wer"] == pytest.approx(jiwer.wer(" ".join(words(row["text"])), " ".join(words(row["transcript"]))))


def test_words_are_lower_case_without_punctuation_and_chinese_per_character():
    assert words("Hello, World! It's 9 o'clock.") == ["hello", "world", "it's", "9", "o'clock"]
    assert words("我喜欢用Python写代码。") == ["我", "喜", "欢", "用", "python", "写", "代", "码"]


def test_a_language_without_a_recogniser(corpus):
    lines = corpus.lines("low", lang="zh", count=1)
    lenient = evaluate_audio(lines, corpus.clips["low"][0], metrics=None)
    assert lenient.utterances[0]["wer"] is None and "zh" in lenient.utterances[0]["wer_note"]
    assert lenient.summary["wer"] is None and "1 of 1 lines" in lenient.summary["wer_note"]
    with pytest.raises(EvaluationError, match="no speech recogniser for language 'zh'.*--asr-model"):
        evaluate_audio(lines, corpus.clips["low"][0], metrics="wer")
    # a PocketSphinx model folder makes any language scorable (here: the built-in English model's own files)
    import pocketsphinx

    model = Path(pocketsphinx.get_model_path()) / "en-us"
    scored = evaluate_audio(lines, corpus.clips["low"][0], metrics="wer", asr_model=model)
    assert scored.utterances[0]["wer"] is not None and scored.utterances[0]["wer_note"] is None
    with pytest.raises(EvaluationError, match="not a PocketSphinx model folder"):
        evaluate_audio(lines, corpus.clips["low"][0], metrics="wer", asr_model=corpus.root)


def test_bad_input_fails_before_any_work(corpus, tmp_path):
    good = corpus.lines("low", count=1)
    missing = parse_list_text("gone.wav|a|en|hello\nalso-gone.wav|a|en|hi", location=str(tmp_path / "l.list"))
    with pytest.raises(EvaluationError, match="2 audio files of the list not found: .*gone.wav \\(line 1\\)"):
        evaluate_audio(missing, corpus.clips["low"][0])
    with pytest.raises(EvaluationError, match="no lines"):
        evaluate_audio([], corpus.clips["low"][0])
    with pytest.raises(EvaluationError, match="unknown metric 'mos'; choose any of similarity, dnsmos, wer"):
        evaluate_audio(good, corpus.clips["low"][0], metrics="similarity,mos")
    with pytest.raises(EvaluationError, match="--against clip .* not found"):
        evaluate_audio(good, tmp_path / "nope.wav")


def test_a_missing_instrument_names_the_extra(corpus, monkeypatch):
    monkeypatch.setattr(instruments, "_loaded", {})  # forget the loaded instruments for this test
    monkeypatch.setitem(sys.modules, "speechmos", None)  # as if not installed
    with pytest.raises(MissingInstrument, match=r"DNSMOS needs the speechmos .*pip install 'voicefleet\[eval\]'"):
        evaluate_audio(corpus.lines("low", count=1), corpus.clips["low"][0], metrics="dnsmos")


def test_select_lines_spreads_evenly_and_is_stable(corpus):
    lines = corpus.lines("low") + corpus.lines("high")
    picked = select_lines(lines, 3)
    assert [p.line for p in picked] == [p.line for p in select_lines(lines, 3)]
    assert len(picked) == 3 and picked[0] is lines[0] and picked[-1] in lines[len(lines) // 2:]
    assert select_lines(lines, 100) == list(lines)


def test_voice_mode_writes_the_report(tiny_voice, corpus, tmp_path):
    synth, voice = tiny_voice
    lines = corpus.lines("low", count=2) + corpus.lines("high", count=1)
    result = evaluate_voice(synth, voice, lines, reference_audio=corpus.root / "reference.wav",
                            config={"voice_id": "tiny"})
    out = write_evaluation(result, tmp_path / "eval")
    data = json.loads((out / "eval.json").read_text())
    assert set(data) == {"summary", "utterances", "config"}
    summary = data["summary"]
    assert set(SUMMARY_FIELDS) | {"n", "mode"} <= set(summary) and summary["n"] == 3 and summary["mode"] == "voice"
    for key in SUMMARY_FIELDS:
        assert isinstance(summary[key], float), key
    assert 1 <= summary["dnsmos_ovrl"] <= 5 and -1 <= summary["speaker_similarity"] <= 1
    assert summary["rtf"] > 0 and summary["duration_ratio"] > 0
    config = data["config"]
    assert config["mode"] == "voice" and config["metrics"] == ["similarity", "dnsmos", "wer"]
    assert config["synthesis"]["seed"] == 0 and config["voice_id"] == "tiny"
    assert config["instruments"]["resemblyzer"] and config["instruments"]["pocketsphinx"]
    for row, line in zip(data["utterances"], lines):
        assert row["clip_id"] == line.clip_id and row["text"] == line.text and row["line"] == line.line
        wave, sr = sf.read(out / row["synthesis"])
        assert sr == 32000 and len(wave) / sr == pytest.approx(row["synth_duration_s"], abs=1e-3)
        # the token cap keeps an untrained GPT near the real clip's length (+ fragment pauses)
        assert row["synth_duration_s"] <= TOKEN_CAP_FACTOR * row["duration_s"] * 3 + 0.3 * 3
        for key in ("speaker_similarity", "speaker_similarity_to_ref", "dnsmos_ovrl", "wer", "rtf"):
            assert isinstance(row[key], float), key
    with (out / "utterances.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and rows[0]["synthesis"] == "audio/0000.wav" and float(rows[0]["wer"]) >= 0
    report = (out / "report.md").read_text()
    assert "![similarity](similarity.png)" in report and "## Listening" in report and "audio/0002.wav" in report
    for png in ("similarity.png", "dnsmos.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_evaluation(result, out)


def test_the_same_seed_gives_the_same_scores(tiny_voice, corpus):
    synth, voice = tiny_voice
    lines = corpus.lines("low", count=1)
    a = evaluate_voice(synth, voice, lines, metrics="similarity")
    b = evaluate_voice(synth, voice, lines, metrics="similarity", params=SynthesisParams(seed=0))
    assert a.utterances[0]["speaker_similarity"] == pytest.approx(b.utterances[0]["speaker_similarity"])
    np.testing.assert_array_equal(a.audio[0], b.audio[0])


def test_resynthesis_keeps_each_clip_length(tiny_voice, corpus):
    synth, voice = tiny_voice
    result = evaluate_voice(synth, voice, corpus.lines("high", count=2), metrics="similarity", resynth=True)
    assert result.summary["mode"] == "resynth"
    for row in result.utterances:
        # one semantic token per 40 ms of the real clip, rebuilt at the same rate
        assert row["synth_duration_s"] == pytest.approx(row["duration_s"], abs=0.1)


def test_voice_mode_refuses_lines_it_cannot_synthesise(tiny_voice, corpus):
    synth, voice = tiny_voice
    with pytest.raises(EvaluationError, match="line 1: language 'fr' cannot be synthesised"):
        evaluate_voice(synth, voice, corpus.lines("low", lang="fr", count=1))
    with pytest.raises(EvaluationError, match="line 1: no text to synthesise"):
        evaluate_voice(synth, voice, corpus.lines("low", texts=("",), count=1))


@pytest.mark.slow
def test_thirty_utterances_score_within_two_minutes(tiny_voice, corpus, tmp_path):
    """The speed target: 30 short lines (about 1.5 s each), all metrics, tiny voice, 2 CPUs."""
    synth, voice = tiny_voice
    phrases = ("Open the door.", "Call me back tomorrow.", "It is easy to tell.", "Turn on the light.",
               "A cup of coffee.")
    rows = []
    for i, text in enumerate(phrases):
        for speaker in VOICES:
            _speak(tmp_path / f"{speaker}{i}.wav", speaker, i, text)
            rows.append(f"{speaker}{i}.wav|{speaker}|en|{text}")
    lines = parse_list_text("\n".join(rows * 3), location=str(tmp_path / "l.list"))
    assert len(lines) == 30
    # One intra-op thread: at tiny size two OpenMP threads gain nothing, and on a busy 2-core machine
    # their spin-waiting makes the run several times slower.
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = evaluate_voice(synth, voice, lines, reference_audio=corpus.root / "reference.wav")
    seconds = time.perf_counter() - start
    print(f"30 utterances scored in {seconds:.1f} s")
    assert result.summary["n"] == 30 and result.summary["dnsmos_ovrl"] is not None
    assert seconds < 120
