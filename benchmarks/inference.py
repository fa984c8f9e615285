"""Synthesis speed at full size on CPU: GPT ms/token, SoVITS decode, first chunk, real-time factor.

    .venv/bin/python benchmarks/inference.py [--threads 2] [--seconds 10] [--modes fp32,fast,onnx,onnx-int8] \
        [--versions v2,v2ProPlus] [--size full|tiny] [--note "machine load ..."]

Random weights cost exactly what real ones do, so the models are built in memory at official
sizes. The random GPT never emits EOS, so each fragment decodes a fixed number of tokens
(25 per second of audio). A 6 s reference clip gives the 150-token prompt; text is ~10
phonemes per second of audio.

Versions: v2, v2Pro, v2ProPlus (the GPT is the same). A v2Pro voice also needs the reference's
speaker-verification embedding (32 kHz -> 16 kHz -> fbank -> ERes2NetV2), computed once per voice:
its time is reported in its own column and counted in the first chunk (a voice's first request).
The ONNX graphs are exported for v2 voices only; v2Pro rows have the torch modes.

Modes: `fp32` is the reference path (official numerics); `fast` is voicefleet's CPU inference
path (see `voicefleet.inference.fast`); the mel distance of `fast` to `fp32` on the same tokens
and noise is reported as its fidelity. `onnx` / `onnx-int8` run the same network exported as ONNX
graphs (`voicefleet.inference.onnx_export`; int8: onnxruntime dynamic quantisation of the GPT) on
onnxruntime with the engine's decoding loop (`voicefleet.inference.onnx_engine.OnnxGPT`), on the
same inputs and the same SoVITS noise. "memory" is the growth of the process's resident set while
a mode's models are built (for ONNX: the sessions, after export).

`fp32-lora` / `fast-lora` run an adapter voice (`voicefleet.inference.adapted`): a random rank-8
LoRA adapter on every target group (the GPT's attention and FFN; SoVITS text encoder, flow and
decoder), applied unmerged to the shared backbone of that precision. Compare each with the plain
mode of its precision for the adapter's cost; mel L1 is against the first mode listed, so list
`fp32-lora` first to compare `fast-lora` with it. Their notes also give what merging the decoder
adapter per request would cost instead (fold the update into each adapted kernel, then build the
bf16 decoder).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import report  # noqa: E402

from voicefleet.models import audio  # noqa: E402
from voicefleet.models.builders import (SOVITS_CONFIGS, speaker_verifier,  # noqa: E402
                                        speaker_verifier_tiny)
from voicefleet.models.sovits import SoVITS  # noqa: E402
from voicefleet.models.speaker_frontend import speaker_features  # noqa: E402
from voicefleet.models.builders_gpt import gpt_tiny, gpt_v2  # noqa: E402
from voicefleet.inference.generation import SamplingParams, TokenGenerator, relayout_for_cpu_decoding_  # noqa: E402

TOKENS_PER_S, HOP_S = 25, 640 * 2 / 32000


def _sovits_copy(base_sovits):
    """An inference copy of `base_sovits` (weight norm folded), built fresh: parametrised modules do not deep-copy."""
    sovits = type(base_sovits)(base_sovits.config)
    sovits.load_state_dict(base_sovits.state_dict())
    return sovits.eval().prepare_for_inference()


def _rss() -> int:
    """This process's resident set in bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class OnnxMode:
    """The GPT and SoVITS decode graphs of the same network on onnxruntime, called like the torch modes."""

    def __init__(self, base_gpt, base_sovits, *, int8: bool, threads: int, folder: Path):
        from voicefleet.inference.onnx_engine import OnnxGPT, open_session
        from voicefleet.inference.onnx_export import voice_graphs, write_graphs

        sovits = _sovits_copy(base_sovits)
        graphs = voice_graphs(copy.deepcopy(base_gpt), sovits)
        graphs = {k: v for k, v in graphs.items() if k in ("gpt_text", "gpt_prefill", "gpt_step", "sovits_decode")}
        write_graphs(graphs, folder, int8=int8)
        del graphs, sovits
        self.rss_before = _rss()
        self.sessions = {name: open_session(folder / f"{name}.onnx", threads)
                         for name in ("gpt_text", "gpt_prefill", "gpt_step", "sovits_decode")}
        self.gpt = OnnxGPT(self.sessions, base_gpt.config.EOS)
        self.inter = base_sovits.config.inter_channels

    def generate(self, phones, bert, prompt, *, sampling, max_steps, generator=None):
        self.gpt.generate([(phones.tolist(), bert.numpy())], prompt.numpy(), sampling, max_steps,
                          [np.random.default_rng(0)], trim_on_limit=False)

    def generate_batch(self, ids, berts, prompts, *, sampling, max_steps, generator=None):
        self.gpt.generate([(i.tolist(), b.numpy()) for i, b in zip(ids, berts)], prompts[0].numpy(), sampling,
                          max_steps, [np.random.default_rng(i) for i in range(len(ids))], trim_on_limit=True)

    def decode(self, tokens, text, refs, noise_scale, generator, sv=None):
        # the noise torch's decode draws from the same generator
        noise = torch.randn(1, self.inter, 2 * tokens.shape[-1], generator=generator)
        (wave,) = self.sessions["sovits_decode"].run(None, {
            "codes": tokens.numpy(), "phonemes": text.numpy(), "refer_spec": refs[0].numpy(), "noise": noise.numpy(),
            "noise_scale": np.array([noise_scale], np.float32)})
        return torch.from_numpy(wave)


class _OnnxDecoder:
    def __init__(self, mode: OnnxMode):
        self.mode = mode

    def decode(self, tokens, text, refs, noise_scale=0.5, generator=None, sv=None):
        return self.mode.decode(tokens, text, refs, noise_scale, generator)


class _Adapted:
    """A backbone's GPT decoding or SoVITS with one voice's adapters active in every call."""

    def __init__(self, inner, adapters):
        self.inner, self.adapters = inner, adapters

    def __getattr__(self, name):
        from voicefleet.models.adapters import use_adapter

        method = getattr(self.inner, name)

        def call(*args, **kwargs):
            with use_adapter(*self.adapters):
                return method(*args, **kwargs)

        return call


def adapter_voice(precision: str, base_gpt, base_sovits):
    """An adapter voice of `precision`: the backbone's models wrapped with a random rank-8 adapter per stage."""
    from voicefleet.inference.adapted import Backbone
    from voicefleet.models import adapters as lora

    gpt, sovits = copy.deepcopy(base_gpt), _sovits_copy(base_sovits)
    adapters = []
    for stage, model in (("gpt", gpt), ("sovits", sovits)):
        adapter = lora.Adapter.create(model, lora.AdapterSpec(stage, targets=tuple(lora.TARGET_GROUPS[stage])))
        with torch.no_grad():
            for _, layer in adapter.items():
                layer.lora_B.normal_(std=0.01)  # as if trained
        adapters.append(adapter.to(torch.float16))  # resident as in the files
    backbone = Backbone.from_models(gpt, sovits, precision=precision)
    return _Adapted(backbone.generator, adapters), _Adapted(backbone.sovits, adapters)


def decoder_merge_seconds(base_sovits) -> float:
    """What merging a rank-8 decoder adapter into the bf16 decoder per request would cost instead."""
    from voicefleet.inference.fast import Bf16Decoder
    from voicefleet.models import adapters as lora

    sovits = _sovits_copy(base_sovits)
    adapter = lora.Adapter.create(sovits, lora.AdapterSpec("sovits", targets=("decoder",)))
    return timeit(lambda: Bf16Decoder.from_fp32(lora.merge_(sovits, adapter).decoder))[0]


def build(mode: str, base_gpt, base_sovits, threads: int = 2, folder: Path | None = None):
    from voicefleet.inference.fast import optimize_for_cpu_inference

    if mode in ("fp32-lora", "fast-lora"):
        return adapter_voice(mode.split("-")[0], base_gpt, base_sovits)
    if mode in ("onnx", "onnx-int8"):
        onnx_mode = OnnxMode(base_gpt, base_sovits, int8=mode == "onnx-int8", threads=threads, folder=folder)
        return onnx_mode, _OnnxDecoder(onnx_mode)
    if mode == "fp32":
        generator = TokenGenerator(relayout_for_cpu_decoding_(copy.deepcopy(base_gpt)))
        sovits = _sovits_copy(base_sovits)
    elif mode == "fast":
        generator, sovits = optimize_for_cpu_inference(base_gpt, base_sovits)
    else:
        raise SystemExit(f"unknown mode {mode}")
    return generator, sovits


def timeit(fn, repeats=1):
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - t) / repeats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--modes", default="fp32,fast,onnx,onnx-int8",
                        help="comma-separated: fp32, fast, onnx, onnx-int8, fp32-lora, fast-lora")
    parser.add_argument("--versions", default="v2", help="comma-separated: v2, v2Pro, v2ProPlus")
    parser.add_argument("--size", choices=("full", "tiny"), default="full",
                        help="tiny: the test-size models (seconds, not representative speeds: fixed costs only)")
    parser.add_argument("--note", default="", help="Appended to the notes (e.g. the machine's load).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base_gpt = (gpt_v2() if args.size == "full" else gpt_tiny()).eval()
    rows, notes = [], []
    for version in args.versions.split(","):
        rows += measure(args, version, base_gpt, notes)
    report(f"Synthesis speed, {args.size} size ({args.versions}), {args.threads} CPU threads, "
           f"{args.seconds:.0f} s of audio",
           ["version", "mode", "GPT ms/token (b1)", f"SoVITS decode {args.seconds:.0f} s (s)", "sv embedding (s)",
            "first chunk (s)", "RTF batch 1", "RTF batch 8", "mel L1 vs fp32", "memory (MB)"], rows,
           notes="sv embedding = resample + fbank + ERes2NetV2 of the 6 s reference, once per v2Pro voice (fp32 in "
                 "every mode), included in the first chunk; first chunk = GPT + SoVITS for a 2 s first fragment; "
                 "batch 8 = the same audio as 8 fragments, GPT-decoded together. "
                 "mel L1 = mean |log-mel difference| of the decoded waveform vs the fp32 path (same tokens/noise). "
                 "memory = resident-set growth while the mode's models are built. " + " ".join(notes + [args.note]))


def measure(args, version: str, base_gpt, notes: list[str]) -> list[list[str]]:
    """The table rows of one model version, one per mode (and notes for the adapter modes)."""
    if version not in ("v2", "v2Pro", "v2ProPlus"):
        raise SystemExit(f"unknown version {version}")
    config = SOVITS_CONFIGS[args.size, version]()
    ref_wave = torch.randn(1, 6 * 32000) * 0.1
    sv, t_sv = None, 0.0
    if config.is_pro:
        verifier = (speaker_verifier() if args.size == "full" else speaker_verifier_tiny()).eval()
        config = dataclasses.replace(config, sv_embedding_dim=verifier.config.stats_dim)
        with torch.no_grad():
            t_sv, emb = timeit(lambda: verifier.feature_map_embedding(speaker_features(ref_wave)))
        sv = [emb]
        del verifier
    base_sovits = SoVITS(config).eval()
    with torch.no_grad():
        base_sovits.quantizer.codebook.embed.normal_()

    n_tokens = int(args.seconds * TOKENS_PER_S)
    prompt = torch.randint(0, 1024, (150,))
    phones = torch.randint(0, 732, (int(args.seconds * 10) + 20,))  # prompt text + target text
    bert = torch.zeros(1024, phones.numel())
    text = torch.randint(0, 732, (1, int(args.seconds * 10)))
    ref_spec = audio.linear_spectrogram(ref_wave)
    sampling = SamplingParams(top_k=15)
    rows, reference_mel = [], None
    work = tempfile.TemporaryDirectory(prefix="voicefleet-bench-onnx-")
    for mode in args.modes.split(","):
        if config.is_pro and mode.startswith("onnx"):
            rows.append([version, mode] + ["-"] * 8)  # the ONNX graphs are v2 only
            continue
        rss = _rss()
        folder = Path(work.name) / mode
        folder.mkdir()
        generator, sovits = build(mode, base_gpt, base_sovits, args.threads, folder)
        rss = getattr(generator, "rss_before", rss)
        memory_mb = (_rss() - rss) / 2**20

        def gpt_run(steps=n_tokens, g=generator):
            return g.generate(phones, bert, prompt, sampling=sampling, max_steps=steps,
                              generator=torch.Generator().manual_seed(0))

        t_gpt, out = timeit(gpt_run)
        ms_token = 1000 * t_gpt / n_tokens
        tokens = torch.randint(0, 1024, (1, 1, n_tokens), generator=torch.Generator().manual_seed(1))

        def decode(s=sovits, toks=tokens, txt=text):
            return s.decode(toks, txt, [ref_spec], noise_scale=0.5, generator=torch.Generator().manual_seed(2), sv=sv)

        t_dec, wave = timeit(decode)
        mel = audio.mel_spectrogram(wave[:, 0].float())
        if reference_mel is None:
            reference_mel, fidelity = mel, "reference"
        else:
            fidelity = f"{(mel - reference_mel).abs().mean():.4f}"
        # first chunk: a 2 s first fragment, GPT + decode
        first_tokens = 2 * TOKENS_PER_S
        t_first_gpt, _ = timeit(lambda: gpt_run(first_tokens))
        t_first_dec, _ = timeit(lambda: decode(toks=tokens[..., :first_tokens], txt=text[:, :20]))
        # batch 8: eight fragments of seconds/8 each, decoded together
        per = max(1, n_tokens // 8)
        ids = [phones[: 20 + int(args.seconds * 10 / 8)]] * 8
        berts = [torch.zeros(1024, ids[0].numel())] * 8
        gens = [torch.Generator().manual_seed(i) for i in range(8)]
        t_b8, _ = timeit(lambda: generator.generate_batch(ids, berts, prompt.expand(8, -1), sampling=sampling,
                                                          max_steps=per + 1, generator=gens))
        t_b8_dec, _ = timeit(lambda: [decode(toks=tokens[..., i * per:(i + 1) * per], txt=text[:, :12])
                                      for i in range(8)])
        audio_s = n_tokens * HOP_S
        rtf1 = (t_gpt + t_dec) / audio_s
        rtf8 = (t_b8 + t_b8_dec) / (8 * per * HOP_S)
        if mode.endswith("-lora") and not any(n.startswith(f"{version}: merging") for n in notes):
            notes.append(f"{version}: merging a decoder adapter into a bf16 decoder would cost "
                         f"{decoder_merge_seconds(base_sovits):.2f} s per request (the unmerged update is "
                         "inside the -lora rows' decode times).")
        rows.append([version, mode, f"{ms_token:.1f}", f"{t_dec:.2f}", f"{t_sv:.2f}",
                     f"{t_sv + t_first_gpt + t_first_dec:.2f}", f"{rtf1:.2f}", f"{rtf8:.2f}", fidelity,
                     f"{memory_mb:.0f}"])
        del generator, sovits
    return rows


if __name__ == "__main__":
    main()
