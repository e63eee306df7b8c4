"""The training data pipeline: global batches split between processes, DataLoader workers that
change nothing but the speed, a log-mel cache filled safely by several workers."""

import torch

from thadcr.model.audio import LogMel
from thadcr.config import make_config
from thadcr.data.datasets import CaptionDataset, GlobalBatchSampler, data_loader, epoch_batches
from thadcr.data.logmel import LogMelCache
from thadcr.data.readers import load_split
from thadcr.run.train import train


def test_ranks_share_exactly_the_global_batches_of_one_process():
    one = GlobalBatchSampler(50, 8, seed=3)
    ranks = [GlobalBatchSampler(50, 8, seed=3, rank=r, world=4) for r in range(4)]
    for epoch in (1, 2):
        for sampler in (one, *ranks):
            sampler.set_epoch(epoch)
        whole = list(one)
        shares = [list(r) for r in ranks]
        assert len(whole) == 50 // 8 and all(len(s) == len(whole) for s in shares)
        for b, batch in enumerate(whole):
            assert [key for share in shares for key in share[b]] == batch  # rank order = row order
            assert all(e == epoch for e, _ in batch)
        assert [i for _, i in whole[0]] == epoch_batches(50, 8, 3, epoch)[0].tolist()
    one.set_epoch(1)
    first = list(one)
    one.set_epoch(2)
    assert list(one) != first  # a new order each epoch
    assert len(GlobalBatchSampler(50, 8, seed=3, max_steps=2)) == 2


def _dataset(root, cache_dir):
    split = load_split(root, "clotho", "train")
    cache = LogMelCache(cache_dir, LogMel(sample_rate=32000))
    return CaptionDataset(split, cache, n_frames=64, train=True, seed=5, spec_augment=(2, 16, 2, 8))


def test_workers_give_the_batches_of_the_main_process(synthetic_clotho, tmp_path):
    """Two persistent workers, a fresh cache they fill at the same time, two epochs: every batch is
    bit-identical to the main process's, and the cache holds complete entries only."""
    batches = {}
    for workers in (0, 2):
        dataset = _dataset(synthetic_clotho, tmp_path / f"cache{workers}")
        sampler = GlobalBatchSampler(len(dataset), 8, seed=5)
        loader = data_loader(dataset, workers, pin_memory=False, batch_sampler=sampler)
        batches[workers] = []
        for epoch in (1, 2):
            sampler.set_epoch(epoch)
            batches[workers] += list(loader)
    assert len(batches[0]) == 2 * (80 // 8)
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a["logmel"], b["logmel"]) and a["captions"] == b["captions"]
        assert torch.equal(a["caption_index"], b["caption_index"])
    crops = [{int(i): x for batch in batches[2][e * 10:(e + 1) * 10]
              for i, x in zip(batch["caption_index"], batch["logmel"])} for e in (0, 1)]
    assert all(not torch.equal(crops[0][i], crops[1][i]) for i in crops[0])  # each epoch draws anew
    folder = next((tmp_path / "cache2").glob("logmel-*"))
    assert not list(folder.glob("*.partial"))
    fresh = LogMelCache(tmp_path / "cache2", LogMel(sample_rate=32000), memory_bytes=0)
    split = load_split(synthetic_clotho, "clotho", "train")
    for path in split.audio_paths:  # what the workers stored is what one process computes
        assert torch.equal(fresh.get(path), fresh.compute(path))


def test_training_with_workers_equals_training_without(synthetic_clotho, tmp_path):
    runs = {}
    for workers in (0, 2):
        config = make_config("tiny", dict(
            data_root=str(synthetic_clotho), layout="clotho", clip_seconds=1.0, batch_size=8, epochs=2,
            max_steps_per_epoch=2, eval_batch=8, joint_dim=32, variant="DCR", cache_dir=str(tmp_path / f"c{workers}"),
            num_workers=workers, audio_checkpoint=None,
        ))
        runs[workers] = train(config, tmp_path / f"run{workers}", progress=False)
    assert runs[2]["test"] == runs[0]["test"]
    a = torch.load(tmp_path / "run0" / "best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "run2" / "best.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
