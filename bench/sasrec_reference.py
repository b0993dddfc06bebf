"""A plain SASRec (Kang & McAuley 2018) trained with full-softmax cross-entropy: the reference for the sequential tower.

Independent of recgpt_cli/towers on purpose (torch's own nn.TransformerEncoder, item ids only, input and output
item embeddings shared, left-padded to max_len), trained on the same stored split's TRAIN interactions in time
order until validation NDCG@10 has not improved for 30 epochs ("to convergence"), scored with
recgpt_cli/metrics.py. Settings as SASRec's for sparse data (2 blocks, 1 head, dim 64, dropout 0.2, the latest 50
items) with the sequential tower's batch 64 and lr 2e-3.

    python bench/sasrec_reference.py --work DIR      # DIR/ml100k.duckdb from bench_retrieval.py (loo split)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recgpt_cli.metrics import compute_metrics, full_rank_topk  # noqa: E402
from recgpt_cli.splits import SplitData  # noqa: E402


class SASRec(nn.Module):
    def __init__(self, n_items: int, dim: int = 64, max_len: int = 50, layers: int = 2, heads: int = 1,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)  # 0 = padding, item i -> i + 1
        self.pos = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.max_len, self.heads = max_len, heads
        for emb in (self.item, self.pos):  # RecBole's SASRec: normal(0, 0.02), no sqrt(dim) scaling
            nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq: (B, L) item ids + 1, left-padded with 0 -> (B, L, dim) states."""
        n = seq.shape[1]
        x = self.drop(self.item(seq) + self.pos(torch.arange(n))[None])
        pad = seq == 0
        # -1e9 (not -inf, as the original) where a query may not read: the future and padding; itself always
        blocked = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)[None] | pad[:, None, :]
        blocked &= ~torch.eye(n, dtype=torch.bool)[None]
        mask = torch.zeros(blocked.shape).masked_fill(blocked, -1e9).repeat_interleave(self.heads, 0)
        return self.ln(self.encoder(x * (~pad)[..., None], mask=mask))

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        return states @ self.item.weight[1:].T  # (.., n_items)


def train_sequences(split: SplitData, max_len: int) -> np.ndarray:
    """(n_users, max_len + 1) train items + 1 in time order, left-padded with 0."""
    order = np.lexsort((split.train.item, split.train.ts, split.train.user))
    users, items = split.train.user[order], split.train.item[order] + 1
    out = np.zeros((split.n_users, max_len + 1), dtype=np.int64)
    starts = np.searchsorted(users, np.arange(split.n_users + 1))
    for u in range(split.n_users):
        seq = items[starts[u] : starts[u + 1]][-(max_len + 1):]
        if len(seq):
            out[u, -len(seq):] = seq
    return out


@dataclass
class Reference:
    valid_ndcg10: float
    test: dict[str, float]
    valid_topk: np.ndarray
    test_topk: np.ndarray
    epochs: int
    seconds: float


def _topk(net: SASRec, seqs: torch.Tensor, split: SplitData, phase: str) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        scores = torch.cat([net.logits(net(seqs[i : i + 256, 1:])[:, -1]) for i in range(0, len(seqs), 256)])
    return full_rank_topk(scores, split.exclude_for(phase), 10)


def train_reference(split: SplitData, *, seed: int = 0, max_len: int = 50, epochs: int = 400, patience: int = 6,
                    eval_every: int = 5, lr: float = 2e-3, batch_size: int = 64, log: bool = True) -> Reference:
    """Train until `patience` validations without gain; the best validation epoch's weights are scored."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    seqs = torch.as_tensor(train_sequences(split, max_len))
    net = SASRec(split.n_items, max_len=max_len)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    users = np.flatnonzero((seqs > 0).sum(1).numpy() >= 2)
    best, best_state, bad, seconds, epoch = -1.0, None, 0, 0.0, 0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        net.train()
        users = rng.permutation(users)
        for i in range(0, len(users), batch_size):
            batch = seqs[users[i : i + batch_size]]
            inp, tgt = batch[:, :-1], batch[:, 1:]
            use = (inp > 0) & (tgt > 0)
            loss = nn.functional.cross_entropy(net.logits(net(inp)[use]), tgt[use] - 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds += time.perf_counter() - t0
        if epoch % eval_every == 0:
            ndcg = compute_metrics(_topk(net, seqs, split, "valid"), split, "valid", ks=(10,))["ndcg@10"]
            if log:
                print(f"SASRec epoch {epoch}: loss {loss.item():.4f} valid NDCG@10 {ndcg:.4f}", file=sys.stderr)
            if ndcg > best:
                best, bad = ndcg, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
    assert best_state is not None
    net.load_state_dict(best_state)
    test_topk = _topk(net, seqs, split, "test")
    return Reference(best, compute_metrics(test_topk, split, "test", ks=(10,)), _topk(net, seqs, split, "valid"),
                     test_topk, epoch, seconds)


def main() -> None:
    from recgpt_cli.splits import load_split, make_split
    from recgpt_cli.store import open_db

    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--protocol", default="loo")
    args = ap.parse_args()
    torch.set_num_threads(1)
    con = open_db(Path(args.work) / "ml100k.duckdb")
    make_split(con, args.protocol)
    ref = train_reference(load_split(con, args.protocol))
    print(f"SASRec reference: valid NDCG@10 {ref.valid_ndcg10:.4f}  test {ref.test}  epochs {ref.epochs} "
          f"{ref.seconds:.0f}s")


if __name__ == "__main__":
    main()
