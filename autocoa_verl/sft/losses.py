"""SFT stage 1's step-level contrastive loss, in the shape of verl's engine loss functions.

For a pair sharing ``prompt + prefix``: P(x) = mean token log-prob of continuation x, and

    loss = -log sigmoid(P_chosen - P_rejected) + alpha * (-P_chosen)

(alpha = 0.2 in the paper): prefer the branch that reached the right answer, and keep it likely in absolute terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PAIR_METRICS = ("pair_accuracy", "margin", "p_chosen")


def pair_loss(p_chosen: torch.Tensor, p_rejected: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-pair loss from the two mean log-probs (any matching shapes).

    >>> round(pair_loss(torch.tensor(-1.0), torch.tensor(-1.0), alpha=0.2).item(), 4)  # log 2 + 0.2
    0.8931
    """
    return -F.logsigmoid(p_chosen - p_rejected) - alpha * p_chosen


def mean_logprob(log_probs: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """P(x) of one row: ``log_probs[t]`` scores token ``t + 1`` (verl's layout), so the mask is shifted left."""
    target = torch.roll(loss_mask, shifts=-1, dims=0).to(log_probs.dtype)
    target[-1] = 0
    return (log_probs * target).sum() / target.sum().clamp(min=1)


def contrastive_loss(config, model_output, data, dp_group=None, alpha: float = 0.2):
    """verl engine loss: rows come as (chosen, rejected) pairs, adjacent and in that order, in a no-padding batch.

    The micro-batch sum is scaled by ``dp_size / global_batch_size`` (pairs), like verl's ``sft_loss`` scales by
    tokens, so micro-batch and data-parallel accumulation give the mean over the global batch of pairs.
    """
    log_probs, loss_mask = model_output["log_probs"], data["loss_mask"]
    rows = len(loss_mask)
    if rows % 2:
        raise ValueError(f"contrastive loss: a micro-batch of {rows} rows splits a (chosen, rejected) pair")
    means = torch.stack([mean_logprob(lp, m) for lp, m in zip(log_probs.unbind(), loss_mask.unbind())])
    chosen, rejected = means[0::2], means[1::2]
    losses = pair_loss(chosen, rejected, alpha)
    scale = data["dp_size"] / data["global_batch_size"]
    metrics = {"pair_accuracy": (chosen > rejected).float().mean().item(),
               "margin": (chosen - rejected).mean().item(), "p_chosen": chosen.mean().item()}
    return losses.sum() * scale, metrics
