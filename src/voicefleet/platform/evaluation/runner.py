"""Scoring a voice, or a list's own audio, line by line: per-utterance rows plus a summary.

Two modes share one loop:

* voice mode (`evaluate_voice`): each line's text is synthesised with the voice (fixed seed) and
  the synthesis is judged against the line's real clip; with `resynth=True` SoVITS instead
  rebuilds each real clip from its own semantic tokens (HuBERT -> quantizer), so only the
  acoustic model is judged, not the GPT's token choices;
* audio mode (`evaluate_audio`): the list's own clips are judged against one reference clip, which
  checks the instruments and tells how consistent a dataset's speaker is.

Both take already-parsed list lines and an already-loaded voice, so training and sweeps can score
a subset of lines with models they hold; the instruments load once per process (`instruments`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from voicefleet.inference.pipeline import SynthesisParams, Synthesizer, Voice
from voicefleet.models.audio import load_audio
from voicefleet.models.config import SAMPLE_RATE
from voicefleet.platform.data import uris
from voicefleet.platform.data.listfile import ListEntry
from voicefleet.platform.evaluation.instruments import SCORING_SR, EvaluationError, versions
from voicefleet.platform.evaluation.metrics import (Clip, Reference, ScoringOptions, output_fields,
                                                    recogniser_note, resolve_metrics, setup_scorers,
                                                    to_scoring_rate)

logger = logging.getLogger(__name__)

# Every summary has these keys (None when not measured), so training, sweeps and serving can
# read them without knowing which metrics ran.
SUMMARY_FIELDS = ("speaker_similarity", "speaker_similarity_to_ref", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl",
                  "wer", "rtf", "duration_ratio")
TOKENS_PER_S = 25  # semantic tokens per second of audio
# A fragment may run to this many times its line's real duration (a synthesis that long has already
# failed; the cap only bounds what a failure costs). An untrained GPT rarely stops
# by itself; without a cap one line would cost the full 1500 tokens (a minute of audio).
TOKEN_CAP_FACTOR = 1.5
Progress = Callable[[int, int], None]


@dataclass
class Evaluation:
    """What an evaluation found.

    summary: the means of every `SUMMARY_FIELDS` value over the utterances that have one, `n`, the
        mode and, when some lines got no WER, `wer_note`.
    utterances: one row per line (list fields, durations, metric values and notes).
    config: how it was made (mode, list, voice, metrics, seed, instrument versions, ...).
    audio: the synthesised (or resynthesised) clips at 32 kHz, one per row; empty in audio mode.
    """

    summary: dict[str, Any]
    utterances: list[dict[str, Any]]
    config: dict[str, Any]
    audio: list[np.ndarray] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary, "utterances": self.utterances, "config": self.config}


def select_lines(lines: Sequence[ListEntry], max_lines: int | None) -> list[ListEntry]:
    """At most `max_lines` lines spread evenly over the list (the same ones every time)."""
    lines = list(lines)
    if max_lines is None or len(lines) <= max_lines:
        return lines
    if max_lines < 1:
        raise EvaluationError(f"max_lines must be at least 1, got {max_lines}")
    return [lines[int(i * len(lines) / max_lines)] for i in range(max_lines)]


def check_lines(lines: Sequence[ListEntry], *, synthesis: bool, strict_wer: bool, options: ScoringOptions) -> None:
    """Refuse, before any work, lines that cannot be evaluated: none at all, missing audio, text that
    cannot be synthesised (voice mode), or no recogniser for a line's language when WER was asked for."""
    if not lines:
        raise EvaluationError("the list has no lines to evaluate")
    missing = [f"{line.audio} (line {line.line})" for line in lines if not _exists(line.audio)]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise EvaluationError(f"{len(missing)} audio file{'s' if len(missing) > 1 else ''} of the list not found: "
                              f"{', '.join(missing[:3])}{more}")
    for line in lines:
        if synthesis and line.lang is None:
            raise EvaluationError(f"line {line.line}: language {line.lang_code!r} cannot be synthesised "
                                  f"(supported: zh, all_zh, en)")
        if synthesis and not line.text.strip():
            raise EvaluationError(f"line {line.line}: no text to synthesise for {line.clip_id}")
        note = recogniser_note(line.lang, line.lang_code, options) if strict_wer else None
        if note is not None:
            raise EvaluationError(f"line {line.line}: {note}; or leave wer out of the metrics")


def _exists(location: str) -> bool:
    return uris.exists(location) if uris.is_uri(location) else Path(location).is_file()


def _load(location: str | Path) -> np.ndarray:
    location = str(location)
    source: str | bytes = uris.read_bytes(location) if uris.is_uri(location) else location
    return load_audio(source, SCORING_SR)


def speech_duration_s(audio16: np.ndarray) -> float:
    """Seconds from the first to the last sound (40 dB below the clip's peak counts as silence)."""
    import librosa

    if audio16.size == 0 or float(np.abs(audio16).max()) < 1e-4:
        return 0.0
    trimmed, _ = librosa.effects.trim(audio16, top_db=40)
    return len(trimmed) / SCORING_SR


@torch.inference_mode()
def resynthesize(synth: Synthesizer, voice: Voice, clip16: np.ndarray, text: str, lang: str,
                 params: SynthesisParams) -> np.ndarray:
    """A real clip rebuilt by the voice's SoVITS from its own semantic tokens and phonemes (32 kHz)."""
    ssl = synth.hubert(torch.from_numpy(clip16).unsqueeze(0))
    tokens = voice.sovits.extract_latent(ssl)[0, 0]
    unit = synth.text_unit(text, lang, voice.gpt.config.bert_dim)
    if not unit.phone_ids:
        raise EvaluationError(f"no phonemes in {text!r} to resynthesise with")
    return synth.fragment_wave(voice, unit, tokens, 0, params)


def _row(index: int, line: ListEntry, real: Clip) -> dict[str, Any]:
    return {"index": index, "line": line.line, "clip_id": line.clip_id, "speaker": line.speaker,
            "lang": line.lang_code, "text": line.text, "audio": line.audio, "duration_s": real.duration_s}


def _score(scorers: Mapping[str, Callable], audio16: np.ndarray, reference: Reference) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scorer in scorers.values():
        out.update(scorer(audio16, reference, SCORING_SR))
    return out


def summarise(rows: Sequence[Mapping[str, Any]], mode: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"mode": mode, "n": len(rows)}
    for name in SUMMARY_FIELDS:
        values = [r[name] for r in rows if r.get(name) is not None and math.isfinite(r[name])]
        summary[name] = float(np.mean(values)) if values else None
    notes = [r["wer_note"] for r in rows if r.get("wer_note")]
    if notes:
        summary["wer_note"] = f"{len(notes)} of {len(rows)} lines have no WER: {notes[0]}"
    return summary


def _config(mode: str, names: list[str], explicit: bool, options: ScoringOptions,
            extra: Mapping[str, Any] | None) -> dict[str, Any]:
    from voicefleet import __version__

    return {"mode": mode, "metrics": names, "metrics_explicit": explicit, "asr_model": options.asr_model,
            "scoring_sample_rate": SCORING_SR, "instruments": versions(), "voicefleet": __version__,
            **dict(extra or {})}


def prepare_scoring(lines: Sequence[ListEntry], metrics: str | Sequence[str] | None, asr_model: str | Path | None,
                    max_lines: int | None, *, synthesis: bool):
    """Resolve the metrics, pick and check the lines, and load the instruments: everything that can
    fail on bad input, done before any synthesis."""
    names, explicit = resolve_metrics(metrics)
    options = ScoringOptions(str(Path(asr_model).expanduser().resolve()) if asr_model else None)
    lines = select_lines(lines, max_lines)
    check_lines(lines, synthesis=synthesis, strict_wer=explicit and "wer" in names, options=options)
    return names, explicit, options, lines, setup_scorers(names, options)


def evaluate_voice(synth: Synthesizer, voice: Voice, lines: Sequence[ListEntry], *,
                   reference_audio: str | Path | None = None, metrics: str | Sequence[str] | None = None,
                   params: SynthesisParams | None = None, resynth: bool = False,
                   asr_model: str | Path | None = None, max_lines: int | None = None,
                   progress: Progress | None = None, config: Mapping[str, Any] | None = None) -> Evaluation:
    """Synthesise each line's text with `voice` and judge it against the line's real clip.

    Args:
        synth / voice: a loaded synthesizer and voice (`Synthesizer.load_voice`).
        lines: list lines (`read_list_file(...).entries`); `max_lines` keeps an even subset.
        reference_audio: the voice's reference clip, for `speaker_similarity_to_ref`.
        metrics: None for all (lines in a language without a recogniser then get no WER, with a
            note), or names from `METRICS` (then such lines are an error if "wer" is among them).
        params: synthesis settings; seed 0 unless one is set. Each fragment's token cap is lowered
            to `TOKEN_CAP_FACTOR` times the line's real duration.
        resynth: judge SoVITS alone, rebuilding each real clip from its own semantic tokens.
        asr_model: a PocketSphinx model folder replacing the built-in English recogniser.
        config: extra entries for the result's config (e.g. the voice id).
    """
    mode = "resynth" if resynth else "voice"
    names, explicit, options, lines, scorers = prepare_scoring(lines, metrics, asr_model, max_lines, synthesis=True)
    params = params or SynthesisParams()
    if params.seed is None:
        params = params.model_copy(update={"seed": 0})
    prompt = Clip(_load(reference_audio)) if reference_audio is not None else None
    rows, audio = [], []
    for i, line in enumerate(lines):
        real = Clip(_load(line.audio))
        cap = max(TOKENS_PER_S, math.ceil(TOKEN_CAP_FACTOR * real.duration_s * TOKENS_PER_S))
        line_params = params.model_copy(update={"max_tokens": min(params.max_tokens, cap)})
        start = time.perf_counter()
        if resynth:
            wave = resynthesize(synth, voice, real.audio, line.text, line.lang, line_params)
        else:
            wave = synth.synthesize(voice, line.text, line.lang, line_params)
        seconds = time.perf_counter() - start
        wave16 = to_scoring_rate(wave, SAMPLE_RATE)
        row = _row(i, line, real)
        synth_s = len(wave) / SAMPLE_RATE
        real_speech = speech_duration_s(real.audio)
        row.update(synth_duration_s=synth_s, rtf=seconds / synth_s if synth_s else None,
                   duration_ratio=speech_duration_s(wave16) / real_speech if real_speech else None)
        row.update(_score(scorers, wave16, Reference(real, prompt, line.text, line.lang, line.lang_code)))
        rows.append(row)
        audio.append(wave)
        if progress:
            progress(i + 1, len(lines))
    params_json = params.model_dump()
    extra = {"voice": voice.name, "reference_audio": str(reference_audio) if reference_audio else None,
             "synthesis": params_json, "token_cap_factor": TOKEN_CAP_FACTOR, **dict(config or {})}
    result = Evaluation(summarise(rows, mode), rows, _config(mode, names, explicit, options, extra), audio)
    logger.info("evaluated voice %s on %d lines (%s): %s", voice.name, len(rows), mode, _brief(result.summary))
    return result


def evaluate_audio(lines: Sequence[ListEntry], against: str | Path, *, metrics: str | Sequence[str] | None = None,
                   asr_model: str | Path | None = None, max_lines: int | None = None,
                   progress: Progress | None = None, config: Mapping[str, Any] | None = None) -> Evaluation:
    """Judge the list's own clips: speaker similarity to `against`, DNSMOS and WER of each clip."""
    if not _exists(str(against)):
        raise EvaluationError(f"--against clip {against} not found")
    names, explicit, options, lines, scorers = prepare_scoring(lines, metrics, asr_model, max_lines, synthesis=False)
    target = Clip(_load(against))
    rows = []
    for i, line in enumerate(lines):
        real = Clip(_load(line.audio))
        row = _row(i, line, real)
        row.update(synth_duration_s=None, rtf=None, duration_ratio=None)
        row.update(_score(scorers, real.audio, Reference(target, None, line.text, line.lang, line.lang_code)))
        rows.append(row)
        if progress:
            progress(i + 1, len(lines))
    extra = {"against": str(against), **dict(config or {})}
    result = Evaluation(summarise(rows, "audio"), rows, _config("audio", names, explicit, options, extra))
    logger.info("evaluated %d clips against %s: %s", len(rows), against, _brief(result.summary))
    return result


def row_fields(names: Sequence[str]) -> list[str]:
    """Column order of the per-utterance rows for the named metrics."""
    numeric, notes = output_fields(list(names))
    return (["index", "line", "clip_id", "speaker", "lang", "text", "audio", "synthesis", "duration_s",
             "synth_duration_s", "rtf", "duration_ratio"] + numeric + notes)


def _brief(summary: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, float))
