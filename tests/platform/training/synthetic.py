"""Synthetic prepared clips with learnable structure: tokens follow phonemes, audio follows tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from voicefleet.platform.data.schema import SV_COLUMN, dataset_schema, to_f16_blob
from voicefleet.platform.training.batches import Example


def learnable_examples(n: int, seed: int = 0, prefix: str = "clip") -> list[Example]:
    """Each phoneme id maps to two semantic tokens and a pitch, the same in every clip."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        phones = rng.integers(100, 140, int(rng.integers(6, 11))).tolist()
        semantic = [2 * p % 1024 for p in phones for _ in range(2)] + [(2 * p + 1) % 1024 for p in phones]
        frames25 = len(semantic)
        sr, hop25 = 32000, 1280
        t = np.arange(frames25 * hop25) / sr
        f0 = np.repeat([80 + 3 * (s % 40) for s in semantic], hop25)
        wave = (0.3 * np.sin(2 * np.pi * np.cumsum(f0) / sr) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        hubert = np.repeat(np.stack([np.sin(np.arange(768) * (s % 40 + 1) / 100) for s in semantic], 1), 2, axis=1)
        bert = rng.standard_normal((1024, len(phones))).astype(np.float32) if i % 2 else None
        out.append(Example(f"{prefix}{i:03d}", wave, hubert.astype(np.float16), phones, semantic, bert))
    return out


def write_dataset(folder: Path, examples: Sequence[Example], splits: Sequence[str]) -> Path:
    """A prepared-dataset folder (data/part-0.parquet in the prepare schema) holding `examples`
    (with the `sv_emb` column of v2Pro datasets when the examples have embeddings)."""
    with_sv = any(e.sv is not None for e in examples)
    rows = []
    for e, split in zip(examples, splits):
        hubert_shape, hubert = to_f16_blob(e.hubert)
        bert_shape, bert = to_f16_blob(e.bert) if e.bert is not None else (None, None)
        rows.append(dict(
            clip_id=e.clip_id, speaker="spk", lang="zh" if e.bert is not None else "en", text="x", norm_text="x",
            phones=["a1"] * len(e.phone_ids), phone_ids=list(e.phone_ids), word2ph=None,
            duration_s=len(e.wav32k) / 32000, spectral_entropy=0.5,
            audio_32k=(np.clip(e.wav32k, -1, 1) * 32767).astype(np.int16).tolist(), hubert_shape=hubert_shape,
            hubert=hubert, semantic=list(e.semantic), bert_shape=bert_shape, bert=bert, split=split,
            source=e.clip_id, audio_sha256="0", row_key=e.clip_id,
            **({SV_COLUMN: np.asarray(e.sv, dtype=np.float32).tolist()} if with_sv else {})))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=dataset_schema("int16", with_sv)), folder / "data" / "part-0.parquet")
    return folder


def write_voice_dataset(folder: Path, n_train: int = 8, n_val: int = 2) -> Path:
    """A prepared dataset with `n_train` + `n_val` learnable clips plus a 4-5 s validation clip that
    can serve as the voice's reference (registering a voice needs one of 3-10 s)."""
    train, val = learnable_examples(n_train, seed=0), learnable_examples(n_val, seed=1, prefix="val")
    long = learnable_examples(1, seed=2, prefix="long")[0]
    reps = 5
    long.wav32k = np.tile(long.wav32k, reps)
    long.hubert = np.tile(long.hubert, (1, reps))
    long.semantic = list(long.semantic) * reps
    return write_dataset(folder, train + val + [long], ["train"] * n_train + ["val"] * (n_val + 1))


def synthesize_registered(registry, voice_id: str, pretrained) -> np.ndarray:
    """A few phonemes spoken by a registered voice (its weights, reference and prompt) on CPU."""
    from voicefleet.inference.pipeline import SynthesisParams, Synthesizer

    record = registry.get(voice_id)
    files = registry.local_files(voice_id)
    synth = Synthesizer.from_pretrained(pretrained)
    voice = synth.load_voice(voice_id, files["gpt"], files["sovits"], files["reference"], record.prompt_text,
                             record.prompt_lang)
    return synth.synthesize_units(voice, synth.phoneme_units([[100, 101, 102, 103]], voice),
                                  SynthesisParams(max_tokens=20, seed=0))
