"""DDP over nccl on two GPUs: one GPT step per rank on different batches; DistributedDataParallel
must leave every rank with the same (averaged) gradients, hence the same weights after the step.

The ranks are processes started with torch.multiprocessing (no Ray): the same wrapping as Ray
Train's `prepare_model`, which puts a `DistributedDataParallel` around the model on each rank.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.gpu.common import make_examples, without_dropout
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.platform.training.batches import collate_gpt
from voicefleet.platform.training.stages import GPTStage, OptimConfig

pytestmark = pytest.mark.gpu
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flat_grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])


def _flat_weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _gathered(tensor: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor)
    return out


def ddp_worker(rank: int, port: int, backend: str) -> None:
    """One rank: same initial model everywhere, a batch of its own, one backward and one step."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=WORLD)
    try:
        device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.manual_seed(0)  # the same weights on every rank (DDP also broadcasts rank 0's)
        model = without_dropout(gpt_tiny()).to(device)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if device.type == "cuda" else None)
        batch = collate_gpt(make_examples(2, seed=10 + rank)).to(device)  # different data per rank

        # local gradients (no all-reduce), then the DDP ones: these must be the mean of the ranks' local ones
        with ddp.no_sync():
            ddp(batch.phonemes, batch.phoneme_lens, batch.semantic, batch.semantic_lens, batch.bert).loss.backward()
        local = _flat_grads(model).clone()
        model.zero_grad(set_to_none=True)
        ddp(batch.phonemes, batch.phoneme_lens, batch.semantic, batch.semantic_lens, batch.bert).loss.backward()
        synced = _flat_grads(model)
        every_local, every_synced = _gathered(local), _gathered(synced)
        assert not torch.equal(every_local[0], every_local[1]), "both ranks saw the same gradients: same data?"
        for other in every_synced[1:]:
            assert torch.equal(other, every_synced[0]), "DDP left the ranks with different gradients"
        mean = torch.stack(every_local).mean(0)
        torch.testing.assert_close(synced, mean, rtol=1e-4, atol=1e-5 * float(mean.abs().max()))
        model.zero_grad(set_to_none=True)

        # one optimizer step through the training stage: the weights stay identical across ranks
        stage = GPTStage(ddp, device, OptimConfig(lr=1e-3))
        before = _flat_weights(model).clone()
        metrics = stage.train_step(batch)
        assert metrics["skipped"] == 0 and metrics["grad_norm"] > 0
        after = _flat_weights(model)
        assert not torch.equal(before, after)
        for other in _gathered(after)[1:]:
            assert torch.equal(other, after), "weights differ across ranks after one step"
    finally:
        dist.destroy_process_group()


def test_ddp_nccl_two_gpus_same_gradients_on_every_rank():
    if torch.cuda.device_count() < WORLD:
        pytest.skip(f"DDP over nccl needs {WORLD} GPUs; torch sees {torch.cuda.device_count()}")
    if not dist.is_nccl_available():
        pytest.skip("this torch build has no nccl backend")
    mp.spawn(ddp_worker, args=(_free_port(), "nccl"), nprocs=WORLD, join=True)
