"""Synthesis on onnxruntime from a folder written by `voicefleet export onnx`; never imports torch.

    voicefleet synthesize --engine onnx --onnx-dir voice-onnx --ref-audio ref.wav --text "你好" -o out.wav

The steps are those of `voicefleet.inference.pipeline`, on the exported graphs
(`voicefleet.inference.onnx_export` lists them): the same text front end (`voicefleet.text`), the
same knobs (`voicefleet.inference.params`), the same decoding loop and stop rules with the
official sampling rules in numpy (`voicefleet.inference.onnx_sampling`), the same fragment
batching. Random draws come from numpy generators seeded per fragment as the torch path seeds
its own (`fragment_seed`): a seed reproduces the same audio on this engine, and greedy decoding
gives the torch path's tokens, but sampled tokens and the SoVITS noise differ between engines.

A folder is checked when it is opened: the manifest's format, every graph file against its size
and SHA-256, and every graph's input names; anything off raises `OnnxFolderError` saying what.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, MutableMapping, Sequence

import numpy as np

from voicefleet.inference.onnx_sampling import sample_next
from voicefleet.inference.params import (MIN_STEPS_BEFORE_EOS, SEED_MAX,
                                         SamplingParams, SynthesisError, SynthesisParams, check_reference_wave,
                                         fragment_seed)
from voicefleet.models.audio_files import load_audio
from voicefleet.models.config import SAMPLE_RATE, SSL_SAMPLE_RATE
from voicefleet.text.splitting import SENTENCE_MARKS, length_buckets, split_text

logger = logging.getLogger(__name__)

FORMAT = "voicefleet-onnx"
FORMAT_VERSION = 1
GRAPHS = ("gpt_text", "gpt_prefill", "gpt_step", "sovits_decode", "sovits_latent", "hubert", "bert")
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
ONNX_MODEL_VERSIONS = ("v2",)  # the model versions the graphs cover (v2Pro adds a speaker embedding)


class OnnxFolderError(ValueError):
    """An ONNX folder that cannot be used: missing, incomplete, changed since export, or of another format."""


@dataclass
class OnnxTextUnit:
    """Phoneme ids (n,) of a piece of text, its BERT features (bert_dim, n) float32 and normalised text."""

    phone_ids: list[int]
    bert: np.ndarray
    norm_text: str


@dataclass
class OnnxVoice:
    """The folder's voice with a reference clip: prompt tokens (n,), spectrogram (1, 1025, t), transcript."""

    name: str
    prompt_tokens: np.ndarray
    spec: np.ndarray
    duration_s: float
    prompt: OnnxTextUnit | None = None


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (graphs and weights are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The folder's manifest, after checking its format and every graph file against it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OnnxFolderError(f"{folder}: no such folder (write one with `voicefleet export onnx`)")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise OnnxFolderError(f"{folder}: no {MANIFEST_FILE}; not a folder written by `voicefleet export onnx`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OnnxFolderError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OnnxFolderError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise OnnxFolderError(f"{path}: format version {manifest.get('format_version')!r}; this voicefleet reads "
                              f"version {FORMAT_VERSION} (export the voice again)")
    graphs = manifest.get("graphs") or {}
    missing = [g for g in GRAPHS if g not in graphs]
    if missing:
        raise OnnxFolderError(f"{path}: lists no {', '.join(missing)} graph")
    for name in GRAPHS:
        entry = graphs[name]
        file = folder / entry["file"]
        if not file.is_file():
            raise OnnxFolderError(f"{folder}: {entry['file']} is missing")
        if file.stat().st_size != entry["bytes"] or file_sha256(file) != entry["sha256"]:
            raise OnnxFolderError(f"{folder}: {entry['file']} does not match the manifest (changed after export, "
                                  "or copied from another export); export the voice again")
    if not (folder / TOKENIZER_FILE).is_file():
        raise OnnxFolderError(f"{folder}: {TOKENIZER_FILE} is missing")
    return manifest


def linear_spectrogram(wave: np.ndarray, audio: dict[str, Any]) -> np.ndarray:
    """`voicefleet.models.audio.linear_spectrogram` of one clip (samples,) in numpy -> (1, n_fft/2+1, frames)."""
    n_fft, hop, win = audio["filter_length"], audio["hop_length"], audio["win_length"]
    pad = (n_fft - hop) // 2
    x = np.pad(wave.astype(np.float32), (pad, pad), mode="reflect")
    frames = (len(x) - n_fft) // hop + 1
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)).astype(np.float32)  # periodic Hann
    window = np.pad(window, ((n_fft - win) // 2, n_fft - win - (n_fft - win) // 2))
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(x[index] * window, axis=-1)
    power = (spectrum.real.astype(np.float32) ** 2 + spectrum.imag.astype(np.float32) ** 2)
    return np.sqrt(power + np.float32(1e-8)).T[None].astype(np.float32)


def open_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session for one graph file, with all graph optimisations."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxGPT:
    """The decoding loop over the three GPT graphs (`gpt_text`, `gpt_prefill`, `gpt_step` sessions)."""

    def __init__(self, sessions: dict[str, Any], eos: int):
        self.sessions, self.eos = sessions, eos

    def _run(self, name: str, **inputs: np.ndarray) -> list[np.ndarray]:
        return self.sessions[name].run(None, inputs)

    def generate(self, texts: Sequence[tuple[Sequence[int], np.ndarray]], prompt: np.ndarray | None,
                 sampling: SamplingParams, max_steps: int, rngs: Sequence[np.random.Generator], *,
                 trim_on_limit: bool) -> list[np.ndarray]:
        """Decode rows of (phoneme ids, BERT features (bert_dim, n)) after the prompt tokens (n,)
        (None: prompt-free); each row's new tokens. The loop and stop rules of
        `TokenGenerator._decode_steps`: rows leave the batch on EOS (that step's token dropped); on
        `max_steps` the rest keep all their tokens, or drop the last with `trim_on_limit` (batched)."""
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        batch = len(texts)
        embedded = [self._run("gpt_text", phonemes=np.asarray([ids], dtype=np.int64),
                              bert=np.asarray(bert, dtype=np.float32)[None])[0][0] for ids, bert in texts]
        width = max(e.shape[0] for e in embedded)
        text = np.stack([np.pad(e, ((width - e.shape[0], 0), (0, 0))) for e in embedded])  # left padding
        text_ok = np.stack([np.arange(width) >= width - e.shape[0] for e in embedded])
        tokens = (np.zeros((batch, 0), dtype=np.int64) if prompt is None
                  else np.tile(np.asarray(prompt, dtype=np.int64)[None], (batch, 1)))
        prompt_len = tokens.shape[1]
        logits, keys, values = self._run("gpt_prefill", text_embeddings=text.astype(np.float32), text_mask=text_ok,
                                         prompt_tokens=tokens)
        key_ok = np.concatenate([text_ok, np.ones((batch, prompt_len), dtype=bool)], axis=1)
        alive = list(range(batch))
        results: list[np.ndarray] = [tokens[0, prompt_len:]] * batch
        for step in range(max_steps):
            scores = logits[:, :-1] if step < MIN_STEPS_BEFORE_EOS else logits  # EOS is the last id
            new, penalised_argmax = sample_next(scores, tokens, sampling, [rngs[i] for i in alive])
            tokens = np.concatenate([tokens, new[:, None].astype(np.int64)], axis=1)
            ended = (new == self.eos) | (penalised_argmax == self.eos)
            for i in np.flatnonzero(ended):
                results[alive[i]] = tokens[i, prompt_len:-1]
            if step == max_steps - 1:
                for i in np.flatnonzero(~ended):
                    results[alive[i]] = tokens[i, prompt_len:-1] if trim_on_limit else tokens[i, prompt_len:]
                break
            if ended.all():
                break
            if ended.any():
                keep = np.flatnonzero(~ended)
                alive = [alive[i] for i in keep]
                tokens, key_ok, keys, values = tokens[keep], key_ok[keep], keys[:, keep], values[:, keep]
            key_ok = np.concatenate([key_ok, np.ones((len(alive), 1), dtype=bool)], axis=1)
            logits, keys, values = self._run("gpt_step", tokens=np.ascontiguousarray(tokens[:, -1:]),
                                             position=np.array([prompt_len + step], dtype=np.int64),
                                             key_mask=key_ok, past_keys=keys, past_values=values)
        return [np.asarray(r, dtype=np.int64) for r in results]


class OnnxSynthesizer:
    """The graphs of one exported folder and the synthesis steps; safe to call from several threads."""

    def __init__(self, folder: str | Path, *, threads: int | None = None,
                 shared: MutableMapping[str, Any] | None = None):
        """`shared` (optional): sessions by graph SHA-256, looked up before opening a graph and
        filled with the ones opened, so folders exported from the same weights (every voice's
        HuBERT and BERT from one pretrained folder) hold one session between them. A
        `weakref.WeakValueDictionary` keeps a session only while some folder uses it."""
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.sessions = {}
        for name in GRAPHS:
            entry = self.manifest["graphs"][name]
            session = shared.get(entry["sha256"]) if shared is not None else None
            if session is None:
                session = self._open(entry, threads)
                if shared is not None:
                    shared[entry["sha256"]] = session
            self.sessions[name] = session
        self.tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
        gpt = self.manifest["gpt"]
        self.bert_dim, self.eos, self.vocab = gpt["bert_dim"], gpt["eos"], gpt["vocab_size"]
        self.layers, self.heads, self.head_dim = gpt["layers"], gpt["heads"], gpt["head_dim"]
        self.precision = self.manifest.get("precision", "fp32")
        self.gpt = OnnxGPT(self.sessions, self.eos)
        logger.info("opened %s (%s, %s)", self.folder, self.precision, self.manifest["versions"])

    def _open(self, entry: dict[str, Any], threads: int | None):
        try:
            session = open_session(self.folder / entry["file"], threads)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise OnnxFolderError(f"{self.folder}: {entry['file']} is not a loadable ONNX graph "
                                  f"({' '.join(str(e).split())[:200]})") from None
        names = [i.name for i in session.get_inputs()]
        if names != [i["name"] for i in entry["inputs"]]:
            raise OnnxFolderError(f"{self.folder}: {entry['file']} takes inputs {names}, the manifest says "
                                  f"{[i['name'] for i in entry['inputs']]}")
        return session

    def _run(self, name: str, **inputs: np.ndarray) -> list[np.ndarray]:
        return self.sessions[name].run(None, inputs)

    # ---- text -----------------------------------------------------------------------------
    def bert_features(self, text: str, word2ph: Sequence[int]) -> np.ndarray:
        """`BertFeatures.phone_level_features` from the BERT graph: (hidden, sum(word2ph)) float32."""
        if len(word2ph) != len(text):
            raise ValueError(f"word2ph has {len(word2ph)} entries but text {text!r} has {len(text)} characters")
        encoded = self.tokenizer.encode(text)
        if len(encoded.ids) - 2 != len(text):
            raise ValueError(f"text {text!r} has {len(text)} characters but {len(encoded.ids) - 2} tokens; the "
                             "official feature needs one token per character")
        if len(encoded.ids) > self.manifest["bert"]["max_tokens"]:
            raise ValueError(f"text of {len(text)} characters exceeds BERT's "
                             f"{self.manifest['bert']['max_tokens'] - 2}-character limit")
        (hidden,) = self._run("bert", input_ids=np.array([encoded.ids], dtype=np.int64),
                              attention_mask=np.array([encoded.attention_mask], dtype=np.int64),
                              token_type_ids=np.array([encoded.type_ids], dtype=np.int64))
        return np.repeat(hidden[0, 1:1 + len(text)], np.asarray(word2ph, dtype=np.int64), axis=0).T.astype(np.float32)

    def text_unit(self, text: str, lang: str) -> OnnxTextUnit:
        """Text (one fragment) -> phonemes and BERT features, official language handling."""
        from voicefleet.text.frontend import phones_and_bert_segments

        ids: list[int] = []
        berts: list[np.ndarray] = []
        norm = []
        for seg in phones_and_bert_segments(text, lang):
            ids.extend(seg.phone_ids)
            norm.append(seg.norm_text)
            if seg.lang == "zh" and seg.word2ph:
                berts.append(self.bert_features(seg.norm_text, list(seg.word2ph)))
            else:
                berts.append(np.zeros((self.bert_dim, len(seg.phone_ids)), dtype=np.float32))
        bert = np.concatenate(berts, axis=1) if berts else np.zeros((self.bert_dim, 0), dtype=np.float32)
        return OnnxTextUnit(ids, bert, "".join(norm))

    def prompt_unit(self, prompt_text: str, prompt_lang: str) -> OnnxTextUnit | None:
        prompt_text = (prompt_text or "").strip("\n")
        if not prompt_text.strip():
            return None
        if prompt_text[-1] not in SENTENCE_MARKS:
            prompt_text += "." if prompt_lang.lower() == "en" else "。"
        return self.text_unit(prompt_text, prompt_lang)

    def fragments(self, text: str, lang: str, method: str) -> list[OnnxTextUnit]:
        units = [self.text_unit(p, lang) for p in split_text(text, method, lang)]
        units = [u for u in units if u.phone_ids]
        if not units:
            raise SynthesisError("nothing to synthesise: the text has no speakable content")
        return units

    def phoneme_units(self, fragments: Sequence[Sequence[int]]) -> list[OnnxTextUnit]:
        """Pre-phonemised fragments (lists of v2 phoneme ids) -> units with zero BERT features."""
        return [OnnxTextUnit(list(f), np.zeros((self.bert_dim, len(f)), dtype=np.float32), "") for f in fragments
                if len(f)]

    # ---- voices ---------------------------------------------------------------------------
    def load_voice(self, ref_audio: str | Path | bytes | None = None, prompt_text: str | None = None,
                   prompt_lang: str | None = None, name: str | None = None) -> OnnxVoice:
        """The folder's voice with a reference clip and its transcript; each defaults to the one
        stored at export (a registered voice's), if any."""
        stored = self.manifest.get("voice") or {}
        if ref_audio is None:
            if not stored.get("reference"):
                raise SynthesisError(f"{self.folder} holds no reference clip; give one (--ref-audio)")
            ref_audio = self.folder / stored["reference"]
            prompt_text = stored.get("prompt_text", "") if prompt_text is None else prompt_text
            prompt_lang = prompt_lang or stored.get("prompt_lang")
        wave16 = load_audio(ref_audio, SSL_SAMPLE_RATE)
        duration = check_reference_wave(wave16, SSL_SAMPLE_RATE)
        padded = np.pad(wave16, (0, self.manifest["hubert"]["reference_pad_samples"]))[None]
        (ssl,) = self._run("hubert", wave=padded.astype(np.float32))
        (codes,) = self._run("sovits_latent", ssl=ssl)
        wave32 = load_audio(ref_audio, SAMPLE_RATE)
        peak = float(np.abs(wave32).max(initial=0.0))
        if peak > 1:
            wave32 = wave32 / min(2.0, peak)
        spec = linear_spectrogram(wave32, self.manifest["sovits"]["audio"])
        return OnnxVoice(name or stored.get("id") or self.folder.name, codes[0, 0].astype(np.int64), spec, duration,
                         self.prompt_unit(prompt_text or "", prompt_lang or "zh"))

    # ---- GPT ------------------------------------------------------------------------------
    def generate(self, *args, **kwargs) -> list[np.ndarray]:
        """`OnnxGPT.generate` on this folder's GPT graphs."""
        return self.gpt.generate(*args, **kwargs)

    def _gpt_inputs(self, voice: OnnxVoice, unit: OnnxTextUnit) -> tuple[list[int], np.ndarray]:
        prompt = voice.prompt
        if prompt is None:
            return unit.phone_ids, unit.bert
        return prompt.phone_ids + unit.phone_ids, np.concatenate([prompt.bert, unit.bert], axis=1)

    def decode_tokens(self, voice: OnnxVoice, units: Sequence[OnnxTextUnit], indices: Sequence[int],
                      params: SynthesisParams) -> list[np.ndarray]:
        """The GPT stage: each fragment's new semantic tokens (as `Synthesizer.decode_tokens`)."""
        rows = [self._gpt_inputs(voice, u) for u in units]
        rngs = [np.random.default_rng(fragment_seed(params.seed, i, "gpt")) for i in indices]
        sampling = params.sampling()
        if voice.prompt is None:  # the official pipeline decodes without the audio prompt too
            return [self.generate([row], None, sampling, params.max_tokens, [rng], trim_on_limit=False)[0]
                    for row, rng in zip(rows, rngs)]
        return self.generate(rows, voice.prompt_tokens, sampling, params.max_tokens, rngs,
                             trim_on_limit=len(rows) > 1)

    # ---- SoVITS ---------------------------------------------------------------------------
    def fragment_wave(self, voice: OnnxVoice, unit: OnnxTextUnit, tokens: np.ndarray, index: int,
                      params: SynthesisParams) -> np.ndarray:
        """One fragment's semantic tokens (n,) -> float32 audio (no trailing silence)."""
        if tokens.size == 0:
            logger.warning("GPT produced no tokens for fragment %d (%r)", index, unit.norm_text)
            return np.zeros(0, dtype=np.float32)
        frames = 2 * tokens.size if params.speed == 1 else int(2 * tokens.size / params.speed) + 1
        inter = self.manifest["sovits"]["inter_channels"]
        rng = np.random.default_rng(fragment_seed(params.seed, index, "sovits"))
        noise = rng.standard_normal((frames, inter), dtype=np.float32).T[None]
        (wave,) = self._run("sovits_decode", codes=tokens.reshape(1, 1, -1).astype(np.int64),
                            phonemes=np.asarray([unit.phone_ids], dtype=np.int64), refer_spec=voice.spec,
                            noise=np.ascontiguousarray(noise), noise_scale=np.array([params.noise_scale], np.float32))
        wave = wave[0, 0]
        peak = float(np.abs(wave).max(initial=0.0))
        return (wave / peak if peak > 1 else wave).astype(np.float32)

    # ---- synthesis ------------------------------------------------------------------------
    @staticmethod
    def with_seed(params: SynthesisParams) -> SynthesisParams:
        if params.seed is not None:
            return params
        return params.model_copy(update={"seed": int(np.random.default_rng().integers(0, SEED_MAX))})

    def synthesize_units(self, voice: OnnxVoice, units: Sequence[OnnxTextUnit],
                         params: SynthesisParams = SynthesisParams()) -> np.ndarray:
        """All fragments -> one float32 waveform at 32 kHz; fragments batched by length."""
        if not units:
            raise SynthesisError("nothing to synthesise: no text fragments")
        params = self.with_seed(params)
        silence = np.zeros(int(SAMPLE_RATE * params.fragment_interval), dtype=np.float32)
        waves: list[np.ndarray | None] = [None] * len(units)
        for bucket in length_buckets([len(u.phone_ids) for u in units], params.batch_size):
            tokens = self.decode_tokens(voice, [units[i] for i in bucket], bucket, params)
            for i, t in zip(bucket, tokens):
                waves[i] = np.concatenate([self.fragment_wave(voice, units[i], t, i, params), silence])
        return np.concatenate(waves)

    def synthesize(self, voice: OnnxVoice, text: str, lang: str, params: SynthesisParams = SynthesisParams()
                   ) -> np.ndarray:
        """Text -> one float32 waveform at 32 kHz."""
        return self.synthesize_units(voice, self.fragments(text, lang, params.text_split_method), params)

    def stream(self, voice: OnnxVoice, text: str, lang: str, params: SynthesisParams = SynthesisParams()
               ) -> Iterator[np.ndarray]:
        """Text -> float32 audio chunks, one per fragment (each followed by the fragment silence),
        in order: the first fragment decoded alone so that it can play while the rest is decoded in
        consecutive batches of `params.batch_size`, as `Synthesizer.stream` does. Whole fragments
        only: the torch engine's early first chunk (`first_chunk_tokens`) is not offered here.
        The text is read (and refused) before this returns, so errors come before any audio."""
        units = self.fragments(text, lang, params.text_split_method)
        params = self.with_seed(params)
        silence = np.zeros(int(SAMPLE_RATE * params.fragment_interval), dtype=np.float32)
        groups = [[0]] + [list(range(start, min(start + params.batch_size, len(units))))
                          for start in range(1, len(units), params.batch_size)]

        def chunks() -> Iterator[np.ndarray]:
            for group in groups:
                tokens = self.decode_tokens(voice, [units[i] for i in group], group, params)
                for i, t in zip(group, tokens):
                    yield np.concatenate([self.fragment_wave(voice, units[i], t, i, params), silence])

        return chunks()
