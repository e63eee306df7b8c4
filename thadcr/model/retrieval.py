"""The retrieval model: one variant of the paper's Tables 1-3 built from a `Config`.

Which parts a variant has (the terms of S: S_THA, S_DP, S_DCR with CA or the unweighted factor
cosines without; the latent factors; L_D; L_A) is read from its row of
`thadcr.config.VARIANT_PARTS` (``config.parts``), e.g. THA+DCR: S = S_THA + S_DCR, L = L_S +
alpha L_D + beta L_A; DP+LD: S = sum_i cos(e_i^t, e_i^a), L = L_S + alpha L_D.

The training objective is L = L_S + alpha L_D + beta L_A (section 2.4), L_S = NT-Xent (Eq. 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from thadcr.model.alignment import THA
from thadcr.model.audio import load_htsat_checkpoint, load_resnet38_checkpoint
from thadcr.model.htsat import HTSAT, HTSATOutput
from thadcr.model.resnet38 import ResNet38
from thadcr.config import Config, ConfigError, VariantParts
from thadcr.model.factors import (
    ConfidenceAware,
    FactorProjection,
    alignment_loss,
    dcr_similarity,
    decoupling_loss,
    factor_correlation,
    uniform_factor_similarity,
)
from thadcr.model.losses import nt_xent
from thadcr.model.text import TextEncoder, TextOutput


@dataclass
class Embeddings:
    """What one modality contributes to the similarity; None where the variant does not use it.

    tha: list of 3 projected levels (B, M_l or N_l, D); mask: (B, N) valid words (text only);
    dp: (B, D) projected global feature; factors: (B, K, D // K) latent factors.
    """

    tha: list[torch.Tensor] | None = None
    mask: torch.Tensor | None = None
    dp: torch.Tensor | None = None
    factors: torch.Tensor | None = None

    def __len__(self) -> int:
        for x in (self.dp, self.factors, self.tha[0] if self.tha else None):
            if x is not None:
                return x.shape[0]
        return 0

    def select(self, index: slice | torch.Tensor) -> "Embeddings":
        """Rows `index` of every field (blocks for evaluation)."""
        pick = lambda x: None if x is None else x[index]  # noqa: E731
        return Embeddings(
            tha=None if self.tha is None else [level[index] for level in self.tha],
            mask=pick(self.mask),
            dp=pick(self.dp),
            factors=pick(self.factors),
        )


def concat_embeddings(parts: list[Embeddings]) -> Embeddings:
    """Concatenate blocks of Embeddings along the batch axis (text levels padded to one length)."""
    first = parts[0]
    cat = lambda xs: None if xs[0] is None else torch.cat(xs)  # noqa: E731
    tha = None
    mask = None
    if first.tha is not None:
        if first.mask is not None:  # text: pad the word axis to the longest block
            width = max(p.mask.shape[1] for p in parts)
            tha = [
                torch.cat([F.pad(p.tha[level], (0, 0, 0, width - p.tha[level].shape[1])) for p in parts])
                for level in range(len(first.tha))
            ]
            mask = torch.cat([F.pad(p.mask, (0, width - p.mask.shape[1])) for p in parts])
        else:
            tha = [torch.cat([p.tha[level] for p in parts]) for level in range(len(first.tha))]
    return Embeddings(
        tha=tha,
        mask=mask if mask is not None else cat([p.mask for p in parts]),
        dp=cat([p.dp for p in parts]),
        factors=cat([p.factors for p in parts]),
    )


class RetrievalModel(nn.Module):
    """Dual-stream Transformers (2.1) with THA (2.2), DP, DCR (2.3) and CA (2.4) as the variant asks."""

    def __init__(self, config: Config, load_weights: bool = True):
        super().__init__()
        self.config = config
        variant = config.variant
        self.parts: VariantParts = config.parts
        self.uses_tha = self.parts.tha
        self.uses_dp = self.parts.dp
        self.uses_factors = self.parts.factors
        self.uses_ca = self.parts.ca
        self.loss_weights = {
            "alpha": config.alpha if self.parts.loss_d else 0.0,
            "beta": config.beta if self.parts.loss_a else 0.0,
        }

        if config.audio_encoder == "resnet38":
            if self.uses_tha:
                raise ConfigError(
                    f"variant {variant} needs token-level audio features; ResNet38 has none. "
                    "Use audio_encoder=htsat for THA variants."
                )
            self.audio_encoder = ResNet38(width=config.resnet38_width, dropout=config.resnet38_dropout)
            loader = load_resnet38_checkpoint
        else:
            self.audio_encoder = HTSAT(config.htsat_size)
            loader = load_htsat_checkpoint
        if load_weights and config.audio_checkpoint:
            self.audio_load_report = loader(self.audio_encoder, config.audio_checkpoint)
        self.audio_frozen = config.audio_frozen
        if self.audio_frozen:  # its features come from thadcr.run.features.AudioFeatureCache
            self.audio_encoder.requires_grad_(False)
            self.audio_encoder.eval()

        self.text_encoder = TextEncoder(
            config.text_model, layers=tuple(config.text_layers), trainable_layers=config.text_trainable_layers
        )
        audio_dim, text_dim = self.audio_encoder.pooled_dim, self.text_encoder.hidden_dim
        if self.uses_tha:
            self.tha = THA(
                self.audio_encoder.stage_dims,
                text_dim,
                config.joint_dim,
                lam=config.lam,
                reduce=config.tha_reduce,
                max_audio_tokens=config.tha_max_audio_tokens,
            )
        if self.uses_dp:
            self.audio_dp = nn.Linear(audio_dim, config.joint_dim)
            self.text_dp = nn.Linear(text_dim, config.joint_dim)
        if self.uses_factors:
            self.audio_factors = FactorProjection(audio_dim, config.joint_dim, config.n_factors)
            self.text_factors = FactorProjection(text_dim, config.joint_dim, config.n_factors)
        if self.uses_ca:
            self.ca = ConfidenceAware(config.joint_dim // config.n_factors)

    def train(self, mode: bool = True) -> "RetrievalModel":
        """Training mode for every part but a frozen audio encoder, which stays in eval mode."""
        super().train(mode)
        if self.audio_frozen:
            self.audio_encoder.eval()
        return self

    # ----------------------------------------------------------------- encoders
    def encode_audio(self, audio: torch.Tensor | HTSATOutput) -> Embeddings:
        """logmel (B, frames, mel bins), or the encoder's output (e.g. cached from a frozen
        encoder, `thadcr.run.features`) -> the audio side of every similarity the variant uses
        (the encoder checks the shape against its own number of mel bins)."""
        out = audio if isinstance(audio, HTSATOutput) else self.audio_encoder(audio)
        return Embeddings(
            tha=self.tha.project_audio(out.stages) if self.uses_tha else None,
            dp=self.audio_dp(out.pooled) if self.uses_dp else None,
            factors=self.audio_factors(out.pooled) if self.uses_factors else None,
        )

    def text_features(self, captions: list[str]) -> TextOutput:
        """Run the text Transformer (no projection): levels, word mask and [CLS]."""
        return self.text_encoder(captions)

    def encode_text(self, captions: list[str] | TextOutput) -> Embeddings:
        """Captions (or precomputed `TextOutput`, e.g. cached from a frozen encoder) -> text side."""
        out = captions if isinstance(captions, TextOutput) else self.text_features(captions)
        return Embeddings(
            tha=self.tha.project_text(out.levels) if self.uses_tha else None,
            mask=out.mask if self.uses_tha else None,
            dp=self.text_dp(out.cls) if self.uses_dp else None,
            factors=self.text_factors(out.cls) if self.uses_factors else None,
        )

    def forward(self, logmel: torch.Tensor | HTSATOutput, captions: list[str] | TextOutput) -> tuple[Embeddings, Embeddings]:
        """Both sides of a batch: (audio embeddings, text embeddings). Training calls the model
        this way, so that DistributedDataParallel sees the forward pass it wraps."""
        return self.encode_audio(logmel), self.encode_text(captions)

    def scoring_parameters(self) -> list[nn.Parameter]:
        """Parameters applied to pairs of embeddings (after the encoders): the CA module's."""
        return list(self.ca.parameters()) if self.uses_ca else []

    # ----------------------------------------------------------------- scores
    def similarity(self, audio: Embeddings, text: Embeddings) -> torch.Tensor:
        """All pairs: (Na, Nt) = the sum of the variant's similarities (section 2.4, after Eq. 5): the
        terms of ``self.parts.terms``, added in that order."""
        terms = []
        if self.uses_tha:
            terms.append(self.tha.score(audio.tha, text.tha, text.mask))
        if self.uses_dp:
            terms.append(F.normalize(audio.dp, dim=-1) @ F.normalize(text.dp, dim=-1).T)
        if self.uses_factors:
            factor_sim = (
                dcr_similarity(e_audio=audio.factors, e_text=text.factors, ca=self.ca)
                if self.uses_ca
                else uniform_factor_similarity(e_audio=audio.factors, e_text=text.factors)
            )
            terms.append(factor_sim / self.config.n_factors if self.config.factor_reduce == "mean" else factor_sim)
        sim = terms[0]
        for term in terms[1:]:
            sim = sim + term
        assert sim.shape == (len(audio), len(text))
        return sim

    def loss(self, logmel: torch.Tensor | HTSATOutput, text: list[str] | TextOutput, clip_ids: torch.Tensor | None = None) -> dict:
        """L = L_S + alpha L_D + beta L_A for a batch of matching (clip, caption) pairs."""
        return self.loss_from_embeddings(*self(logmel, text), clip_ids)

    def loss_from_embeddings(
        self, audio_emb: Embeddings, text_emb: Embeddings, clip_ids: torch.Tensor | None = None
    ) -> dict:
        sim = self.similarity(audio_emb, text_emb)  # (B, B), positives on the diagonal
        ids = clip_ids if self.config.same_clip_positives else None
        loss_s = nt_xent(sim.float(), self.config.tau, clip_ids=ids)
        zero = loss_s.new_zeros(())
        loss_d, loss_a = zero, zero
        if self.uses_factors:
            corr = factor_correlation(e_audio=audio_emb.factors.float(), e_text=text_emb.factors.float())
            loss_d = decoupling_loss(corr)
            loss_a = alignment_loss(corr)
        total = loss_s + self.loss_weights["alpha"] * loss_d + self.loss_weights["beta"] * loss_a
        return {"loss": total, "loss_S": loss_s, "loss_D": loss_d, "loss_A": loss_a}


def build_model(config: Config, load_weights: bool = True) -> RetrievalModel:
    """The factory: a RetrievalModel for `config.variant` (its parts: `thadcr.config.VARIANT_PARTS`)."""
    return RetrievalModel(config, load_weights=load_weights)
