"""Training examples and the padded batches both stages train on (official collate semantics).

An `Example` is one prepared clip: 32 kHz audio, HuBERT features at 50 Hz, phoneme ids, semantic
tokens at 25 Hz, (Chinese) BERT features and (v2Pro/v2ProPlus) the speaker-verification embedding. The data pipeline writes them to Parquet; these
functions only need the fields.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from voicefleet.models.audio import linear_spectrogram
from voicefleet.models.config import BERT_DIM

SEMANTIC_PAD = 1024  # the official pad value of semantic sequences (= EOS)


@dataclass
class Example:
    clip_id: str
    wav32k: np.ndarray  # (samples,) float32
    hubert: np.ndarray  # (768, frames) at 50 Hz
    phone_ids: Sequence[int]
    semantic: Sequence[int]  # 25 Hz tokens
    bert: np.ndarray | None = None  # (1024, n_phones) for Chinese; None means zeros
    sv: np.ndarray | None = None  # (sv_dim,) speaker-verification embedding of v2Pro datasets


class _Batch:
    """Moves every tensor field to a device."""

    def to(self, device: torch.device | str):
        return type(self)(*(None if getattr(self, f) is None else getattr(self, f).to(device, non_blocking=True)
                            for f in self.__dataclass_fields__))


@dataclass
class SoVITSBatch(_Batch):
    """ssl (b, 768, t), spec (b, 1025, t), spec_lengths (b,), wave (b, 1, samples), text (b, n), text_lengths (b,);
    sv (b, sv_dim) the clips' speaker-verification embeddings (v2Pro/v2ProPlus datasets), else None."""

    ssl: torch.Tensor
    spec: torch.Tensor
    spec_lengths: torch.Tensor
    wave: torch.Tensor
    text: torch.Tensor
    text_lengths: torch.Tensor
    sv: torch.Tensor | None = None


@dataclass
class GPTBatch(_Batch):
    """phonemes (b, n), phoneme_lens (b,), bert (b, 1024, n), semantic (b, t), semantic_lens (b,)."""

    phonemes: torch.Tensor
    phoneme_lens: torch.Tensor
    bert: torch.Tensor
    semantic: torch.Tensor
    semantic_lens: torch.Tensor


def sovits_item(ex: Example) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ssl (768, t), spec (1025, t), wave (samples,), text (n,)) with ssl aligned to the spectrogram.

    As officially, HuBERT features one frame short of the spectrogram are extended by repeating
    the last frame; longer ones are cut.
    """
    wave = torch.from_numpy(np.asarray(ex.wav32k, dtype=np.float32))
    spec = linear_spectrogram(wave.unsqueeze(0))[0]
    ssl = torch.from_numpy(np.asarray(ex.hubert, dtype=np.float32))
    t = spec.shape[-1]
    if ssl.shape[-1] < t:
        ssl = F.pad(ssl.unsqueeze(0), (0, t - ssl.shape[-1]), mode="replicate")[0]
    ssl = ssl[:, :t]
    return ssl, spec, wave, torch.as_tensor(list(ex.phone_ids), dtype=torch.long)


def collate_sovits(examples: Sequence[Example], min_frames: int = 32) -> SoVITSBatch:
    """Zero-padded batch; frame widths rounded up to 2 * (max // 2 + 1) as the official collate does,
    and to at least `min_frames` (the decoder's training slice) so short clips can be sliced.
    The embeddings are stacked when the clips have them (all or none: a mix is an error)."""
    with_sv = sum(e.sv is not None for e in examples)
    if with_sv not in (0, len(examples)):
        raise ValueError(f"{with_sv} of {len(examples)} clips have a speaker-verification embedding; a dataset "
                         "holds it for every clip (v2Pro) or for none (v2)")
    sv = torch.stack([torch.from_numpy(np.asarray(e.sv, dtype=np.float32)) for e in examples]) if with_sv else None
    items = [sovits_item(e) for e in examples]
    b = len(items)
    width = max(2 * (max(i[1].shape[-1] for i in items) // 2 + 1), min_frames)
    samples = max(i[2].shape[-1] for i in items)
    n_text = max(i[3].shape[0] for i in items)
    ssl = torch.zeros(b, items[0][0].shape[0], width)
    spec = torch.zeros(b, items[0][1].shape[0], width)
    wave = torch.zeros(b, 1, max(samples, width * 640))
    text = torch.zeros(b, n_text, dtype=torch.long)
    spec_lengths, text_lengths = torch.zeros(b, dtype=torch.long), torch.zeros(b, dtype=torch.long)
    for k, (s, sp, w, tx) in enumerate(items):
        ssl[k, :, : s.shape[-1]] = s
        spec[k, :, : sp.shape[-1]] = sp
        wave[k, 0, : w.shape[-1]] = w
        text[k, : tx.shape[0]] = tx
        spec_lengths[k], text_lengths[k] = sp.shape[-1], tx.shape[0]
    return SoVITSBatch(ssl, spec, spec_lengths, wave, text, text_lengths, sv)


def collate_gpt(examples: Sequence[Example], bert_dim: int = BERT_DIM) -> GPTBatch:
    """Phonemes right-padded with 0, BERT with zeros, semantic tokens with 1024 (official collate)."""
    b = len(examples)
    n = max(len(e.phone_ids) for e in examples)
    t = max(len(e.semantic) for e in examples)
    phonemes = torch.zeros(b, n, dtype=torch.long)
    bert = torch.zeros(b, bert_dim, n)
    semantic = torch.full((b, t), SEMANTIC_PAD, dtype=torch.long)
    for k, e in enumerate(examples):
        phonemes[k, : len(e.phone_ids)] = torch.as_tensor(list(e.phone_ids))
        semantic[k, : len(e.semantic)] = torch.as_tensor(list(e.semantic))
        if e.bert is not None:
            bert[k, :, : len(e.phone_ids)] = torch.from_numpy(np.asarray(e.bert, dtype=np.float32))
    lens = lambda xs: torch.tensor([len(x) for x in xs], dtype=torch.long)  # noqa: E731
    return GPTBatch(phonemes, lens([e.phone_ids for e in examples]), bert, semantic,
                    lens([e.semantic for e in examples]))


def bucketed_batches(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, rank: int = 0,
                     world_size: int = 1, bucket_width: int = 4) -> Iterator[list[int]]:
    """Index batches of similar length, shuffled per epoch, split across `world_size` ranks.

    Every rank gets the same number of batches (short ranks repeat a batch), so DDP ranks never
    wait on one another at the end of an epoch.
    """
    if not lengths:
        return iter(())
    rng = random.Random(seed * 100_003 + epoch)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    buckets = [order[i:i + batch_size * bucket_width] for i in range(0, len(order), batch_size * bucket_width)]
    batches = []
    for bucket in buckets:
        rng.shuffle(bucket)
        batches += [bucket[i:i + batch_size] for i in range(0, len(bucket), batch_size)]
    rng.shuffle(batches)
    while len(batches) % world_size:
        batches.append(batches[len(batches) % max(1, len(batches))])
    return iter(batches[rank::world_size])
