"""Evaluation metrics: small scoring functions registered by name.

A metric is a setup function that loads its instrument (once per process, `instruments`) and
returns a scorer `(audio, reference, sr) -> dict`: `audio` is the clip being judged (a synthesis,
or a real clip in audio mode), `reference` what it is judged against (`Reference`). The dict's
keys are the metric's `fields` (numbers or None, averaged in the summary) and `notes` (text, per
utterance only). Adding a metric is one setup function and one `register` line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from voicefleet.platform.evaluation import instruments
from voicefleet.platform.evaluation.instruments import SCORING_SR, EvaluationError

Scorer = Callable[[np.ndarray, "Reference", int], dict[str, Any]]


@dataclass(eq=False)
class Clip:
    """A clip at the scoring rate (samples,) float32. Instrument outputs computed from it are cached
    on it: a voice's reference clip is compared with every line, but embedded once."""

    audio: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SCORING_SR


@dataclass
class Reference:
    """What a clip is judged against.

    target: the speaker it should sound like: the line's real clip (voice mode) or the `--against`
        clip (audio mode).
    prompt: the voice's reference clip (voice mode only).
    text / lang: the line's transcript and normalised language ("zh", "en"; None if unsupported);
        lang_code is the code as the list file wrote it.
    """

    target: Clip | None
    prompt: Clip | None = None
    text: str = ""
    lang: str | None = None
    lang_code: str = ""


@dataclass(frozen=True)
class ScoringOptions:
    """Settings of the instruments. asr_model: a PocketSphinx model folder used for every line
    instead of the built-in US English one (the way to score another language)."""

    asr_model: str | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    fields: tuple[str, ...]
    notes: tuple[str, ...]
    setup: Callable[[ScoringOptions], Scorer]
    description: str


METRICS: dict[str, Metric] = {}


def register(name: str, fields: tuple[str, ...], notes: tuple[str, ...], description: str
             ) -> Callable[[Callable[[ScoringOptions], Scorer]], Callable[[ScoringOptions], Scorer]]:
    def wrap(setup: Callable[[ScoringOptions], Scorer]) -> Callable[[ScoringOptions], Scorer]:
        METRICS[name] = Metric(name, fields, notes, setup, description)
        return setup

    return wrap


def resolve_metrics(names: str | Any | None) -> tuple[list[str], bool]:
    """`None` (all metrics, leniently) or names (a comma-separated string or a list) -> the metric
    names in registry order, and whether they were asked for explicitly."""
    if names is None:
        return list(METRICS), False
    if isinstance(names, str):
        names = names.split(",")
    wanted = [n.strip().lower() for n in names if n.strip()]
    if not wanted:
        raise EvaluationError(f"no metric given; choose any of {', '.join(METRICS)}")
    unknown = [n for n in wanted if n not in METRICS]
    if unknown:
        raise EvaluationError(f"unknown metric {unknown[0]!r}; choose any of {', '.join(METRICS)}")
    return [n for n in METRICS if n in wanted], True


# ---- speaker similarity --------------------------------------------------------------------------
def _embedding(encoder: instruments.SpeakerEncoder, clip: Clip) -> np.ndarray | None:
    if "speaker" not in clip.cache:
        clip.cache["speaker"] = encoder.embed(clip.audio)
    return clip.cache["speaker"]


def _cosine(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    return None if a is None or b is None else float(np.clip(np.dot(a, b), -1.0, 1.0))


@register("similarity", ("speaker_similarity", "speaker_similarity_to_ref"), (),
          "cosine of speaker embeddings (resemblyzer): to the real clip / --against clip, and to the "
          "voice's reference clip")
def speaker_similarity(options: ScoringOptions) -> Scorer:
    encoder = instruments.speaker_encoder()

    def score(audio: np.ndarray, reference: Reference, sr: int) -> dict[str, Any]:
        embedding = encoder.embed(to_scoring_rate(audio, sr))
        return {
            "speaker_similarity": _cosine(embedding, _embedding(encoder, reference.target))
            if reference.target is not None else None,
            "speaker_similarity_to_ref": _cosine(embedding, _embedding(encoder, reference.prompt))
            if reference.prompt is not None else None,
        }

    return score


# ---- DNSMOS --------------------------------------------------------------------------------------
@register("dnsmos", ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"), (),
          "DNSMOS P.835 (speechmos): predicted signal, background and overall quality, 1..5")
def dnsmos(options: ScoringOptions) -> Scorer:
    model = instruments.dnsmos()

    def score(audio: np.ndarray, reference: Reference, sr: int) -> dict[str, Any]:
        out = model.score(to_scoring_rate(audio, sr))
        if out is None:
            return {"dnsmos_sig": None, "dnsmos_bak": None, "dnsmos_ovrl": None}
        return {"dnsmos_sig": out["sig"], "dnsmos_bak": out["bak"], "dnsmos_ovrl": out["ovrl"]}

    return score


# ---- intelligibility ------------------------------------------------------------------------------
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# a CJK character on its own (Chinese is scored per character), or a word of other letters/digits
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)*")


def words(text: str) -> list[str]:
    """The units WER counts: lower-case words, each CJK character as one unit, punctuation dropped."""
    return _TOKEN.findall(text.lower())


def recogniser_note(lang: str | None, lang_code: str, options: ScoringOptions) -> str | None:
    """Why a line of this language gets no WER (None when a recogniser is available)."""
    if options.asr_model is not None or lang == "en":
        return None
    return (f"no speech recogniser for language {lang_code or lang!r}: the built-in one is English only; "
            f"pass --asr-model DIR (a PocketSphinx model folder for that language)")


@register("wer", ("wer",), ("wer_note", "transcript"),
          "word error rate of an offline recogniser's transcript (pocketsphinx) against the line's text")
def word_error_rate(options: ScoringOptions) -> Scorer:
    asr = instruments.recogniser(options.asr_model)

    def score(audio: np.ndarray, reference: Reference, sr: int) -> dict[str, Any]:
        note = recogniser_note(reference.lang, reference.lang_code, options)
        if note is not None:
            return {"wer": None, "wer_note": note, "transcript": None}
        expected = words(reference.text)
        if not expected:
            return {"wer": None, "wer_note": "the line has no transcript to compare with", "transcript": None}
        heard = asr.transcribe(to_scoring_rate(audio, sr))
        got = words(heard)
        return {"wer": float(asr.word_error_rate(" ".join(expected), " ".join(got))), "wer_note": None, "transcript": heard}

    return score


# ---- helpers -------------------------------------------------------------------------------------
def to_scoring_rate(audio: np.ndarray, sr: int) -> np.ndarray:
    """Mono float32 at the instruments' 16 kHz."""
    audio = np.asarray(audio, dtype=np.float32)
    if sr == SCORING_SR:
        return audio
    import soxr

    return soxr.resample(audio, sr, SCORING_SR, quality="HQ").astype(np.float32)


def setup_scorers(names: list[str], options: ScoringOptions) -> dict[str, Scorer]:
    """Load the named metrics' instruments (a missing package fails here, before any work)."""
    return {name: METRICS[name].setup(options) for name in names}


def output_fields(names: list[str]) -> tuple[list[str], list[str]]:
    """(numeric fields, note fields) the named metrics write, in registry order."""
    numeric = [f for n in names for f in METRICS[n].fields]
    notes = [f for n in names for f in METRICS[n].notes]
    return numeric, notes
