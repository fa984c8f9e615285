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
def voice_reconstruction_loss(gpt: GPT, sovits: SoVITS, held_out: HeldOut, *, max_tokens: int = 500) -> float:
    """Mean DTW-aligned log-mel L1 of the held-out clips synthesised through GPT and SoVITS."""
    gpt.eval()
    sovits.eval()
    device = next(gpt.parameters()).device
    ref = held_out.reference
    ref_wave = torch.from_numpy(np.asarray(ref.wav32k, dtype=np.float32)).unsqueeze(0).to(device)
    ref_spec = linear_spectrogram(ref_wave)
    prompt_tokens = torch.as_tensor(list(ref.semantic), dtype=torch.long, device=device)
    dim = gpt.config.bert_dim

    def bert_of(ex: Example) -> torch.Tensor:
        if ex.bert is None:
            return torch.zeros(dim, len(ex.phone_ids))
        return torch.from_numpy(np.asarray(ex.bert, dtype=np.float32))

    losses = []
    for clip in held_out.clips:
        phones = torch.as_tensor(list(ref.phone_ids) + list(clip.phone_ids), dtype=torch.long, device=device)
        bert = torch.cat([bert_of(ref), bert_of(clip)], dim=1).to(device)
        # at most ~2x the recorded length: a voice that never stops is scored on what it said
        steps = min(max_tokens, 2 * len(clip.semantic) + 10)
        out = TokenGenerator(gpt).generate(phones, bert, prompt_tokens, sampling=GREEDY, max_steps=steps)
        tokens = out.new_tokens(0)
        if tokens.numel() == 0:
            losses.append(float("inf"))
            continue
        wave = sovits.decode(tokens.view(1, 1, -1), torch.as_tensor([list(clip.phone_ids)], device=device),
                             [ref_spec], noise_scale=0.0)
        hyp = mel_spectrogram(wave[:, 0].float().cpu())[0].numpy()
        target = mel_spectrogram(torch.from_numpy(np.asarray(clip.wav32k, dtype=np.float32)).unsqueeze(0))[0]
        losses.append(dtw_mel_l1(target.numpy(), hyp))
    return float(np.mean(losses)) if losses else float("inf")
