"""The measuring instruments, each loaded once per process and shared by every evaluation.

Three packages that carry their own models and run offline (the `voicefleet[eval]` extra):

* resemblyzer: a speaker encoder (GE2E, 256-dim embeddings of 16 kHz speech);
* speechmos: DNSMOS P.835, three ONNX regressors of a clip's signal, background and overall
  quality, run by onnxruntime;
* pocketsphinx: an offline speech recogniser with a US English model inside the wheel.

A missing package is reported when an evaluation starts, before anything is synthesised, as one
line that names the extra to install. Each instrument is guarded by a lock: the recogniser keeps
decoding state, and training or serving may score from several threads.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

SCORING_SR = 16000  # every instrument reads 16 kHz audio
EXTRA_HINT = "install the evaluation extra: pip install 'voicefleet[eval]'"


class EvaluationError(ValueError):
    """An evaluation that cannot run as asked (bad list, missing files, unknown metric, ...)."""


class MissingInstrument(EvaluationError):
    """An instrument's package is not installed (or cannot be imported)."""


def _import_failure(package: str, purpose: str, error: BaseException) -> MissingInstrument:
    reason = " ".join(str(error).split())
    if "pkg_resources" in reason:  # webrtcvad (resemblyzer's VAD) needs setuptools < 81
        reason += "; webrtcvad needs setuptools<81"
    return MissingInstrument(f"{purpose} needs the {package} package, which cannot be imported ({reason}); "
                             f"{EXTRA_HINT}")


class SpeakerEncoder:
    """Speaker embeddings: 16 kHz audio (samples,) -> unit vector (256,), or None for a clip with
    too little speech to embed."""

    MIN_SPEECH_S = 0.3  # resemblyzer's VAD keeps at least this much voiced audio or we use the clip whole

    def __init__(self) -> None:
        try:
            with warnings.catch_warnings():  # webrtcvad's own pkg_resources import warns on every start
                warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
                from resemblyzer import VoiceEncoder
                from resemblyzer.audio import preprocess_wav
        except Exception as e:  # ImportError, or pkg_resources missing inside webrtcvad
            raise _import_failure("resemblyzer", "speaker similarity", e) from None
        self._encoder = VoiceEncoder("cpu", verbose=False)
        self._preprocess = preprocess_wav
        self._lock = threading.Lock()

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.size == 0 or float(np.abs(audio).max()) < 1e-4:
            return None
        with self._lock:
            wav = self._preprocess(audio)  # volume normalised, long pauses cut by a VAD
            if len(wav) < self.MIN_SPEECH_S * SCORING_SR:
                # The VAD found (almost) no speech: embed the whole clip rather than nothing.
                wav = audio
            embedding = self._encoder.embed_utterance(wav)
        norm = float(np.linalg.norm(embedding))
        return embedding / norm if norm > 0 and np.isfinite(norm) else None


class Dnsmos:
    """DNSMOS P.835: 16 kHz audio -> {"sig", "bak", "ovrl"} on the 1..5 MOS scale.

    Clips shorter than the model's 9.01 s window are repeated to fill exactly one window; longer
    clips are scored per 1 s hop and averaged. (The reference implementation doubles a short clip
    until it is longer than a window and then averages 2-5 windows of the same repeated audio: four
    times the work for the same information.)
    """

    WINDOW_S = 9.01

    def __init__(self) -> None:
        try:
            import onnxruntime
            import speechmos
            from speechmos.dnsmos import DNSMOS
        except Exception as e:
            raise _import_failure("speechmos (with onnxruntime)", "DNSMOS", e) from None
        models = Path(speechmos.__file__).parent / "dnsmos_models"
        # The models are small: one thread, and no spin-waiting threads left behind to slow down the
        # torch work (synthesis, speaker encoder) that runs between DNSMOS calls.
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # speechmos's DNSMOS builds default sessions; ours replace them (the attributes it reads)
        self._model = DNSMOS.__new__(DNSMOS)
        self._model.primary_model_path = str(models / "sig_bak_ovr.onnx")
        self._model.onnx_sess = onnxruntime.InferenceSession(self._model.primary_model_path, options)
        self._model.p808_onnx_sess = onnxruntime.InferenceSession(str(models / "model_v8.onnx"), options)
        self._lock = threading.Lock()

    def score(self, audio: np.ndarray) -> dict[str, float] | None:
        audio = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
        if audio.size < SCORING_SR // 100:  # under 10 ms: nothing to repeat into a window
            return None
        window = int(self.WINDOW_S * SCORING_SR)
        if audio.size < window:
            audio = np.tile(audio, -(-window // audio.size))[:window]
        with self._lock:
            out = self._model(audio, SCORING_SR, False)
        return {"sig": float(out["sig_mos"]), "bak": float(out["bak_mos"]), "ovrl": float(out["ovrl_mos"])}


@dataclass(frozen=True)
class RecogniserModel:
    """A PocketSphinx model: acoustic model folder, pronunciation dictionary, language model."""

    acoustic: Path
    dictionary: Path
    language_model: Path

    @classmethod
    def find(cls, folder: str | Path) -> "RecogniserModel":
        """Find the three parts inside `folder` (the layout PocketSphinx's own models use: an
        acoustic-model folder holding `mdef`, a `*.dict` file, and a `*.lm.bin` or `*.lm` file)."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise EvaluationError(f"speech recogniser model folder {folder} does not exist")
        acoustic = sorted({p.parent for p in folder.rglob("mdef")})
        dictionaries = sorted(folder.rglob("*.dict"))
        # word language models before phone-loop ones (PocketSphinx's own folders ship both)
        lms = sorted((p for p in folder.rglob("*") if p.name.endswith((".lm.bin", ".lm", ".lm.dmp", ".DMP"))),
                     key=lambda p: ("phone" in p.name, p.name))
        missing = [what for what, found in (("an acoustic model folder (with mdef)", acoustic),
                                            ("a pronunciation dictionary (*.dict)", dictionaries),
                                            ("a language model (*.lm.bin or *.lm)", lms)) if not found]
        if missing:
            raise EvaluationError(f"{folder} is not a PocketSphinx model folder: no {', no '.join(missing)} found")
        return cls(acoustic[0].resolve(), dictionaries[0].resolve(), lms[0].resolve())


class Recogniser:
    """Offline speech recognition: 16 kHz audio -> lower-case words."""

    def __init__(self, model: RecogniserModel | None = None) -> None:
        try:
            from jiwer import wer
            from pocketsphinx import Decoder
        except Exception as e:
            raise _import_failure("pocketsphinx (with jiwer)", "WER", e) from None
        options: dict[str, Any] = {"samprate": SCORING_SR, "loglevel": "FATAL"}
        if model is not None:
            options.update(hmm=str(model.acoustic), dict=str(model.dictionary), lm=str(model.language_model))
        try:
            self._decoder = Decoder(**options)
        except Exception as e:  # a folder with the right names but unreadable contents
            raise EvaluationError(f"cannot load the speech recogniser model: {' '.join(str(e).split())}") from None
        self.model = model
        self.word_error_rate = wer  # (expected words, heard words), each space-separated -> errors / expected
        self._lock = threading.Lock()

    def transcribe(self, audio: np.ndarray) -> str:
        pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1, 1) * 32767).astype(np.int16).tobytes()
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""


# One of each per process: loading costs seconds, scoring a clip well under one. A failed load is
# not remembered, so installing the package and calling again works.
_load_lock = threading.Lock()
_loaded: dict[tuple, Any] = {}


def _once(key: tuple, make: Callable[[], Any]) -> Any:
    with _load_lock:
        if key not in _loaded:
            _loaded[key] = make()
        return _loaded[key]


def speaker_encoder() -> SpeakerEncoder:
    return _once(("speaker",), SpeakerEncoder)


def dnsmos() -> Dnsmos:
    return _once(("dnsmos",), Dnsmos)


def recogniser(model_folder: str | Path | None = None) -> Recogniser:
    """The built-in US English recogniser, or one loaded from a PocketSphinx model folder."""
    if model_folder is None:
        return _once(("asr", None), Recogniser)
    model = RecogniserModel.find(model_folder)
    return _once(("asr", model), lambda: Recogniser(model))


def versions() -> dict[str, str | None]:
    """Installed versions of the instruments' packages (recorded with every evaluation)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for package in ("resemblyzer", "speechmos", "onnxruntime", "pocketsphinx", "jiwer"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out
