# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The training objective, one step (section 2.4)
#
# > "Combining the aforementioned objectives for text-audio similarity $\mathcal{L}_S$,
# > inter-factor decoupling $\mathcal{L}_D$ and intra-factor alignment $\mathcal{L}_A$, the
# > whole training loss is $\mathcal{L} = \mathcal{L}_S + \alpha \mathcal{L}_D + \beta
# > \mathcal{L}_A$, where $\alpha$ and $\beta$ are optimization hyper-parameters guiding the
# > balance between individual loss components."
#
# **Why.** Retrieval ranks: a caption's own clip must score above the others. $\mathcal{L}_S$,
# the NT-Xent loss of Eq. 5 ([CA page](ca.py)), is the term that trains this ranking: it raises
# the similarity $S$ of each matching pair of a batch against the other pairs, and it is the only
# term that sees $S$. $\mathcal{L}_D$ and $\mathcal{L}_A$ ([DCR page](dcr.py)) never look at $S$:
# they act on the correlation matrix $C$ of the latent factors of the matching pairs and shape
# the factors themselves, "to effectively disentangle the $K$ latent factors" (section 2.3),
# different factors decoupled and the same factor aligned across the modalities. The paper's
# Table 3 credits each of them with a gain in recall. $\alpha$ and $\beta$ set "the balance"
# between the terms; the paper uses $\alpha = 0.01$ and $\beta = 0.005$ (section 3.1).
#
# This page puts the pieces together on one real training batch: it assembles $\mathcal{L}$
# from the package's functions, checks it against the model's own training loss, measures how
# much of the step each term drives (the norm of its gradient), and takes one optimiser step.
# The variants of Tables 1-3 are this objective with parts left out; the table below says which.
#
# :::{admonition} The paper says / we chose
# :class: note
#
# | value or decision | source |
# |---|---|
# | $\mathcal{L} = \mathcal{L}_S + \alpha \mathcal{L}_D + \beta \mathcal{L}_A$ | paper, 2.4 |
# | $\alpha = 0.01$, $\beta = 0.005$, $K = 8$ (the tiny profile keeps them) | paper, 3.1 |
# | $\mathcal{L}_S$: NT-Xent (Eq. 5) over $S$, the sum of the variant's similarities | paper, 2.4 |
# | $\tau = 0.07$, fixed | ref [8]'s code; the paper gives no value |
# | $C$, and so $\mathcal{L}_D$ and $\mathcal{L}_A$, over the matching pairs of each batch | ours (the paper writes an expectation over text-audio pairs) |
# | which terms each variant uses (the table below) | paper, 3.2 and Table 3; the "+$\mathcal{L}_D$" rows' unweighted factor cosines are ours |
# | Adam, learning rate $10^{-3}$ in the tiny profile ($10^{-4}$ in the paper profiles) | ref [8]'s code (Adam $10^{-4}$); $10^{-3}$ ours |
# | the gradient's norm clipped at 2.0 | ref [8]'s code; not in the paper |
#
# The reasons are in the [reproduction notes](../book/reproduction-notes.md) (factors and
# losses, model).
# :::

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from thadcr.interfaces.notebook.method import setup, show

setup(precision=4)  # offline, seeded; the repository root becomes the working folder

# %% [markdown]
# ## The variants: which terms each one uses
#
# Every model of the paper's tables sums some similarities into $S$ and trains with
# $\mathcal{L}_S$, plus $\alpha \mathcal{L}_D$ and $\beta \mathcal{L}_A$ when it has latent
# factors and uses those losses. The table is rendered from `thadcr.config.VARIANT_PARTS`, the rows the model,
# the experiment plan and the tests read; the last column lists the paper tables whose rows
# train that variant (`thadcr.experiments.plan.TABLE_ROWS`). THA is the [THA page](tha.py);
# the factors, $\mathcal{L}_D$ and $\mathcal{L}_A$ the [DCR page](dcr.py); CA and $S_{DCR}$ the
# [CA page](ca.py). Without CA, the factor similarity is the unweighted sum of the $K$ factor
# cosines ($S_{factors}$, Eq. 4 with every $g_i = 1$, our reading of Table 3's
# "+$\mathcal{L}_D$" rows).

# %%
from thadcr.config import VARIANT_PARTS
from thadcr.experiments.plan import TABLE_ROWS

WEIGHTED = {"L_S": "L_S", "L_D": "alpha L_D", "L_A": "beta L_A"}  # the terms of L


def paper_tables(variant: str) -> str:
    """The paper tables with a row that trains `variant`, e.g. "1, 2"."""
    tables = [str(number) for number, rows in TABLE_ROWS.items()
              if any(settings["variant"] == variant for _, settings in rows)]
    return ", ".join(tables)


def mark(used: bool) -> str:
    return "yes" if used else ""


variant_table = pd.DataFrame([
    {"variant": name, "S =": " + ".join(parts.terms), "factors": mark(parts.factors),
     "CA": mark(parts.ca), "L =": " + ".join(WEIGHTED[term] for term in parts.losses),
     "paper tables": paper_tables(name)}
    for name, parts in VARIANT_PARTS.items()]).set_index("variant")
# the factor losses come with the factors: without factors, L = L_S
for name, parts in VARIANT_PARTS.items():
    assert parts.factors or parts.losses == ("L_S",), name
assert variant_table.loc["THA+DCR", "L ="] == "L_S + alpha L_D + beta L_A"
variant_table

# %% [markdown]
# ## One real batch and the full model
#
# The full model, THA+DCR, uses every part of the method: $S_{THA}$, $S_{DCR}$ with CA,
# $\mathcal{L}_D$ and $\mathcal{L}_A$. The page loads the demo checkpoint
# (`results/tiny/demo/best.pt`, THA+DCR trained with the tiny profile) when it exists, and
# builds an untrained THA+DCR from the tiny profile (seed 0) otherwise. The batch is a real
# training batch: the first one of epoch 1 that a seed-0 run of the profile draws
# (`thadcr.data.datasets.epoch_batches`), 16 captions of the embedded AudioCaps-like training
# split with their clips, the profile's `batch_size`. The demo model was trained on these
# clips, so expect a small $\mathcal{L}_S$: at chance (every $S_{ij}$ equal) Eq. 5 gives
# $2 \ln B$.
#
# With a frozen audio encoder, training reads the encoder's cached features
# (`thadcr.run.features`); here the frozen encoder runs on the batch's log-mels, which is how
# that cache is made.

# %% tags=["nbval-ignore-output"]
from thadcr.config import make_config
from thadcr.data.datasets import epoch_batches
from thadcr.data.readers import load_split
from thadcr.interfaces.notebook.method import clip_start
from thadcr.model.audio import LogMel
from thadcr.model.retrieval import build_model
from thadcr.run.checkpoint import load_trained

profile = make_config("tiny")  # its variant is THA+DCR
DEMO = Path("results/tiny/demo/best.pt")
if DEMO.is_file():
    model, config = load_trained(DEMO, device="cpu")
else:
    model, config = build_model(profile), profile
# the checkpoint was trained with the profile's settings of the objective and the step
settings = ("variant", "alpha", "beta", "tau", "n_factors", "factor_reduce", "lr",
            "grad_clip", "batch_size", "seed")
assert all(getattr(config, key) == getattr(profile, key) for key in settings)
source = "demo checkpoint" if DEMO.is_file() else "untrained model"
print(f"{source}: {config.variant}, alpha = {config.alpha}, beta = {config.beta}, "
      f"tau = {config.tau}, K = {config.n_factors}")

# %%
train_split = load_split(config.data_root, config.layout, "train", config.audio_pattern)
batch = epoch_batches(len(train_split.captions), config.batch_size, config.seed, 1)[0]
# (B,) the clip of each caption
clip_ids = torch.as_tensor(train_split.caption_audio[batch.numpy()])
front_end = LogMel(sample_rate=config.sample_rate)
waves = [clip_start(train_split, int(clip), config.clip_seconds, config.sample_rate)[0]
         for clip in clip_ids]  # (seconds * rate,) each
logmel = front_end(torch.stack(waves))  # (B, frames, mel bins)
captions = [train_split.captions[int(i)] for i in batch]
B = len(captions)
assert B == config.batch_size
assert len(set(clip_ids.tolist())) == B  # distinct clips: L_S is Eq. 5 as printed
print(f"batch: {B} captions of {B} clips, log-mel {tuple(logmel.shape)}")

# %% tags=["nbval-ignore-output"]
display(pd.DataFrame({"clip": clip_ids.numpy(), "caption": captions}).head(4))

# %% [markdown]
# ## $\mathcal{L}$ from the package's pieces
#
# $$\mathcal{L} = \mathcal{L}_S + \alpha \mathcal{L}_D + \beta \mathcal{L}_A, \qquad
# \mathcal{L}_S = \text{NT-Xent}(S / \tau) \;(\text{Eq. 5}),$$
#
# $$\mathcal{L}_D = \sum_i \sum_{j \ne i} C_{i,j}^2, \qquad
# \mathcal{L}_A = \sum_i (1 - C_{i,i})^2 .$$
#
# For THA+DCR, $S = S_{THA} + S_{DCR}$; the tiny profile divides $S_{DCR}$ by $K$
# (`factor_reduce: mean`, the [CA page](ca.py) says why). The model's forward pass gives the
# embeddings of both sides; from there each piece is one package function: THA's `score`,
# `dcr_similarity`, `nt_xent` (`thadcr.model.losses`), `factor_correlation`,
# `decoupling_loss` and `alignment_loss` (`thadcr.model.factors`). The model's own training
# loss, `loss_from_embeddings`, which `thadcr.run.train.train_step` calls, must return the
# same numbers.

# %% tags=["nbval-ignore-output"]
show(type(model).loss_from_embeddings)

# %%
from thadcr.model.factors import (
    alignment_loss,
    dcr_similarity,
    decoupling_loss,
    factor_correlation,
)
from thadcr.model.losses import nt_xent

K = config.n_factors
model.train()  # the frozen encoders stay in eval mode; no trainable part has dropout
# Embeddings of each side: 3 THA levels (B, tokens, D), factors (B, K, D/K)
audio_emb, text_emb = model(logmel, captions)
s_tha = model.tha.score(audio_emb.tha, text_emb.tha, text_emb.mask)  # (B, B)
s_dcr = dcr_similarity(e_audio=audio_emb.factors, e_text=text_emb.factors, ca=model.ca)
S = s_tha + s_dcr / K  # (B, B), rows clips, columns captions
L_S = nt_xent(S, config.tau, clip_ids=clip_ids)
C = factor_correlation(e_audio=audio_emb.factors, e_text=text_emb.factors)  # (K, K)
L_D, L_A = decoupling_loss(C), alignment_loss(C)
L = L_S + config.alpha * L_D + config.beta * L_A

own = model.loss_from_embeddings(audio_emb, text_emb, clip_ids)
assert torch.equal(S, model.similarity(audio_emb, text_emb))
for name, piece in (("loss", L), ("loss_S", L_S), ("loss_D", L_D), ("loss_A", L_A)):
    assert torch.equal(piece, own[name]), name
print(f"S {tuple(S.shape)}, C {tuple(C.shape)}; L = {L.item():.6f}, "
      "the same bits as the model's training loss")
print(f"chance level of L_S: 2 ln B = {2 * np.log(B):.4f}")

# %% [markdown]
# ## Each term's value and gradient
#
# How much of the step a term drives is the size of its gradient, not of its value. For each
# weighted term, `thadcr.run.train.gradient_norms` takes the gradient with respect to every
# trainable parameter (the weights training optimises: THA's projections, the factor
# projections, CA; both encoders are frozen in the tiny profile) with one
# `torch.autograd.grad` call per term, and returns its 2-norm over all of them, the norm
# training clips. The table gives the norm for each term itself and for the weighted term that
# enters $\mathcal{L}$ (the weight scales it), and the value of each.

# %% tags=["nbval-ignore-output"]
from thadcr.run.train import gradient_norms

show(gradient_norms)

# %%
# the parameters training optimises, as thadcr.run.train.prepare collects them
params = [p for p in model.parameters() if p.requires_grad]
terms = {"L_S": L_S, "alpha L_D": config.alpha * L_D, "beta L_A": config.beta * L_A}
norms = gradient_norms({**terms, "L": L}, params)
raw = gradient_norms({"L_D": L_D, "L_A": L_A}, params)  # unweighted, for the table
step_table = pd.DataFrame({
    "value": [L_S.item(), L_D.item(), L_A.item()],
    "weight": [1.0, config.alpha, config.beta],
    "weighted value": [t.item() for t in terms.values()],
    "gradient norm": [norms["L_S"], raw["L_D"], raw["L_A"]],
    "weighted gradient norm": [norms[name] for name in terms],
}, index=["L_S", "L_D", "L_A"])
# a weight scales the gradient; the gradients of the terms add up to L's
assert np.allclose(step_table["weight"] * step_table["gradient norm"],
                   step_table["weighted gradient norm"])
assert norms["L"] <= step_table["weighted gradient norm"].sum() * (1 + 1e-9)
print(f"{sum(p.numel() for p in params):,} trainable weights in {len(params)} tensors; "
      f"|grad L| = {norms['L']:.4f}")
display(step_table.round(4))

# %% [markdown]
# Which weights does each term reach? The same function over each trainable module's
# parameters: $\mathcal{L}_D$ and $\mathcal{L}_A$ depend only on the factors, so their gradient
# stops at the two factor projections $W^t_k$, $W^a_k$; THA and CA learn from
# $\mathcal{L}_S$ alone.

# %%
modules = {name: [p for p in child.parameters() if p.requires_grad]
           for name, child in model.named_children()}
modules = {name: group for name, group in modules.items() if group}  # no frozen encoder
module_norms = pd.DataFrame({name: gradient_norms(terms, group)
                             for name, group in modules.items()})  # (terms, modules)
assert set(modules) == {"tha", "audio_factors", "text_factors", "ca"}
assert (module_norms.loc[["alpha L_D", "beta L_A"], ["tha", "ca"]] == 0).all().all()
assert (module_norms.loc["L_S"] > 0).all()
display(module_norms.round(4))

# %% tags=["nbval-ignore-output"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
names = list(terms)
colours = ["#4c72b0", "#dd8452", "#55a868"]
panels = (("weighted value", "weighted value (its part of L)", "value", "linear"),
          ("weighted gradient norm", "norm of its gradient (all trainable weights)",
           "norm (log scale)", "log"))
for ax, (column, title, label, scale) in zip(axes, panels):
    bars = ax.barh(names, step_table[column], color=colours)
    ax.bar_label(bars, fmt="%.4f", padding=3)
    ax.set(title=title, xlabel=label, xscale=scale)
    ax.set_xlim(1e-3 if scale == "log" else 0, step_table[column].max() * 1.6)
    ax.invert_yaxis()
fig.suptitle(f"{config.variant}, one batch of {B}: L = L_S + alpha L_D + beta L_A")
fig.tight_layout()
plt.show()

# %% [markdown]
# What the numbers say (the sentence is computed from them). One batch of one model: it
# illustrates, it does not measure.

# %%
from thadcr.interfaces.notebook.method import objective_sentence

factor_weights = {name: float(np.hypot(module_norms.loc[name, "audio_factors"],
                                       module_norms.loc[name, "text_factors"]))
                  for name in terms}  # the norm over both factor projections
values = {name: t.item() for name, t in terms.items()}
print(objective_sentence(values, norms, factor_weights, config.grad_clip))

# %% [markdown]
# ## One optimiser step
#
# Training takes the step with `thadcr.run.train.train_step`: zero the gradients,
# back-propagate $\mathcal{L}$, clip the norm of the gradient at `grad_clip` = 2.0, then one
# Adam step. The optimiser is the one `thadcr.run.train.prepare` builds, `adam(params, lr)`
# (torch's fused Adam) with the profile's learning rate; the learning-rate schedule changes
# nothing in the first epoch. **The clipping is not the paper's**: the paper names none; the
# value 2.0 is the one of ref [8]'s code, whose pipeline the paper follows, kept by our
# choice. The step below starts a fresh Adam from the loaded weights, as a run's first step
# does, on the batch above; then $\mathcal{L}$ is computed again on the same batch.
#
# A fresh Adam's first step moves each weight by the learning rate times
# $\hat m / (\sqrt{\hat v} + \epsilon) = g / (|g| + \epsilon)$: about $\pm$ lr for every weight
# with a gradient, whatever its size (so the clipping, one factor on every $g$, barely changes
# this first step). Later steps divide by running averages instead.

# %%
from thadcr.run.distributed import Distributed
from thadcr.run.train import adam, train_step

optimizer = adam(params, config.lr)
before_weights = [p.detach().clone() for p in params]
world = Distributed("cpu")  # one process
before = train_step(model, world, optimizer, params, logmel, captions, clip_ids,
                    config.grad_clip)
with torch.no_grad():
    after = model.loss(logmel, captions, clip_ids)
moved = torch.cat([(p.detach() - w).abs().flatten()
                   for p, w in zip(params, before_weights)])  # each weight's |change|
assert moved.max() <= config.lr * (1 + 1e-3)  # |update| <= lr on Adam's first step
assert torch.equal(before["loss"], L)  # train_step computed the same loss
columns = {"loss": "L", "loss_S": "L_S", "loss_D": "L_D", "loss_A": "L_A"}
step_losses = {when: {columns[k]: losses[k].item() for k in columns}
               for when, losses in (("before", before), ("after", after))}
display(pd.DataFrame(step_losses).T.round(6))
print(f"lr = {config.lr:g}, grad_clip = {config.grad_clip:g}; weights moved by "
      f"{moved.median().item():.2e} (median) to {moved.max().item():.2e} (largest)")
change = "fell" if after["loss"] < before["loss"] else "did not fall"
print(f"L {change} from {before['loss'].item():.6f} to {after['loss'].item():.6f} "
      "on the same batch")

# %% [markdown]
# ## The other variants
#
# The step above used every term. The other variants take the same step with less, as the
# variant table says. Read from it, what each one drops or adds against THA+DCR (a variant
# without factors trains with $\mathcal{L}_S$ alone, so its step is $\mathcal{L}_S$'s
# gradient, clipped):

# %%
full = VARIANT_PARTS["THA+DCR"]
lines = []
for name, parts in VARIANT_PARTS.items():
    if name == full.name:
        continue
    used = parts.terms + parts.losses
    dropped = [t for t in full.terms + full.losses if t not in used]
    added = [t for t in parts.terms if t not in full.terms]
    assert dropped, name  # THA+DCR has every term but S_DP and S_factors
    changes = f"drops {', '.join(dropped)}"
    changes += f"; adds {', '.join(added)}" if added else ""
    lines.append(f"- **{name}**: S = {' + '.join(parts.terms)}, "
                 f"L = {' + '.join(WEIGHTED[t] for t in parts.losses)} ({changes})")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Summary
#
# - $\mathcal{L} = \mathcal{L}_S + \alpha \mathcal{L}_D + \beta \mathcal{L}_A$, assembled
#   from `nt_xent`, `factor_correlation`, `decoupling_loss` and `alignment_loss`, is exactly
#   the model's training loss on a real batch.
# - $\mathcal{L}_S$ trains every trainable part through $S$; $\mathcal{L}_D$ and
#   $\mathcal{L}_A$ reach only the factor projections. The gradient norms per term say how much
#   of the step each drives (`thadcr.run.train.gradient_norms`).
# - A training step clips the gradient's norm at 2.0 (ref [8]'s code, not the paper) before
#   Adam's update.
# - The variants differ only in the terms of $S$ and $\mathcal{L}$ (`VARIANT_PARTS`): without
#   factors, $\mathcal{L} = \mathcal{L}_S$.
