"""The ONNX synthesis deployment (`engine: onnx`): each voice from its ONNX export in the registry, on
onnxruntime. Nothing this module imports loads torch, so a replica's process holds no PyTorch.

    voicefleet export onnx alice --storage runs --pretrained pretrained_models   # once per registered voice
    voicefleet serve --storage runs --pretrained pretrained_models --engine onnx

Everything but opening a voice is `voicefleet.serve.replica`'s, as for the torch replicas: the
multiplexed voice keys, the resident voices (`max_voices_per_replica`, one LRU: an adapter voice's
export holds merged weights, a full voice's worth), the thread pool, whole and streamed requests,
stats. A voice is opened from `<registry>/voices/<id>/onnx/` after `voicefleet.platform.onnx_exports`
has checked that the export was made from the voice as registered now; a voice with no export, a
stale or damaged one, or a v2Pro/v2ProPlus voice answers 409 `voice_not_exported` saying what to run.

The graphs every voice exports from the same pretrained folder (HuBERT, BERT) are opened once per
replica and shared (by SHA-256) while a resident voice uses them; a zero-shot voice's GPT and
SoVITS graphs likewise. Each session runs `torch_threads` intra-op threads. A request draws from
numpy generators seeded per fragment, so a seed gives the same audio on every ONNX replica; the
audio of sampled requests differs from the torch engine's (greedy decoding gives its tokens).
Streaming sends whole fragments: the torch engine's early first chunk (`first_chunk_tokens`) is not
offered here. Cross-request batching is torch-only (`ServeSettings` refuses it with this engine).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ray import serve

from voicefleet.inference.onnx_engine import OnnxFolderError, OnnxSynthesizer, OnnxVoice
from voicefleet.platform.onnx_exports import damaged_export, served_export
from voicefleet.platform.registry import VoiceRecord
from voicefleet.serve.replica import Replica
from voicefleet.serve.settings import ServeSettings


@dataclass
class OnnxServedVoice:
    """A resident voice: the sessions of its export and the voice with its reference clip."""

    engine: OnnxSynthesizer
    voice: OnnxVoice


@serve.deployment(name="VoiceSynthesizer")
class OnnxVoiceSynthesizer(Replica[OnnxServedVoice]):
    """One ONNX replica: the resident voices' onnxruntime sessions, shared between voices by graph."""

    separate_adapter_voices = False  # an adapter voice's export holds merged weights: a full voice

    def __init__(self, settings: ServeSettings):
        super().__init__(settings)
        self._sessions: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._sessions_lock = threading.Lock()  # two voices loading at once open a shared graph once

    def _open_voice(self, key: str, record: VoiceRecord, files: Mapping[str, Path]) -> OnnxServedVoice:
        storage, pretrained = self.settings.storage, self.settings.pretrained
        folder = served_export(self.registry, record, files, storage=storage, pretrained=pretrained)
        try:
            with self._sessions_lock:
                engine = OnnxSynthesizer(folder, threads=self.settings.torch_threads, shared=self._sessions)
        except OnnxFolderError as e:
            raise damaged_export(record.voice_id, folder, e, storage, pretrained) from None
        # the registry's clip and transcript: the export was checked to be made from these very files
        voice = engine.load_voice(files["reference"], record.prompt_text, record.prompt_lang, name=key)
        return OnnxServedVoice(engine, voice)

    def _engine(self, voice: OnnxServedVoice) -> tuple[OnnxSynthesizer, OnnxVoice]:
        return voice.engine, voice.voice
