"""Label-smoothed cross-entropy, exactly as fairseq's ``label_smoothed_cross_entropy`` criterion."""

from __future__ import annotations

from torch import Tensor

__all__ = ["label_smoothed_nll_loss"]


def label_smoothed_nll_loss(lprobs: Tensor, target: Tensor, epsilon: float,
                            ignore_index: int | None = None) -> tuple[Tensor, Tensor]:
    """Summed label-smoothed loss and summed NLL.

    ``lprobs`` ``[N, V]`` log-probabilities (any leading shape ``[..., V]`` with ``target`` ``[...]``
    works too), ``target`` ``[N]``.  With ``eps_i = epsilon / (V - 1)``::

        loss = (1 - epsilon - eps_i) * nll + eps_i * smooth,   smooth = -sum_v lprobs[v]

    both summed over the tokens whose target is not ``ignore_index`` (those contribute 0).
    Returns ``(loss_sum, nll_loss_sum)`` as 0-d tensors.
    """
    if lprobs.dim() < 1 or target.shape != lprobs.shape[:-1]:
        raise ValueError(f"target shape {tuple(target.shape)} must equal lprobs shape without the vocabulary "
                         f"dimension {tuple(lprobs.shape[:-1])}")
    vocab = lprobs.size(-1)
    if vocab < 2:
        raise ValueError("label smoothing needs a vocabulary of at least 2 entries")
    target = target.long()
    if ignore_index is not None:
        pad_mask = target.eq(ignore_index)
        safe_target = target.masked_fill(pad_mask, 0)  # ignore_index may lie outside [0, V)
    else:
        pad_mask = None
        safe_target = target
    nll_loss = -lprobs.gather(dim=-1, index=safe_target.unsqueeze(-1)).squeeze(-1)
    smooth_loss = -lprobs.sum(dim=-1)
    if pad_mask is not None:
        nll_loss = nll_loss.masked_fill(pad_mask, 0.0)
        smooth_loss = smooth_loss.masked_fill(pad_mask, 0.0)
    nll_loss = nll_loss.sum()
    smooth_loss = smooth_loss.sum()
    eps_i = epsilon / (vocab - 1)
    loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss
    return loss, nll_loss
