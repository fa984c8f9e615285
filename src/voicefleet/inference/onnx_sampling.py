"""The official sampling rules in numpy, for the ONNX engine (no torch).

The same steps, in the same order, as `voicefleet.inference.generation.sample_next` (see
`SamplingParams`): repetition penalty, top-p, temperature, top-k, softmax, exponential race. The
random stream is numpy's, so with sampling the tokens differ from the torch path's for the same
seed; greedy decoding (`top_k=1`) draws nothing that matters and gives the same tokens.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from voicefleet.inference.params import SamplingParams


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sample_next(logits: np.ndarray, history: np.ndarray, params: SamplingParams,
                rngs: Sequence[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
    """Draw the next token per row.

    Args:
        logits: (batch, vocab) float32 scores; not modified.
        history: (batch, tokens) int64 tokens already in each sequence (prompt included).
        rngs: one generator per row.

    Returns:
        tokens (batch,) and the arg-max after the repetition penalty (batch,), which the stop
        rule also checks for EOS.
    """
    logits = np.array(logits, dtype=np.float32, copy=True)
    rows = np.arange(logits.shape[0])[:, None]
    if params.repetition_penalty != 1.0 and history.shape[1] > 0:
        seen = logits[rows, history]
        logits[rows, history] = np.where(seen < 0, seen * np.float32(params.repetition_penalty),
                                         seen / np.float32(params.repetition_penalty))
    penalised_argmax = logits.argmax(axis=-1)
    if params.top_p < 1.0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        cumulative = np.cumsum(_softmax(np.take_along_axis(logits, order, axis=-1)), axis=-1)
        drop_sorted = cumulative > params.top_p
        drop_sorted[:, 0] = False  # the most likely token always survives
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        logits[drop] = -np.inf
    logits = logits / np.float32(max(params.temperature, 1e-5))
    if params.top_k is not None:
        k = min(params.top_k, logits.shape[-1])
        kth = np.partition(logits, logits.shape[-1] - k, axis=-1)[:, logits.shape[-1] - k:].min(axis=-1, keepdims=True)
        logits[logits < kth] = -np.inf
    probs = _softmax(logits)
    draws = np.stack([rng.exponential(1.0, probs.shape[-1]).astype(np.float32) for rng in rngs])
    return (probs / draws).argmax(axis=-1), penalised_argmax
