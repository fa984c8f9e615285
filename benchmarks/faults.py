"""Faults on record: each failure voicefleet promises to survive, injected on the embedded local Ray.

    .venv/bin/python benchmarks/faults.py                      # every scenario twice
    .venv/bin/python benchmarks/faults.py --runs 3 --only serve --only upload

Everything runs on this machine: a local Ray (2 CPUs), tiny random-initialised models, a generated
corpus, HTTP to 127.0.0.1 only; every wait is bounded (`--timeout` per run). Scenarios:

- prepare: a `prepare` driver killed (SIGKILL) once blocks are finished, then run again: clips
  recomputed, and whether the dataset equals an uninterrupted run's; the corpus holds the
  bad-file kinds of the test suite (each must be rejected with its reason, the input untouched);
- train-worker: one of two Ray Train workers (DDP) killed after a checkpoint; the run finishes;
- train-driver: the `voicefleet train` driver killed, the same command run again;
- train-checkpoint-write: the driver killed while a checkpoint is being written (the write left
  torn), the same command run again with `--voice`: weights load, the voice registered once;
- sweep: the `voicefleet tune` driver killed mid-sweep, run again with `--resume`;
- serve-kill: a synthesis replica killed under a closed-loop load, with 1 and with 2 replicas:
  failed requests, retried requests, p99 latency, replacement time;
- serve-damaged: one voice's weights damaged on disk: its answer, and the other voices' answers;
- upload: a full disk (ENOSPC, simulated by making the registry's copy fail half way) during
  `POST /v1/voices`: the status, and whether anything of the voice was left;
- fuzz: the HTTP schema fuzz of the test suite against the running app (cases, 5xx).

Prints one table, appends it to RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))  # the test suite's corpus and fuzzer are reused, not copied
from _report import report  # noqa: E402

SCENARIOS = ("prepare", "train-worker", "train-driver", "train-checkpoint-write", "sweep", "serve-kill",
             "serve-damaged", "upload", "fuzz")
HEADERS = ["scenario", "runs", "outcome", "work lost", "failed requests", "replacement s", "notes"]
logger = logging.getLogger("faults")


# --- helpers -------------------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _spawn(args: list[str], code: str | None = None, env: dict | None = None) -> subprocess.Popen:
    """A driver process of its own (its own session, so a SIGKILL takes exactly it and its children)."""
    cmd = [sys.executable, "-c", code or "from voicefleet.cli import main; main()", *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=env or _env(), cwd=str(ROOT))


def _kill_when(proc: subprocess.Popen, ready, timeout: float, poll: float = 0.05):
    """SIGKILL `proc`'s session as soon as `ready()` returns something truthy; returns that, or None."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            found = ready()
            if found:
                os.killpg(proc.pid, signal.SIGKILL)
                return found
            time.sleep(poll)
        return None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _cli(args: list[str]) -> tuple[int, str]:
    from typer.testing import CliRunner

    from voicefleet.cli import app

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.output


def _checkpoint_steps(run_dir: Path) -> tuple[int | None, int | None]:
    """(step of the checkpoint Ray Train has recorded, step of the newest checkpoint folder on disk)."""
    recorded = None
    try:
        latest = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text()).get("latest_checkpoint_result")
        steps = re.findall(r"checkpoint_step(\d{7})", json.dumps(latest)) if latest else []
        recorded = int(steps[0]) if steps else None
    except (OSError, ValueError):
        pass
    on_disk = [int(p.name[len("checkpoint_step"):][:7]) for p in run_dir.glob("checkpoint_step*")]
    return recorded, max(on_disk, default=None)


class Row:
    """One scenario's runs, summarised into a table row."""

    def __init__(self, name: str):
        self.name, self.outcomes, self.lost, self.failed, self.replaced, self.notes = name, [], [], [], [], []

    def cells(self) -> list[str]:
        ok = sum(o == "ok" for o in self.outcomes)
        outcome = f"{ok}/{len(self.outcomes)} ok" + ("" if ok == len(self.outcomes) else
                                                     f" ({'; '.join(o for o in self.outcomes if o != 'ok')})")
        rep = f"{max(self.replaced):.1f} (max)" if self.replaced else "-"
        return [self.name, str(len(self.outcomes)), outcome, ", ".join(self.lost) or "-",
                ", ".join(self.failed) or "-", rep, "; ".join(dict.fromkeys(self.notes)) or "-"]


# --- scenarios -----------------------------------------------------------------------------------------

def prepare_scenario(work: Path, pretrained: Path, address: str, runs: int, timeout: float) -> tuple[Row, Path]:
    """Also returns the finished dataset, which the training scenarios use."""
    import numpy as np
    import pyarrow.parquet as pq

    from tests.platform.conftest import make_corpus, tree_digest, write_wav
    from voicefleet.platform.data import PrepareConfig, prepare_dataset, read_dataset, read_rejects
    from voicefleet.platform.data.synthetic import voice_like

    row = Row("prepare: driver killed mid-dataset, run again")
    corpus = make_corpus(work / "corpus", n_good=12)
    for i in range(2):  # clips long enough to be a voice's reference (3-10 s)
        write_wav(corpus.root / "wavs" / f"alice_long{i}.wav", voice_like(4.5, 32000, seed=700 + i))
        corpus.add(f"wavs/alice_long{i}.wav", "alice", "zh", "我们一起去公园散步吧。", None)
    corpus.write_list()
    np.random.seed(0)
    digest = tree_digest(corpus.root)
    config = PrepareConfig(cpu_batch_size=2)
    reference = work / "dataset"
    t = time.monotonic()
    prepare_dataset(corpus.list_path, pretrained, reference, config=config)
    uninterrupted_s = time.monotonic() - t
    full = json.loads((reference / "manifest.json").read_text())["counts"]["processed"]
    rejects = read_rejects(reference).to_pylist()
    expected_bad = {c: r for c, r in corpus.expected.items() if r is not None}
    wrong = [r["clip_id"] for r in rejects if r["clip_id"] in expected_bad and r["reason"] != expected_bad[r["clip_id"]]]
    row.notes.append(f"bad-file corpus: {len(expected_bad)} bad files + 1 duplicate row, {len(rejects)} rejected "
                     f"with a reason, {len(wrong)} with the wrong reason")
    code = ("import sys; from voicefleet.platform.data import PrepareConfig, prepare_dataset; "
            "prepare_dataset(sys.argv[1], sys.argv[2], sys.argv[3], config=PrepareConfig(cpu_batch_size=2))")
    for run in range(runs):
        out = work / f"prepare-run{run}"
        journal = out.parent / f".{out.name}.journal"
        proc = _spawn([str(corpus.list_path), str(pretrained), str(out)], code=code,
                      env={**_env(), "RAY_ADDRESS": address})
        killed = _kill_when(proc, lambda: len(list(journal.glob("rejects-*.parquet"))) >= 2, timeout)
        if not killed:
            row.outcomes.append("not killed: the run ended first")
            continue
        done = sum(pq.read_metadata(p).num_rows for p in journal.glob("rejects-*.parquet")) + \
            sum(pq.read_metadata(p).num_rows for p in journal.glob("kept-*.parquet"))
        result = prepare_dataset(corpus.list_path, pretrained, out, config=config)
        same = read_dataset(out).equals(read_dataset(reference)) and read_rejects(out).equals(read_rejects(reference))
        untouched = tree_digest(corpus.root) == digest
        row.outcomes.append("ok" if same and untouched and result.processed == full - done and not wrong
                            else f"identical {same}, input untouched {untouched}, recomputed {result.processed}")
        row.lost.append(f"{result.processed} of {full} clips computed again ({done} kept from the killed run)")
    row.notes.append(f"dataset equal to an uninterrupted run ({uninterrupted_s:.0f} s); input files untouched")
    return row, reference


def _train_args(dataset: Path, pretrained: Path, storage: Path, name: str, workers: int, every: int,
                steps: int, extra: list[str] = ()) -> list[str]:
    return ["train", "sovits", str(dataset), "--pretrained", str(pretrained), "--run-name", name, "--storage",
            str(storage), "--workers", str(workers), "--batch-size", "2", "--max-steps", str(steps), "--eval-every",
            str(every), "--checkpoint-every", str(every), *extra]


def train_worker_scenario(work: Path, dataset: Path, pretrained: Path, runs: int, timeout: float) -> Row:
    from voicefleet.models.checkpoint.sovits_io import load_sovits
    from voicefleet.platform.training.api import train_stage
    from voicefleet.platform.training.config import TrainConfig
    from voicefleet.platform.training.worker import PID_DIR_ENV

    row, every, steps = Row("train: 1 of 2 DDP workers killed (SIGKILL)"), 3, 15
    for run in range(runs):
        pid_dir = work / f"worker-pids{run}"
        pid_dir.mkdir()
        os.environ[PID_DIR_ENV] = str(pid_dir)
        cfg = TrainConfig(stage="sovits", run_name=f"worker{run}", storage_path=str(work / "runs"), num_workers=2,
                          batch_size=2, max_steps=steps, eval_every=every, checkpoint_every=every, max_failures=2)
        run_dir, killed = work / "runs" / cfg.run_name, {}

        def killer():
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                recorded, newest = _checkpoint_steps(run_dir)
                if recorded is not None and (pid_dir / "rank1.pid").exists():
                    os.kill(int((pid_dir / "rank1.pid").read_text()), signal.SIGKILL)
                    killed["at"] = newest
                    return
                time.sleep(0.1)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            result = train_stage(cfg, dataset, pretrained)
        except Exception as e:  # noqa: BLE001 - the table says what happened
            row.outcomes.append(f"failed: {' '.join(str(e).split())[:120]}")
            continue
        finally:
            thread.join(timeout=5)
            os.environ.pop(PID_DIR_ENV, None)
        if "at" not in killed:
            row.outcomes.append("not killed")
            continue
        resumed = result.resumed_at_steps[0] if result.resumed_at_steps else 0
        ok = result.steps == steps and load_sovits(result.exported).model is not None and resumed > 0
        row.outcomes.append("ok" if ok else f"steps {result.steps}, resumed at {resumed}")
        row.lost.append(f"{killed['at'] - resumed} steps (checkpoint every {every})")
    row.notes.append("group restarted from the last recorded checkpoint; final weights load")
    return row


def train_driver_scenario(work: Path, dataset: Path, pretrained: Path, address: str, runs: int, timeout: float,
                          during_write: bool) -> Row:
    from voicefleet.models.checkpoint.sovits_io import load_sovits
    from voicefleet.platform.voices import registry_for

    title = "train: driver killed while writing a checkpoint (torn), same command again" if during_write else \
        "train: driver killed (SIGKILL), same command again"
    row, every, steps = Row(title), 2, 12
    for run in range(runs):
        storage, name, voice = work / "runs", f"{'torn' if during_write else 'driver'}{run}", f"faults-{run}"
        extra = ["--voice", voice] if during_write else []
        args = _train_args(dataset, pretrained, storage, name, 1, every, steps, extra)
        run_dir = storage / name

        def ready():
            recorded, newest = _checkpoint_steps(run_dir)
            if recorded is None or newest is None:
                return None
            if during_write:  # a newer checkpoint on disk than the recorded one: it is being written
                return (recorded, newest) if newest > recorded else None
            return (recorded, newest) if recorded >= every else None

        killed = _kill_when(_spawn(args + ["--address", address]), ready, timeout, poll=0.02)
        if not killed:
            row.outcomes.append("not killed: the run ended first")
            continue
        recorded, newest = killed
        torn = run_dir / f"checkpoint_step{newest:07d}" / "state.pt"
        if during_write and torn.exists():
            torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
        code, output = _cli(args)
        if code != 0:
            row.outcomes.append(f"re-run failed: {output.strip().splitlines()[-1][:120]}")
            continue
        report = json.loads((run_dir / "voicefleet" / "report.json").read_text())
        resumed = report["resumed_at_steps"][0] if report["resumed_at_steps"] else 0
        loads = load_sovits(report["exported"]).model is not None
        ok = report["steps"] == steps and resumed >= recorded and loads
        if during_write:
            registry = registry_for(str(storage))
            record = registry.get(voice)
            ok = ok and record.version == 1 and load_sovits(registry.local_files(voice)["sovits"]).model is not None
        row.outcomes.append("ok" if ok else f"steps {report['steps']}, resumed at {resumed}, loads {loads}")
        row.lost.append(f"{newest - resumed} steps (checkpoint every {every})")
    row.notes.append("final weights load" + ("; voice registered once, its weights load" if during_write else ""))
    return row


def sweep_scenario(work: Path, dataset: Path, pretrained: Path, address: str, runs: int, timeout: float) -> Row:
    from voicefleet.tuning.sweep import SweepConfig, run_sweep
    from voicefleet.tuning.space import SearchSpace

    row = Row("sweep: Tune driver killed mid-sweep, --resume")
    space = work / "space.yaml"
    space.write_text("sovits_lr: {low: 1.0e-6, high: 1.0e-3, log: true}\nwarmup_fraction: {low: 0.0, high: 0.3}\n"
                     "min_warmup_steps: 0\n")
    for run in range(runs):
        storage, sweep_id = work / "sweeps", f"faults-sweep{run}"
        args = ["tune", str(dataset), "--pretrained", str(pretrained), "--voice", f"swept-{run}", "--sweep-id",
                sweep_id, "--trials", "3", "--rounds", "2", "--steps-per-round", "2", "--batch-size", "2",
                "--concurrent", "1", "--space", str(space), "--storage", str(storage), "--address", address]
        sweep_dir = storage / "sweeps" / sweep_id

        def ready():
            states = sorted(sweep_dir.glob("experiment_state-*.json"))
            try:
                data = json.loads(states[-1].read_text()) if states else {}
            except ValueError:
                return None
            status = []
            for entry in data.get("trial_data", []):
                meta = json.loads(entry[1]) if isinstance(entry[1], str) else entry[1]
                trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
                status.append(meta.get("status") or trial.get("status"))
            return "TERMINATED" in status and "RUNNING" in status

        if not _kill_when(_spawn(args), ready, timeout, poll=0.5):
            row.outcomes.append("not killed: the sweep ended first")
            continue
        config = SweepConfig(voice=f"swept-{run}", sweep_id=sweep_id, storage_path=str(storage), trials=3, rounds=2,
                             steps_per_round=2, batch_size=2, max_concurrent=1, space=SearchSpace.from_yaml(space))
        result = run_sweep(config, dataset, pretrained, resume=True)
        ids = [t["trial_id"] for t in result.trials]
        complete = (sweep_dir / "report.md").is_file()
        errors = sum(t["status"] == "error" for t in result.trials)
        ok = len(ids) == len(set(ids)) == 3 and complete and not errors
        row.outcomes.append("ok" if ok else f"{len(ids)} trials ({len(set(ids))} distinct), {errors} errors")
        row.lost.append(f"{3 - len(set(ids))} trials lost, {len(ids) - len(set(ids))} run twice")
    row.notes.append("report complete, best voice registered")
    return row


def _start_app(work: Path, pretrained: Path, replicas: int) -> tuple[str, list[str], object]:
    import numpy as np
    import soundfile as sf
    from ray import serve

    from voicefleet.models.pretrained import find_pretrained
    from voicefleet.platform.voices import registry_for
    from voicefleet.serve.app import build_app, wait_until_ready
    from voicefleet.serve.settings import ServeSettings
    from serve_load import _free_port

    storage, paths = work / f"serve{replicas}", find_pretrained(pretrained)
    registry, ids = registry_for(str(storage)), []
    t = np.arange(4 * 32000) / 32000
    for i in range(3):
        phase = 2 * np.pi * np.cumsum(120 + 20 * i + 25 * np.sin(2 * np.pi * 0.6 * t)) / 32000
        ref = work / f"ref{i}.wav"
        sf.write(ref, (0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase)).astype(np.float32), 32000)
        registry.register(f"bench-{i}", gpt=paths.gpt, sovits=paths.sovits_g, reference=ref, prompt_text="你好。",
                          prompt_lang="zh")
        ids.append(f"bench-{i}")
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = ServeSettings(storage=str(storage), pretrained=str(pretrained), min_replicas=replicas,
                             max_replicas=replicas, num_cpus=2 / replicas, synthesis_threads=1,
                             max_voices_per_replica=3, max_ongoing_requests=8)
    serve.run(build_app(settings), name="voicefleet", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, timeout_s=180)
    return url, ids, settings


def _replicas() -> set[str]:
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if "VoiceSynthesizer" in a["name"] and "REPLICA" in a["name"].upper()}


def serve_scenarios(work: Path, pretrained: Path, runs: int, timeout: float, only: set[str]) -> list[Row]:
    import httpx
    from ray import serve

    from serve_load import run_load

    rows = []
    for replicas in (1, 2) if "serve-kill" in only else (1,):
        url, voices, settings = _start_app(work, pretrained, replicas)
        try:
            if "serve-kill" in only:
                row = Row(f"serve: a replica killed under load ({replicas} replica{'s' if replicas > 1 else ''})")
                for _ in range(runs):
                    before, seen = _replicas(), {}

                    def watch():  # when a replica went, and when a new one took its place
                        deadline = time.monotonic() + timeout
                        while time.monotonic() < deadline and "new" not in seen:
                            now = _replicas()
                            if "gone" not in seen and before - now:
                                seen["gone"] = time.monotonic()
                            if "gone" in seen and now - before and len(now) >= replicas:
                                seen["new"] = time.monotonic()
                            time.sleep(0.1)

                    watcher = threading.Thread(target=watch, daemon=True)
                    watcher.start()
                    m = asyncio.run(run_load(url, voices, clients=4, requests=40, duration_s=timeout, stream=False,
                                             max_tokens=20, kill_after_s=3.0))
                    watcher.join(timeout=timeout)
                    ok = m["failed"] == 0 and "new" in seen
                    row.outcomes.append("ok" if ok else f"{m['failed']} failed, replaced {'new' in seen}")
                    row.failed.append(f"{m['failed']}/{m['requests']} (p99 {m['p99']:.1f} s)")
                    if "new" in seen:
                        row.replaced.append(seen["new"] - seen["gone"])
                row.notes.append("4 clients x 3 voices, 40 requests; a lost request is sent again by the ingress")
                rows.append(row)
            if "serve-damaged" in only and replicas == 1:
                rows.append(_damaged_voice(url, voices, settings, runs))
            if "fuzz" in only and replicas == 1:
                rows.append(_fuzz(url))
        finally:
            serve.shutdown()
    return rows


def _damaged_voice(url: str, voices: list[str], settings, runs: int) -> Row:
    import httpx

    from voicefleet.platform.registry import VoiceRegistry

    row = Row("serve: a voice's weights damaged on disk")
    registry = VoiceRegistry(settings.registry_root)
    for run in range(runs):
        voice = f"damaged-{run}"
        registry.register(voice, **registry.local_files(voices[0]), prompt_text="你好。", prompt_lang="zh")
        weights = registry.local_files(voice)["sovits"]
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
        body = {"text": "你好。", "lang": "zh", "max_tokens": 10, "seed": 0}
        bad = httpx.post(f"{url}/v1/tts", json={**body, "voice": voice}, timeout=120)
        others = [httpx.post(f"{url}/v1/tts", json={**body, "voice": v}, timeout=120).status_code for v in voices]
        error = bad.json().get("error", {}) if bad.headers.get("content-type", "").startswith("application/json") else {}
        ok = bad.status_code == 500 and error.get("type") == "voice_damaged" and all(s == 200 for s in others)
        row.outcomes.append("ok" if ok else f"damaged voice {bad.status_code} {error.get('type')}, others {others}")
        row.failed.append(f"{sum(s != 200 for s in others)}/{len(others)} of the other voices")
        message = str(error.get("message")).replace(repr(voice), "'<voice>'")
        row.notes.append(f"the damaged voice answers {bad.status_code} {error.get('type')}: \"{message}\"")
    return row


def _fuzz(url: str) -> Row:
    from tests.serve import test_fuzz_auth

    row = Row("input: HTTP schema fuzz")
    try:
        test_fuzz_auth.test_openapi_fuzz_no_5xx(url)
        row.outcomes.append("ok")
        row.failed.append(f"0 5xx of {test_fuzz_auth.FUZZ_REQUESTS} cases")
    except AssertionError as e:
        row.outcomes.append("5xx answers")
        row.failed.append(" ".join(str(e).split())[:200])
    row.notes.append("every 4xx a JSON error with message and type")
    return row


def upload_scenario(work: Path, pretrained: Path, runs: int) -> Row:
    import errno
    import io
    from unittest import mock

    import numpy as np
    import soundfile as sf
    from fastapi.testclient import TestClient

    from voicefleet.serve.asgi import create_app
    from voicefleet.serve.settings import ServeSettings

    row = Row("serve: storage full during a voice upload")
    storage = work / "upload"
    settings = ServeSettings(storage=str(storage), pretrained=str(pretrained))
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 180 * np.arange(4 * 32000) / 32000)).astype(np.float32), 32000,
             format="WAV")
    real_copy = __import__("pyarrow.fs", fromlist=["copy_files"]).copy_files

    def copy_until_full(source, destination, **kw):
        if destination.endswith("reference.wav"):
            Path(destination).write_bytes(b"RIFF")  # half a file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(source, destination, **kw)

    with TestClient(create_app(settings)) as client:
        for run in range(runs):
            voice = f"upload-{run}"
            with mock.patch("voicefleet.platform.registry.pafs.copy_files", copy_until_full):
                r = client.post("/v1/voices", data={"voice_id": voice, "prompt_text": "你好。", "prompt_lang": "zh"},
                                files={"reference": ("r.wav", buffer.getvalue(), "audio/wav")})
            left = (storage / "registry" / "voices" / voice).exists()
            listed = voice in [v["voice_id"] for v in client.get("/v1/voices").json()["voices"]]
            error = r.json().get("error", {})
            ok = r.status_code == 507 and not left and not listed
            row.outcomes.append("ok" if ok else f"{r.status_code}, files left {left}, listed {listed}")
            row.notes.append(f"answers {r.status_code} {error.get('type')}; nothing of the voice left on disk")
    row.notes.append("ENOSPC simulated in the registry's writer")
    return row


# --- main ----------------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2, help="runs of each prepare, training and sweep scenario")
    p.add_argument("--serve-runs", type=int, default=2, help="runs of each serve and upload scenario")
    p.add_argument("--only", action="append", choices=SCENARIOS, help="run only these scenarios (repeatable)")
    p.add_argument("--timeout", type=float, default=300, help="seconds each injected fault may wait for its moment")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    only = set(args.only or SCENARIOS)
    from rich.progress import Progress

    from voicefleet.models.pretrained import init_pretrained
    from voicefleet.platform.cluster import ensure_ray

    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, Progress() as progress:
        work = Path(tmp)
        task = progress.add_task("faults", total=len(only))
        pretrained = init_pretrained(work / "pretrained", "tiny", seed=0).root
        ray = __import__("ray")
        ensure_ray(num_cpus=2, object_store_bytes=300 * 1024 * 1024)
        address = ray.get_runtime_context().gcs_address
        dataset = None
        if only & {"prepare", "train-worker", "train-driver", "train-checkpoint-write", "sweep"}:
            progress.update(task, description="prepare")
            row, dataset = prepare_scenario(work, pretrained, address, args.runs, args.timeout)
            if "prepare" in only:
                rows.append(row)
                progress.advance(task)
        steps = [("train-worker", lambda: train_worker_scenario(work, dataset, pretrained, args.runs, args.timeout)),
                 ("train-driver", lambda: train_driver_scenario(work, dataset, pretrained, address, args.runs,
                                                                args.timeout, during_write=False)),
                 ("train-checkpoint-write", lambda: train_driver_scenario(work, dataset, pretrained, address,
                                                                          args.runs, args.timeout, during_write=True)),
                 ("sweep", lambda: sweep_scenario(work, dataset, pretrained, address, args.runs, args.timeout))]
        for name, run in steps:
            if name in only:
                progress.update(task, description=name)
                rows.append(run())
                progress.advance(task)
        serve_part = only & {"serve-kill", "serve-damaged", "fuzz"}
        if serve_part:
            progress.update(task, description="serve")
            rows.extend(serve_scenarios(work, pretrained, args.serve_runs, args.timeout, only))
            progress.advance(task, len(serve_part))
        if "upload" in only:
            rows.append(upload_scenario(work, pretrained, args.serve_runs))
            progress.advance(task)
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    wall = time.monotonic() - started
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    report("Faults on record (tiny models, embedded local Ray, 2 CPUs)", HEADERS, [r.cells() for r in rows],
           notes=f"`benchmarks/faults.py --runs {args.runs} --serve-runs {args.serve_runs}`, whole run {wall / 60:.1f} "
                 "min. Work lost: steps between the newest checkpoint on disk at the kill and the step the run "
                 "resumed at; clips computed again. Replacement: from a replica's disappearance to a new one "
                 f"running. Load average at the end (1 / 5 / 15 min): {load} on {os.cpu_count()} cores.")


if __name__ == "__main__":
    main()
