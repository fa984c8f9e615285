"""Data preparation on Ray Data: GPT-SoVITS list file -> validated, versioned Parquet dataset.

Modules: `listfile` (the list format), `uris` (local paths and pyarrow URIs), `quality` (checks,
spectral entropy, official normalisation), `transcripts` (text -> phones), `stages` (the Ray Data
stages), `pipeline` (`prepare_dataset`: the driver and the Ray Data wiring), `store` (reading and
writing a prepared dataset folder), `split`, `schema`, `manifest`, `official_export`,
`slicer` (long recordings -> clips) and `synthetic` (voice-like test audio).

    from voicefleet.platform.data import PrepareConfig, prepare_dataset
    result = prepare_dataset("voice.list", "pretrained_models", "datasets/voice", config=PrepareConfig())
"""

import importlib

# Exports load on first use (PEP 562): reading `PrepareConfig`'s defaults (the command line does)
# must not import torch, Ray Data and the models through `pipeline`.
_EXPORTS = {
    "PrepareConfig": "config", "StageResources": "config", "ListFileError": "listfile",
    "PrepareResult": "pipeline", "SpeakerSummary": "pipeline", "prepare_dataset": "pipeline",
    "RejectReason": "quality", "read_dataset": "store", "read_rejects": "store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
