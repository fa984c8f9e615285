"""Sweeps on a real local Ray: Optuna + ASHA over Ray Train trials, failures, promotion, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.platform.training.synthetic import synthesize_registered, write_voice_dataset
from voicefleet.tuning.space import Range, SearchSpace
from voicefleet.tuning.sweep import SweepConfig, SweepError, run_sweep

pytestmark = pytest.mark.slow

GOOD = {"sovits_lr": 3e-4, "gpt_lr_ratio": 0.8, "warmup_fraction": 0.1}
HOPELESS = {"sovits_lr": 1e-6, "gpt_lr_ratio": 0.2, "warmup_fraction": 0.3}  # barely moves from the pretrained
INVALID = {"sovits_lr": 3e-4, "gpt_lr_ratio": 20.0, "warmup_fraction": 0.1}  # the run config refuses ratio > 10


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_voice_dataset(tmp_path_factory.mktemp("voice"), n_train=6, n_val=2)


def _space() -> SearchSpace:
    return SearchSpace(sovits_lr=Range(low=1e-6, high=1e-3, log=True), gpt_lr_ratio=Range(low=0.2, high=1.0),
                       warmup_fraction=Range(low=0.0, high=0.3), min_warmup_steps=0)


def _config(storage: Path, sweep_id: str, **kw) -> SweepConfig:
    base = dict(voice="alice", sweep_id=sweep_id, storage_path=str(storage), rounds=3, steps_per_round=3,
                batch_size=2, max_concurrent=2, space=_space(), objective_clips=2, max_tokens=40, max_failures=0)
    base.update(kw)
    return SweepConfig(**base)


def test_sweep_stops_weak_trials_records_failures_and_promotes_the_best(ray_session, dataset, tiny_pretrained,
                                                                        tmp_path):
    from voicefleet.platform.voices import registry_for

    storage = tmp_path / "runs"
    config = _config(storage, "sweep-a", trials=5)
    # trials 1 and 2 (official values, GOOD) run together and reach round 1 first; the hopeless
    # third trial then trails both at round 1 and ASHA stops it; the fourth cannot even start
    result = run_sweep(config, dataset, tiny_pretrained.root, points_to_evaluate=[GOOD, HOPELESS, INVALID])

    trials = {t["index"]: t for t in result.trials}
    assert sorted(trials) == [1, 2, 3, 4, 5]
    assert trials[1]["params"] == pytest.approx({"sovits_lr": 1e-4, "gpt_lr_ratio": 0.4, "warmup_fraction": 0.08})
    assert trials[3]["params"] == pytest.approx(HOPELESS)
    assert trials[3]["status"] == "stopped early" and trials[3]["rounds"] < config.rounds
    assert trials[4]["status"] == "error" and "gpt_lr_ratio" in trials[4]["error"], trials[4]
    finished = [t for t in result.trials if t["status"] == "finished"]
    assert finished and all(t["rounds"] == config.rounds and len(t["objectives"]) == config.rounds for t in finished)
    best = min((t for t in result.trials if t["best_objective"] is not None), key=lambda t: t["best_objective"])
    assert result.best_trial == best["trial_id"] and result.best_objective == best["best_objective"]
    assert result.best_objective < trials[3]["best_objective"]

    sweep_dir = Path(result.sweep_dir)
    for name in ("report.md", "trials.csv", "importances.json", "objective_per_trial.png", "ratio_vs_warmup.png"):
        assert (sweep_dir / name).stat().st_size > 0, name
    report = (sweep_dir / "report.md").read_text()
    assert result.best_trial in report and "stopped early" in report and "error" in report
    assert set(json.loads((sweep_dir / "importances.json").read_text())) <= set(_space().dimensions())

    registry = registry_for(str(storage))
    record = registry.get("alice")
    assert record.lineage["sweep"] == "sweep-a" and record.lineage["trial"] == result.best_trial
    assert record.metrics["val_objective"] == pytest.approx(result.best_objective)
    assert len(synthesize_registered(registry, "alice", tiny_pretrained)) > 0

    # finished sweeps are not started again under the same id
    with pytest.raises(SweepError, match="already exists"):
        run_sweep(config, dataset, tiny_pretrained.root)
    assert run_sweep(config, dataset, tiny_pretrained.root, resume=True).best_trial == result.best_trial


def _trial_states(sweep_dir: Path) -> dict[str, str]:
    states = sorted(sweep_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except json.JSONDecodeError:  # being rewritten
        return {}
    out = {}
    for entry in data.get("trial_data", []):
        meta = json.loads(entry[1]) if isinstance(entry[1], str) else entry[1]
        trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
        out[trial.get("trial_id", "?")] = meta.get("status") or trial.get("status", "?")
    return out


def test_killed_driver_resumes_without_losing_or_repeating_trials(ray_session, dataset, tiny_pretrained, tmp_path):
    storage = tmp_path / "runs"
    config = _config(storage, "sweep-r", trials=3, rounds=2, steps_per_round=2)
    address = ray_session.get_runtime_context().gcs_address
    space_file = tmp_path / "space.yaml"
    space_file.write_text("sovits_lr: {low: 1.0e-6, high: 1.0e-3, log: true}\nwarmup_fraction: {low: 0.0, high: 0.3}\n"
                          "min_warmup_steps: 0\n")
    args = ["tune", str(dataset), "--pretrained", str(tiny_pretrained.root), "--voice", "alice", "--sweep-id",
            "sweep-r", "--trials", "3", "--rounds", "2", "--steps-per-round", "2", "--batch-size", "2",
            "--concurrent", "1", "--space", str(space_file), "--storage", str(storage), "--address", address]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-c", "from voicefleet.cli import main; main()", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    sweep_dir = storage / "sweeps" / "sweep-r"
    deadline = time.time() + 300
    finished: set[str] = set()
    while time.time() < deadline and proc.poll() is None:
        states = _trial_states(sweep_dir)
        finished = {t for t, s in states.items() if s == "TERMINATED"}
        if finished and any(s == "RUNNING" for s in states.values()):
            break
        time.sleep(1)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    assert finished, "no trial finished before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies without any chance to clean up
    proc.wait()
    assert not (sweep_dir / "sweep.json").exists()

    resumed = run_sweep(config.model_copy(update={"space": SearchSpace.from_yaml(space_file),
                                                  "max_concurrent": 1}),
                        dataset, tiny_pretrained.root, resume=True)
    ids = [t["trial_id"] for t in resumed.trials]
    assert len(ids) == len(set(ids)) == 3  # every trial once: none lost, none repeated
    assert finished <= set(ids)
    by_id = {t["trial_id"]: t for t in resumed.trials}
    for trial_id in finished:
        assert by_id[trial_id]["status"] in ("finished", "stopped early")
        # a finished trial is kept as it was: its run has exactly one checkpoint per round, no re-training
        run_dir = storage / "sweeps" / "sweep-r" / "train" / f"sweep-r-{trial_id}"
        assert len(list(run_dir.glob("checkpoint_round*"))) <= config.rounds
    assert all(t["status"] != "error" for t in resumed.trials)
    assert (sweep_dir / "sweep.json").exists()
