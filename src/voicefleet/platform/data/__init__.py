"""Data preparation on Ray Data: GPT-SoVITS list file -> validated, versioned Parquet dataset.

Modules: `listfile` (the list format), `uris` (local paths and pyarrow URIs), `quality` (checks,
spectral entropy, official normalisation), `transcripts` (text -> phones), `stages` (the Ray Data
stages), `pipeline` (`prepare_dataset`), `split`, `schema`, `manifest`, `official_export`,
`slicer` (long recordings -> clips) and `synthetic` (voice-like test audio).

    from voicefleet.platform.data import PrepareConfig, prepare_dataset
    result = prepare_dataset("voice.list", "pretrained_models", "datasets/voice", config=PrepareConfig())
"""

from voicefleet.platform.data.config import PrepareConfig, StageResources
from voicefleet.platform.data.listfile import ListFileError
from voicefleet.platform.data.pipeline import PrepareResult, SpeakerSummary, prepare_dataset, read_dataset, read_rejects
from voicefleet.platform.data.quality import RejectReason

__all__ = ["ListFileError", "PrepareConfig", "PrepareResult", "RejectReason", "SpeakerSummary", "StageResources",
           "prepare_dataset", "read_dataset", "read_rejects"]
