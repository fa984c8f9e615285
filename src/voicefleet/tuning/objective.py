"""The sweep objective: how well a voice says held-out text, through the whole synthesis path.

For every held-out clip: its phonemes (+ BERT) go through the GPT, prompted with the reference
clip's transcript and semantic tokens, then the SoVITS decoder renders the new tokens against
the reference's style. The result's log-mel is compared with the recorded clip's after dynamic
time warping (the two need not have the same length or timing): the objective is the mean L1
along the warping path. Both learning rates matter to it: the GPT decides the tokens, SoVITS
the sound. Decoding is greedy and noise-free, so the objective is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import librosa
import numpy as np
import torch

from voicefleet.inference.generation import GREEDY, TokenGenerator
from voicefleet.models.audio import linear_spectrogram, mel_spectrogram
from voicefleet.models.config import SAMPLE_RATE
from voicefleet.models.gpt import GPT
from voicefleet.models.sovits import SoVITS
from voicefleet.platform.training.batches import Example


def dtw_mel_l1(reference: np.ndarray, hypothesis: np.ndarray) -> float:
    """Mean |difference| of two log-mels (n_mels, frames) along their best time alignment."""
    if reference.shape[1] == 0 or hypothesis.shape[1] == 0:
        return float("inf")
    cost = np.abs(reference[:, :, None] - hypothesis[:, None, :]).mean(axis=0)  # (t_ref, t_hyp)
    _, path = librosa.sequence.dtw(C=cost)
    return float(cost[path[:, 0], path[:, 1]].mean())


@dataclass
class HeldOut:
    """A reference (prompt) clip and the held-out clips the voice is asked to say."""

    reference: Example
    clips: Sequence[Example]


@torch.no_grad()
def synthesize_held_out(gpt: GPT, sovits: SoVITS, held_out: HeldOut, *, max_tokens: int = 500
                        ) -> list[np.ndarray | None]:
    """Each held-out clip's text said by the voice (32 kHz float32), None where the GPT gave no token."""
    gpt.eval()
    sovits.eval()
    device = next(gpt.parameters()).device
    ref = held_out.reference
    ref_wave = torch.from_numpy(np.asarray(ref.wav32k, dtype=np.float32)).unsqueeze(0).to(device)
    ref_spec = linear_spectrogram(ref_wave)
    # v2Pro/v2ProPlus: the reference's speaker-verification embedding, as prepared
    ref_sv = None if ref.sv is None else [torch.from_numpy(np.asarray(ref.sv, dtype=np.float32))[None].to(device)]
    prompt_tokens = torch.as_tensor(list(ref.semantic), dtype=torch.long, device=device)
    dim = gpt.config.bert_dim

    def bert_of(ex: Example) -> torch.Tensor:
        if ex.bert is None:
            return torch.zeros(dim, len(ex.phone_ids))
        return torch.from_numpy(np.asarray(ex.bert, dtype=np.float32))

    waves: list[np.ndarray | None] = []
    for clip in held_out.clips:
        phones = torch.as_tensor(list(ref.phone_ids) + list(clip.phone_ids), dtype=torch.long, device=device)
        bert = torch.cat([bert_of(ref), bert_of(clip)], dim=1).to(device)
        # at most ~2x the recorded length: a voice that never stops is scored on what it said
        steps = min(max_tokens, 2 * len(clip.semantic) + 10)
        out = TokenGenerator(gpt).generate(phones, bert, prompt_tokens, sampling=GREEDY, max_steps=steps)
        tokens = out.new_tokens(0)
        if tokens.numel() == 0:
            waves.append(None)
            continue
        wave = sovits.decode(tokens.view(1, 1, -1), torch.as_tensor([list(clip.phone_ids)], device=device),
                             [ref_spec], noise_scale=0.0, sv=ref_sv)
        waves.append(wave[0, 0].float().cpu().numpy())
    return waves


def reconstruction_loss(held_out: HeldOut, waves: Sequence[np.ndarray | None]) -> float:
    """Mean DTW-aligned log-mel L1 of the syntheses against the recorded clips (inf if any is missing)."""
    losses = []
    for clip, wave in zip(held_out.clips, waves):
        if wave is None:
            losses.append(float("inf"))
            continue
        hyp = mel_spectrogram(torch.from_numpy(wave).unsqueeze(0))[0].numpy()
        target = mel_spectrogram(torch.from_numpy(np.asarray(clip.wav32k, dtype=np.float32)).unsqueeze(0))[0]
        losses.append(dtw_mel_l1(target.numpy(), hyp))
    return float(np.mean(losses)) if losses else float("inf")


def voice_reconstruction_loss(gpt: GPT, sovits: SoVITS, held_out: HeldOut, *, max_tokens: int = 500) -> float:
    """Mean DTW-aligned log-mel L1 of the held-out clips synthesised through GPT and SoVITS."""
    return reconstruction_loss(held_out, synthesize_held_out(gpt, sovits, held_out, max_tokens=max_tokens))


# The score a missing synthesis counts as (the scale's worst), so a trial that says nothing ranks last
WORST_SCORE = {"speaker_similarity": -1.0, "speaker_similarity_to_ref": -1.0, "dnsmos_sig": 1.0, "dnsmos_bak": 1.0,
               "dnsmos_ovrl": 1.0}


def quality_scores(held_out: HeldOut, waves: Sequence[np.ndarray | None], metrics: Sequence[str]) -> dict[str, float]:
    """The evaluation instruments on the syntheses: speaker similarity to each recorded clip and to the
    prompt clip, DNSMOS; each the mean over the held-out clips, a missing synthesis at `WORST_SCORE`."""
    from voicefleet.platform.evaluation.metrics import (Clip, Reference, ScoringOptions, output_fields,
                                                        setup_scorers, to_scoring_rate)
    from voicefleet.platform.evaluation.instruments import SCORING_SR

    scorers = setup_scorers(list(metrics), ScoringOptions())
    prompt = Clip(to_scoring_rate(np.asarray(held_out.reference.wav32k, dtype=np.float32), SAMPLE_RATE))
    fields = output_fields(list(metrics))[0]
    values: dict[str, list[float]] = {f: [] for f in fields}
    for clip, wave in zip(held_out.clips, waves):
        row: dict = {}
        if wave is not None:
            real = Clip(to_scoring_rate(np.asarray(clip.wav32k, dtype=np.float32), SAMPLE_RATE))
            audio = to_scoring_rate(wave, SAMPLE_RATE)
            for scorer in scorers.values():
                row.update(scorer(audio, Reference(real, prompt), SCORING_SR))
        for f in fields:
            value = row.get(f)
            values[f].append(float(value) if value is not None and np.isfinite(value) else WORST_SCORE[f])
    return {f: float(np.mean(v)) for f, v in values.items() if v}
