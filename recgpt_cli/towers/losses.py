"""TAR objectives (paper §2.3.2): L_col, L_tag, L_cate and their sum L_TAR = L_col + a*L_tag + (1-a)*L_cate.

All three are the same sampled-softmax InfoNCE (`info_nce`): a query (user or tag) against its positive item and
a set of negative items, here the other positives of the batch (in-batch) plus uniformly sampled random items;
`l_cate` masks same-category candidates. `softmax_nll` is the full-softmax form the users and next-item batchings
use for L_col.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_INF = -1e9


def info_nce(
    q: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor | None = None,
    *,
    pos_ids: torch.Tensor | None = None,
    neg_ids: torch.Tensor | None = None,
    in_batch: bool = True,
    temperature: float = 1.0,
    log_q_pos: torch.Tensor | None = None,
    log_q_neg: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the batch of -log softmax of the positive among [positive, in-batch, random negatives].

    q, pos: (B, d); neg: (N, d) random negatives shared by the batch. pos_ids/neg_ids: item ids used to mask
    accidental hits (a "negative" that is the row's own positive). log_q_pos/log_q_neg: log sampling probability of
    each candidate; when given, it is subtracted from the logits (logQ correction, Yi et al. 2019), which stops
    popular items from being punished just for being sampled as negatives more often.
    """
    b = q.shape[0]
    logits_pos = (q * pos).sum(-1, keepdim=True) / temperature  # (B, 1)
    if log_q_pos is not None:
        logits_pos = logits_pos - log_q_pos[:, None]
    parts = [logits_pos]
    if in_batch and b > 1:
        lb = q @ pos.T / temperature  # (B, B): row i vs every positive of the batch
        if log_q_pos is not None:
            lb = lb - log_q_pos[None, :]
        same = torch.eye(b, dtype=torch.bool, device=q.device)
        if pos_ids is not None:
            same = same | (pos_ids[:, None] == pos_ids[None, :])
        parts.append(lb.masked_fill(same, NEG_INF))
    if neg is not None and len(neg):
        ln = q @ neg.T / temperature  # (B, N)
        if log_q_neg is not None:
            ln = ln - log_q_neg[None, :]
        if pos_ids is not None and neg_ids is not None:
            ln = ln.masked_fill(pos_ids[:, None] == neg_ids[None, :], NEG_INF)
        parts.append(ln)
    logits = torch.cat(parts, dim=1)
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def l_cate(
    h_t: torch.Tensor,
    h_pos: torch.Tensor,
    h_neg: torch.Tensor,
    pos_cat: torch.Tensor,
    neg_cat: torch.Tensor,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Category loss (§2.3.2, L_cate): tag vs an item of the SAME category (h_pos, one per row) against items of
    OTHER categories. h_neg: (N, d) candidates shared by the batch with categories neg_cat (N,); candidates in the
    row's own category (pos_cat) are masked, so only other-category items act as negatives."""
    logits_pos = (h_t * h_pos).sum(-1, keepdim=True) / temperature
    ln = (h_t @ h_neg.T / temperature).masked_fill(pos_cat[:, None] == neg_cat[None, :], NEG_INF)
    logits = torch.cat([logits_pos, ln], dim=1)
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def l_tar(loss_col: torch.Tensor, loss_tag: torch.Tensor, loss_cate: torch.Tensor, alpha: float = 0.5,
          tag_weight: float = 1.0) -> torch.Tensor:
    """L_TAR = L_col + w*(alpha*L_tag + (1-alpha)*L_cate) (§2.3.2; the paper's w = 1)."""
    return loss_col + tag_weight * (alpha * loss_tag + (1.0 - alpha) * loss_cate)


def softmax_nll(
    h_q: torch.Tensor, h_c: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Weighted -log softmax over ALL candidates: sum_i weights_i * -log softmax(h_q[rows_i] . h_c / T)[cols_i].

    h_q: (B, d) queries; h_c: (C, d) candidates (every item for a full softmax); (rows, cols): the positives, any
    number per query. With weights 1/N it is the mean cross-entropy (SASRec with CE, next-item batching); with
    1/(n_pos(u)·B) every user counts the same (Mult-DAE's multinomial likelihood, users batching)."""
    logp = torch.log_softmax(h_q @ h_c.T / temperature, dim=1)
    return -(logp[rows, cols] * weights).sum()
