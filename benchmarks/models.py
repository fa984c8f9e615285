"""Parameter counts against the official ones, and CPU time of one full-size training step.

    .venv/bin/python benchmarks/models.py [--threads 2] [--repeats 2]

s2 step = SoVITS generator + discriminator, batch 4, 4 s utterances, segment 20480 samples
(official fine-tuning shapes): G forward, mel loss, D forward/backward/step, G
backward/step. s1 step = GPT teacher-forced forward/backward/step, batch 8.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import report  # noqa: E402

from voicefleet.models import audio, losses  # noqa: E402
from voicefleet.models.builders import sovits_v2  # noqa: E402
from voicefleet.models.builders_discriminator import discriminator_v2  # noqa: E402
from voicefleet.models.builders_gpt import gpt_v2  # noqa: E402
from voicefleet.models.modules.masks import slice_segments  # noqa: E402

# Official counts (compat file_formats.json `parameter_counts`), used when that folder is absent.
OFFICIAL = {"SoVITS generator (with enc_q)": 51_310_080, "discriminator": 46_747_132, "GPT": 77_606_402}


def official_counts() -> dict[str, int]:
    path = Path(os.environ.get("VOICEFLEET_COMPAT_DIR", Path(__file__).resolve().parents[2] / "shared" / "compat"))
    try:
        counts = json.loads((path / "file_formats.json").read_text())["parameter_counts"]
        return {"SoVITS generator (with enc_q)": counts["s2G_v2_parameters"],
                "discriminator": counts["s2D_v2_parameters"], "GPT": counts["s1_v2_parameters"]}
    except (OSError, KeyError, ValueError):
        return OFFICIAL


def s2_step(net_g, net_d, opt_g, opt_d, batch: int, frames: int) -> None:
    cfg = net_g.config
    hop, seg = cfg.audio.hop_length, cfg.segment_size
    wave = torch.randn(batch, frames * hop) * 0.1
    spec = audio.linear_spectrogram(wave)[..., :frames]
    lengths = torch.full((batch,), frames, dtype=torch.long)
    ssl = torch.randn(batch, cfg.ssl_dim, frames)
    text = torch.randint(0, 732, (batch, frames // 4))
    out = net_g(ssl, spec, lengths, text, torch.full((batch,), frames // 4, dtype=torch.long))
    y = slice_segments(wave.unsqueeze(1), out.slice_starts * hop, seg)
    y_mel = slice_segments(audio.spec_to_mel(spec), out.slice_starts, cfg.segment_frames)
    y_hat_mel = audio.mel_spectrogram(out.wave.squeeze(1))
    d = net_d(y, out.wave.detach())
    loss_d = losses.discriminator_loss(d.real_scores, d.fake_scores).total
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    d = net_d(y, out.wave)
    loss_g = (losses.generator_loss(d.fake_scores).total + losses.feature_loss(d.real_features, d.fake_features)
              + 45 * losses.mel_l1(y_mel, y_hat_mel)
              + losses.kl_loss(out.z_p, out.post_log_std, out.prior_mean, out.prior_log_std, out.mask))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()


def s1_step(gpt, opt, batch: int, n_text: int, n_audio: int) -> None:
    phonemes = torch.randint(0, 732, (batch, n_text))
    semantic = torch.randint(0, 1024, (batch, n_audio))
    bert = torch.randn(batch, 1024, n_text)
    out = gpt(phonemes, torch.full((batch,), n_text), semantic, torch.full((batch,), n_audio), bert)
    opt.zero_grad()
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(gpt.parameters(), 1.0)
    opt.step()


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    net_g, net_d, gpt = sovits_v2().train(), discriminator_v2().train(), gpt_v2().train()
    ours = {"SoVITS generator (with enc_q)": net_g, "discriminator": net_d, "GPT": gpt}
    official = official_counts()
    rows = []
    for name, model in ours.items():
        n = sum(p.numel() for p in model.parameters())
        rows.append([name, f"{n:,}", f"{official[name]:,}", "yes" if n == official[name] else "NO"])
    report("Model parameter counts (full v2 size)", ["model", "voicefleet", "official", "equal"], rows)

    trainable = [p for n, p in net_g.named_parameters() if not n.startswith(("ssl_proj.", "quantizer."))]
    opt_g = torch.optim.AdamW(trainable, 1e-4, betas=(0.8, 0.99), eps=1e-9)
    opt_d = torch.optim.AdamW(net_d.parameters(), 1e-4, betas=(0.8, 0.99), eps=1e-9)
    opt_1 = torch.optim.AdamW(gpt.parameters(), 1e-4)
    frames, batch_s2, batch_s1, n_text, n_audio = 200, 4, 8, 60, 200
    t2 = timed(lambda: s2_step(net_g, net_d, opt_g, opt_d, batch_s2, frames), args.repeats)
    t1 = timed(lambda: s1_step(gpt, opt_1, batch_s1, n_text, n_audio), args.repeats)
    report("Full-size training step on CPU (fp32)", ["stage", "batch", "shape", "seconds / step", "samples / s"], [
        ["s2 (SoVITS G + D)", batch_s2, f"{frames} frames (4 s), segment 20480", f"{t2:.2f}", f"{batch_s2 / t2:.2f}"],
        ["s1 (GPT)", batch_s1, f"{n_text} phonemes + {n_audio} tokens", f"{t1:.2f}", f"{batch_s1 / t1:.2f}"],
    ], notes=f"{args.threads} threads, mean of {args.repeats} steps after one warm-up step.")


if __name__ == "__main__":
    main()
