"""Run state in Ray Train checkpoints: every rank reports, rank 0 writes the checkpoint.

Ray Train's pattern, written once for the training run (`worker`) and the sweep trials
(`voicefleet.tuning.trial`):

* `report(metrics, checkpoint_state=..., dir_name=...)`: every rank calls `ray.train.report` with
  the same metrics (the calls must stay in step); rank 0 also saves the run state to ``state.pt``
  in a temporary folder and hands it over as the checkpoint, which Ray Train copies into the
  run's storage before `report` returns. The state holds every rank's RNG state, so a restarted
  worker group continues each worker's own random stream.
* `resume(device)`: the state of the checkpoint Ray Train restored the run from (after a worker
  failure, or a re-run under the same run name), with this rank's RNG state put back; None on a
  fresh start.

The state is our own pickle (optimizer and RNG states need the full unpickler), read only from
checkpoints a run of ours wrote.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

STATE_FILE = "state.pt"


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def gather_rng_states(world: int) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order. A collective: every rank must call it."""
    mine = rng_state()
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
        return gathered
    return [mine]


def load_state(checkpoint, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The run state saved in a `ray.train.Checkpoint` by `report`."""
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location=map_location, weights_only=False)


def report(metrics: Mapping[str, Any], *, checkpoint_state: Callable[[], dict[str, Any]] | None = None,
           dir_name: str | None = None, validation: bool = False) -> None:
    """`ray.train.report(metrics)` on every rank; with `checkpoint_state`, also a checkpoint.

    `checkpoint_state` builds the run state; only rank 0 calls it (the other ranks skip the
    copy), and its ``"rng"`` entry is set to every rank's RNG state. Either every rank passes it
    or none does: gathering the RNG states is a collective. `dir_name` names the checkpoint's
    folder in the run's storage. `validation` asks Ray Train to run the trainer's validation
    function (`voicefleet.platform.training.quality`) on the checkpoint, as a separate task.
    """
    import ray.train

    if checkpoint_state is None:
        ray.train.report(dict(metrics))
        return
    ctx = ray.train.get_context()
    rngs = gather_rng_states(ctx.get_world_size())
    if ctx.get_world_rank() != 0:
        ray.train.report(dict(metrics))
        return
    state = dict(checkpoint_state(), rng=rngs)
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / STATE_FILE)
        extra = {"validation": True} if validation else {}
        ray.train.report(dict(metrics), checkpoint=ray.train.Checkpoint.from_directory(folder),
                         checkpoint_dir_name=dir_name, **extra)


def resume(map_location: str | torch.device) -> dict[str, Any] | None:
    """The restored checkpoint's run state with this rank's RNG state set, or None on a fresh start.

    A run resumed on more workers than it saved gives the extra ranks the last saved stream.
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return None
    state = load_state(checkpoint, map_location)
    rank = ray.train.get_context().get_world_rank()
    set_rng_state(state["rng"][min(rank, len(state["rng"]) - 1)])
    return state
