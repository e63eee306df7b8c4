"""Devices and several processes (torchrun): which device a run uses, and how ranks share a batch."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from thadcr.config import DEVICE_TEXT
from thadcr.errors import RunError, UsageError
from thadcr.model.retrieval import Embeddings, RetrievalModel


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present else CPU; asking for CUDA without it stops at once; a name torch
    does not know is a UsageError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device {name!r} is not {DEVICE_TEXT}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(
            f"device={name!r} was asked for but this machine has no usable CUDA device "
            "(torch.cuda.is_available() is False). Use device=cpu or device=auto."
        )
    return device


class Encoders(nn.Module):
    """The part of a model a batch passes through before its pairs are scored: every child module
    but the scoring ones (CA), which score the gathered batch outside the forward pass and so
    stay outside DistributedDataParallel. ``forward`` is the model's."""

    def __init__(self, model: RetrievalModel) -> None:
        super().__init__()
        scoring = {id(p) for p in model.scoring_parameters()}
        for name, child in model.named_children():
            if not any(id(p) in scoring for p in child.parameters()):
                self.add_module(name, child)
        self.__dict__["model"] = model  # a plain reference: its parameters are not this module's

    def forward(self, audio, text) -> tuple[tuple, tuple]:
        """The model's two Embeddings as plain tuples of their fields: DDP looks for the output
        tensors with torch's pytree, which sees into tuples and lists but not into dataclasses."""
        audio, text = self.model(audio, text)
        return (audio.tha, audio.mask, audio.dp, audio.factors), (text.tha, text.mask, text.dp, text.factors)


class Distributed:
    """World size/rank from torchrun's environment (a single process when absent).

    How several processes train as one (each holds 1/world of every global batch):

    - the forward pass runs through `wrap` (DistributedDataParallel), the embeddings of all ranks
      are gathered (`gather_embeddings`) and every rank computes the loss of the whole batch;
    - `backward` back-propagates it into this rank's own rows; DDP adds the ranks' gradients in
      buckets while the backward pass runs, which gives each parameter the gradient of one process
      holding the whole batch;
    - randomness that must differ between ranks (dropout, stochastic depth) is seeded per rank
      (`rank_seed`); the initial weights are rank 0's (DDP broadcasts them).
    """

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owns_group = self.world > 1 and not dist.is_initialized()
        if self.owns_group:
            use_cuda = device_name != "cpu" and torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        device = resolve_device(device_name)
        if device.type == "cuda" and self.world > 1:
            device = torch.device("cuda", self.local_rank)
        self.device = device
        self._wrapped: DistributedDataParallel | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rank_seed(self, seed: int) -> int:
        """The seed of this rank's own random stream; rank 0 (and a single process) keeps `seed`."""
        return seed + 1_000_003 * self.rank

    def wrap(self, model: RetrievalModel) -> nn.Module:
        """The module `forward` calls: the model itself in one process; with several, its encoders
        in DistributedDataParallel (made on the first call, then reused; SyncBatchNorm on CUDA, so
        BatchNorm sees the global batch)."""
        if self.world == 1:
            return model
        if self._wrapped is None or self._wrapped.module.model is not model:
            if self.device.type == "cuda":
                nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BatchNorm layers in place
            # static_graph: the same parameters are used at every step; some never are (e.g. the
            # pooled feature's LayerNorm of HTS-AT in the THA variant), which a static graph allows.
            self._wrapped = DistributedDataParallel(
                Encoders(model), device_ids=[self.device.index] if self.device.type == "cuda" else None,
                static_graph=True,
            )
        return self._wrapped

    def forward(self, model: RetrievalModel, audio, text) -> tuple[Embeddings, Embeddings]:
        """The training forward pass of this rank's rows (audio: log-mels or a frozen encoder's
        cached features): (audio, text) Embeddings (through DDP with several processes)."""
        if self.world == 1:
            return model(audio, text)
        audio, text = self.wrap(model)(audio, text)
        return Embeddings(*audio), Embeddings(*text)

    def backward(self, loss: torch.Tensor, model: RetrievalModel) -> None:
        """Gradients of the global `loss` for every parameter, as one process with the whole batch.

        Each rank back-propagates into its own rows only (the gathered rows of other ranks are
        detached). DDP averages over ranks, so the loss is scaled by the world size: an encoder
        parameter then gets the sum of the ranks' shares. The scoring parameters (CA, outside DDP)
        score the whole gathered batch on every rank, so each rank already has their full gradient,
        times the world size of the scaling: divided back.
        """
        (loss * self.world if self.world > 1 else loss).backward()
        if self.world > 1:
            for p in model.scoring_parameters():
                if p.grad is not None:
                    p.grad /= self.world

    def rng_states(self) -> list[dict]:
        """Every rank's random state (CPU, and CUDA's when used), in rank order, for a checkpoint."""
        state = {"cpu": torch.get_rng_state(),
                 "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        if self.world == 1:
            return [state]
        states: list = [None] * self.world
        dist.all_gather_object(states, state)
        return states

    def set_rng_state(self, states: list[dict]) -> bool:
        """Restore this rank's state from `rng_states` output; False when it was saved with another
        number of processes (the caller warns: the run goes on, but not bit for bit)."""
        if len(states) != self.world:
            return False
        torch.set_rng_state(states[self.rank]["cpu"])
        if self.device.type == "cuda" and states[self.rank]["cuda"] is not None:
            torch.cuda.set_rng_state(states[self.rank]["cuda"], self.device)
        return True

    def close(self) -> None:
        """Destroy the process group if this object created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def gather(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """Every rank's rows concatenated in rank order; only this rank's rows carry gradients.

        No collective runs in the backward pass: each rank back-propagates the (identical) global
        loss into its own rows, and `backward` adds the ranks' parameter gradients, which equals
        the gradient of one process holding the whole batch.
        """
        if x is None or self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.detach().contiguous())
        parts[self.rank] = x
        return torch.cat(parts)

    def gather_embeddings(self, emb: Embeddings) -> Embeddings:
        """Gather a batch's embeddings from all ranks; text levels are padded to the longest caption."""
        if self.world == 1:
            return emb
        tha, mask = emb.tha, emb.mask
        if mask is not None:
            width = torch.tensor([mask.shape[1]], device=mask.device)
            dist.all_reduce(width, op=dist.ReduceOp.MAX)
            extra = int(width) - mask.shape[1]
            mask = torch.nn.functional.pad(mask, (0, extra))
            tha = [torch.nn.functional.pad(level, (0, 0, 0, extra)) for level in tha]
        return Embeddings(
            tha=None if tha is None else [self.gather(level) for level in tha],
            mask=self.gather(mask),
            dp=self.gather(emb.dp),
            factors=self.gather(emb.factors),
        )

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()
