"""One call from a list file to a written evaluation: what `voicefleet eval` runs.

    evaluate_list("data/alice/val.list", "out/eval", voice_id="alice", storage="runs",
                  pretrained="pretrained_models")
    evaluate_list("data/alice/slices.list", "out/consistency", against="data/alice/ref.wav")
"""

from __future__ import annotations

import datetime as _dt

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from voicefleet.inference.pipeline import SynthesisParams, Synthesizer, Voice
from voicefleet.models.pretrained import find_pretrained
from voicefleet.platform.data.listfile import SUPPORTED_LANGUAGES, normalize_language, read_list_file
from voicefleet.platform.evaluation.instruments import EvaluationError
from voicefleet.platform.evaluation.report import check_out_dir, write_evaluation
from voicefleet.platform.evaluation.runner import (Evaluation, Progress, evaluate_audio, evaluate_voice,
                                                   prepare_scoring)


@dataclass
class VoiceSource:
    """Where voice mode's voice comes from: a registry voice, or weight files (default: the
    pretrained ones). `ref`/`ref_text`/`ref_lang` replace the voice's reference clip and transcript."""

    voice_id: str | None = None
    storage: str = "runs"
    gpt: Path | None = None
    sovits: Path | None = None
    ref: Path | None = None
    ref_text: str | None = None
    ref_lang: str | None = None


def open_voice(synth: Synthesizer, source: VoiceSource, pretrained: str | Path
               ) -> tuple[Voice, Path, dict[str, Any]]:
    """Load the voice: (voice, its reference clip, what to record about it in the config)."""
    if source.voice_id is not None:
        if source.gpt or source.sovits:
            raise EvaluationError("give either a registry voice or --gpt/--sovits files, not both")
        from voicefleet.platform.voices import registry_for

        registry = registry_for(source.storage)
        record = registry.get(source.voice_id)
        files = registry.local_files(source.voice_id)
        gpt, sovits = files["gpt"], files["sovits"]
        ref, text, lang = files["reference"], record.prompt_text, record.prompt_lang
        described: dict[str, Any] = {"voice_id": source.voice_id, "voice_version": record.version,
                                     "storage": source.storage}
    else:
        paths = find_pretrained(pretrained)
        gpt, sovits = source.gpt or paths.gpt, source.sovits or paths.sovits_g
        if source.ref is None:
            raise EvaluationError("voice mode with weight files needs --ref (the voice's reference clip, 3-10 s)")
        ref, text, lang = source.ref, "", "zh"
        described = {"gpt": str(gpt), "sovits": str(sovits)}
    if source.ref is not None:
        ref, text = source.ref, source.ref_text or ""
        lang = source.ref_lang or lang
    elif source.ref_text is not None or source.ref_lang is not None:
        raise EvaluationError("--ref-text and --ref-lang go with --ref")
    if not Path(ref).is_file():
        raise EvaluationError(f"reference clip {ref} not found")
    if normalize_language(lang) is None:
        raise EvaluationError(f"reference language {lang!r} is not supported ({', '.join(SUPPORTED_LANGUAGES)})")
    voice = synth.load_voice(source.voice_id or "files", gpt, sovits, ref, text, lang)
    described.update(reference=str(ref), prompt_text=text, prompt_lang=lang)
    return voice, Path(ref), described


def evaluate_list(list_file: str | Path, out_dir: str | Path, *, voice: VoiceSource | None = None,
                  pretrained: str | Path | None = None, against: str | Path | None = None,
                  metrics: str | Sequence[str] | None = None, resynth: bool = False,
                  asr_model: str | Path | None = None, seed: int = 0, precision: str = "fp32",
                  max_lines: int | None = None, overwrite: bool = False,
                  progress: Progress | None = None) -> Evaluation:
    """Evaluate a list file in voice mode (`voice` given) or audio mode (`against` given) and write
    the report folder. Everything that can be checked is checked before models load."""
    if (voice is None) == (against is None):
        raise EvaluationError("choose voice mode (--voice, or --gpt/--sovits/--ref) or audio mode (--against)")
    if resynth and voice is None:
        raise EvaluationError("--resynth rebuilds clips with a voice: it needs voice mode")
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite=overwrite)
    listed = read_list_file(str(list_file))
    config = {"list": str(list_file), "list_sha256": listed.sha256, "max_lines": max_lines}
    if voice is None:
        result = evaluate_audio(listed.entries, against, metrics=metrics, asr_model=asr_model, max_lines=max_lines,
                                progress=progress, config=config)
    else:
        if pretrained is None:
            raise EvaluationError("voice mode needs --pretrained (the folder with HuBERT and BERT)")
        # cheap checks (lines, files, metrics, instruments, the voice) before the synthesis models load
        prepare_scoring(listed.entries, metrics, asr_model, max_lines, synthesis=True)
        evaluated_version = None
        if voice.voice_id is not None:
            from voicefleet.platform.voices import registry_for

            evaluated_version = registry_for(voice.storage).get(voice.voice_id).version
        synth = Synthesizer.from_pretrained(find_pretrained(pretrained), precision=precision)
        loaded, ref, described = open_voice(synth, voice, pretrained)
        result = evaluate_voice(synth, loaded, listed.entries, reference_audio=ref, metrics=metrics,
                                params=SynthesisParams(seed=seed), resynth=resynth, asr_model=asr_model,
                                max_lines=max_lines, progress=progress,
                                config={**config, **described, "precision": precision})
    write_evaluation(result, out_dir, overwrite=overwrite)
    if voice is not None and voice.voice_id is not None:
        # the registry keeps the latest summary of the voice's current version (GET /v1/voices shows it)
        from voicefleet.platform.voices import registry_for

        registry_for(voice.storage).record_evaluation(voice.voice_id, {
            "summary": result.summary, "list": str(list_file), "report": str(out_dir.resolve()),
            "evaluated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "mode": "resynth" if resynth else "voice"}, version=evaluated_version)
    return result
