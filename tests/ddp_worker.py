"""Two training steps' losses, the second step's gradients and the weights after them, in 1 process
or in each of N torchrun processes.

Every process builds the same model and global batch; rank r takes rows r*B/N..(r+1)*B/N, the
embeddings are gathered, and DistributedDataParallel adds the gradients (thadcr.run.distributed).
BatchNorm runs on its running statistics here because SyncBatchNorm needs a GPU, and dropout and
stochastic depth are off because each process draws its own random masks: the two things that
legitimately differ between 1 and N CPU processes.
"""

import os
import sys

import torch

from thadcr.config import make_config
from thadcr.run.distributed import Distributed
from thadcr.model.retrieval import build_model
from thadcr.run.train import train_step

CAPTIONS = ["a dog barks", "a bell rings then a dog barks", "rain falls on a roof", "a car passes",
            "birds sing while wind blows", "a door slams", "water runs", "a man speaks"]


def main(out_path: str) -> None:
    world = Distributed("cpu")
    torch.manual_seed(0)
    variant = os.environ.get("DDP_VARIANT", "THA+DCR")  # THA+DCR covers THA, factors and CA
    config = make_config("tiny", {"variant": variant, "joint_dim": 64, "text_trainable_layers": 1,
                                  "audio_checkpoint": None})
    # float64: 1 and N processes sum the same terms in another order; in float32 that rounding can
    # flip a ReLU or clamp at its kink and move a gradient by 1e-3 of its scale.
    model = build_model(config).double()
    model.eval()  # running BN statistics, no dropout or stochastic depth (see the module docstring)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.05)
    share = 8 // world.world
    rows = slice(world.rank * share, (world.rank + 1) * share)
    clip_ids = world.gather(torch.arange(8)[rows])
    losses = []
    for step in range(2):  # the second step checks what DDP does after its first (bucket rebuild, static graph)
        logmel = torch.randn(8, 101, 64, generator=torch.Generator().manual_seed(1 + step), dtype=torch.float64)
        captions = CAPTIONS[rows] if step == 0 else CAPTIONS[::-1][rows]
        out = train_step(model, world, optimizer, params, logmel[rows], captions, clip_ids, grad_clip=1e9)
        losses.append(out["loss"].detach())
    if world.main:
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        torch.save({"loss": torch.stack(losses), "grads": grads, "weights": weights}, out_path)
    world.barrier()
    world.close()


if __name__ == "__main__":
    main(sys.argv[1])
