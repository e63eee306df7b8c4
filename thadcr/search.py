"""Text-to-audio search with a trained model: `thadcr search "a dog barks, then a bell rings"`."""

from __future__ import annotations

from pathlib import Path

import torch

from thadcr.datasets import normalise_caption
from thadcr.train import _split_setup, encode_clips, load_trained, n_frames_for, score_all


def search(query: str, checkpoint: str | Path, split: str = "test", top: int = 5, device: str = "auto") -> list[dict]:
    """The `top` clips of a split for a caption, best first: dicts with file, score and a caption of the clip."""
    caption = normalise_caption(query)
    model, config = load_trained(checkpoint, device=device)
    data, cache = _split_setup(config, split)
    device_ = next(model.parameters()).device
    audio = encode_clips(model, data, cache, n_frames_for(config), device_, config.eval_batch)
    with torch.no_grad():
        text = model.encode_text([caption])
        scores = score_all(model, audio, text)[:, 0]
    best = torch.argsort(scores, descending=True, stable=True)[:top]
    first_caption = {int(c): i for i, c in reversed(list(enumerate(data.caption_audio)))}
    return [
        {
            "file": str(data.audio_paths[int(i)]),
            "score": float(scores[i]),
            "caption": data.captions[first_caption[int(i)]] if int(i) in first_caption else "",
        }
        for i in best
    ]
