"""Memory of one synthesis replica per engine: the torch replica against the ONNX one (`engine: onnx`).

    .venv/bin/python benchmarks/serve_memory.py                                  # tiny random models
    .venv/bin/python benchmarks/serve_memory.py --pretrained pretrained_models   # the official weights

Each replica is the deployment's own class built in a fresh process (no Serve, no Ray), as a
replica process builds it: it loads one registered voice and answers one request, then the
process reports its resident memory (VmRSS) and peak (VmHWM) from /proc, and whether torch was
imported. The voice is registered in a temporary registry and exported into it with
`voicefleet export onnx` first. With one voice, the figures are mostly what each engine's
libraries and shared models cost a replica; every further voice adds its own GPT and SoVITS (the
ONNX replica shares HuBERT and BERT between the voices of one pretrained folder, as the torch one
does). Prints one table, appends it to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import report  # noqa: E402

VOICE = "memory-probe"
# run in a fresh process per engine; prints one JSON line
REPLICA = """
import json, sys
from voicefleet.inference.params import SynthesisParams
from voicefleet.serve.replica import synthesize_one
from voicefleet.serve.schemas import SynthesisJob
from voicefleet.serve.settings import ServeSettings

settings = ServeSettings.model_validate_json(sys.argv[1])
if settings.engine == "onnx":
    from voicefleet.serve.onnx_synthesizer import OnnxVoiceSynthesizer as Deployment
else:
    from voicefleet.serve.synthesizer import VoiceSynthesizer as Deployment
replica = Deployment.func_or_class(settings)
voice = replica._load_voice(sys.argv[2] + "@1")
job = SynthesisJob(text="今天天气很好，我们一起去公园散步吧。", lang="zh", fmt="wav",
                   params=SynthesisParams(seed=0, max_tokens=int(sys.argv[3])))
audio = synthesize_one(*replica._engine(voice), job)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith(("VmRSS", "VmHWM")))
print(json.dumps({"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "peak_mb": int(status["VmHWM"].split()[0]) / 1024,
                  "torch": "torch" in sys.modules, "audio_bytes": len(audio)}))
replica.pool.shutdown()
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def measure(settings, max_tokens: int) -> dict:
    done = subprocess.run([sys.executable, "-c", REPLICA, settings.model_dump_json(), VOICE, str(max_tokens)],
                          env=_env(), capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the {settings.engine} replica failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="An official pretrained folder (default: a tiny random one, written here).")
    parser.add_argument("--max-tokens", type=int, default=30, help="Semantic tokens per fragment of the request.")
    parser.add_argument("--threads", type=int, default=2, help="Intra-op threads of each replica (torch_threads).")
    args = parser.parse_args()

    from voicefleet.cli.app import app
    from voicefleet.models.pretrained import find_pretrained, init_pretrained
    from voicefleet.platform.voices import registry_for
    from voicefleet.serve.settings import ServeSettings

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = find_pretrained(args.pretrained) if args.pretrained else init_pretrained(tmp / "tiny", "tiny", seed=0)
        size = "official" if args.pretrained else "tiny"
        sys.path.insert(0, str(ROOT))
        from tests.serve.conftest import write_reference  # the test suite's voice-like clip

        reference = write_reference(tmp / "reference.wav", 140.0)
        registry_for(str(tmp / "runs")).register(VOICE, gpt=paths.gpt, sovits=paths.sovits_g, reference=reference,
                                                 prompt_text="你好。", prompt_lang="zh")
        try:
            app(["export", "onnx", VOICE, "--storage", str(tmp / "runs"), "--pretrained", str(paths.root)])
        except SystemExit as e:  # typer ends with SystemExit; 0 is success
            if e.code:
                raise
        rows = []
        for engine in ("torch", "onnx"):
            settings = ServeSettings(storage=str(tmp / "runs"), pretrained=str(paths.root), engine=engine,
                                     synthesis_threads=1, torch_threads=args.threads)
            got = measure(settings, args.max_tokens)
            rows.append([engine, f"{got['rss_mb']:.0f}", f"{got['peak_mb']:.0f}", "yes" if got["torch"] else "no",
                         got["audio_bytes"]])
    report(f"Synthesis replica memory, {size} models, one voice loaded and one request answered",
           ["engine", "RSS MB", "peak RSS MB", "torch imported", "audio bytes"], rows,
           notes=f"Each replica class built in a fresh process (no Serve, no Ray), {args.threads} intra-op threads, "
                 f"max_tokens {args.max_tokens}.")


if __name__ == "__main__":
    main()
