"""Data preparation on Ray Data: GPT-SoVITS list file -> validated, versioned Parquet dataset.

Modules: `listfile` (the list format), `uris` (local paths and pyarrow URIs), `quality` (checks,
spectral entropy, official normalisation), `transcripts` (text -> phones), `stages` (the Ray Data
stages), `pipeline` (`prepare_dataset`: the driver and the Ray Data wiring), `store` (reading and
writing a prepared dataset folder), `split`, `schema`, `manifest`, `official_export`,
`slicer` (long recordings -> clips) and `synthetic` (voice-like test audio).

    from voicefleet.platform.data import PrepareConfig, prepare_dataset
    result = prepare_dataset("voice.list", "pretrained_models", "datasets/voice", config=PrepareConfig())
"""

from voicefleet.platform.data.config import PrepareConfig, StageResources
from voicefleet.platform.data.listfile import ListFileError
from voicefleet.platform.data.pipeline import PrepareResult, SpeakerSummary, prepare_dataset
from voicefleet.platform.data.quality import RejectReason
from voicefleet.platform.data.store import read_dataset, read_rejects

__all__ = ["ListFileError", "PrepareConfig", "PrepareResult", "RejectReason", "SpeakerSummary", "StageResources",
           "prepare_dataset", "read_dataset", "read_rejects"]
