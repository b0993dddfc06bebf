"""The TAR user-item-tag towers (paper §2.3.1), plain torch.

    h_v = DNN_item([EMB(item id); EMB(cat level 1..L); EMB(brand); EMB(Discretize(price)); EMB(Discretize(sales))])
    h_u = DNN_user([EMB(user id); s_u^b1; s_u^b2; ...])      s_u^b = pooled h_v over the user's behaviour-b items
    h_t = DNN_tag(MEAN(EMB(w_1) .. EMB(w_n)))

Beyond the paper, `user_tower="sequential"` replaces the pooled user tower by causal self-attention over the
user's ordered multi-behaviour history (SASRec, Kang & McAuley 2018): h_u is still one vector (the output at the
most recent position), so retrieval, beta fusion and hnswlib are unchanged.

`user_tower="variational"` (towers/variational.py) encodes the history as a RecVAE posterior: h_u = its mean.

`item_features=False` makes h_v = EMB(item id) alone (no feature DNN); with `normalize=False` and `init_std` 0.02 the
sequential tower is SASRec trained with cross-entropy.

Scores are inner products: y_col = h_u . h_v, y_sem = h_t . h_v (§2.3.1). Index 0 of every embedding table means
"missing / padding" so unknown features embed to a learned null vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recgpt_cli.towers.variational import VariationalUserTower


@dataclass
class TowerShapes:
    """Sizes the towers are built from (saved with the weights so `load_model` can rebuild them)."""

    n_users: int
    item_field_sizes: list[int]  # one embedding table per item field; field 0 is the item id
    behaviors: list[str] = field(default_factory=list)  # behaviour types with a user sequence, in a fixed order
    vocab_size: int = 2  # tag words; 0 = pad, 1 = unknown


def mlp(d_in: int, dim: int) -> nn.Sequential:
    """The DNN of each tower: one hidden ReLU layer, then a linear projection to the shared space."""
    return nn.Sequential(nn.Linear(d_in, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))


class ItemTower(nn.Module):
    def __init__(self, field_sizes: list[int], dim: int, id_residual: bool = False, features: bool = True) -> None:
        super().__init__()
        # id_residual: h_v = EMB(id) + DNN(...), a direct path for the id next to the feature MLP
        self.id_residual = id_residual
        # features=False: h_v = EMB(id) alone (SASRec's item table); only the id field is embedded
        sizes = field_sizes if features else field_sizes[:1]
        # field 0 (item id) has no padding row; every other field uses id 0 for "missing"
        self.emb = nn.ModuleList(nn.Embedding(n, dim, padding_idx=0 if i > 0 else None) for i, n in enumerate(sizes))
        self.dnn = mlp(dim * len(sizes), dim) if features else None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats: (N, n_fields) int64 feature ids -> h_v: (N, dim)."""
        if self.dnn is None:
            return self.emb[0](feats[:, 0])
        parts = [emb(feats[:, j]) for j, emb in enumerate(self.emb)]
        h = self.dnn(torch.cat(parts, dim=-1))
        return h + parts[0] if self.id_residual else h


class UserTower(nn.Module):
    """EMB(user id) + one pooled item-representation vector per behaviour type -> DNN.

    pooling="mean" is the paper's; "attention" (an option) weights each item by a learned query per behaviour,
    which lets a user's strongest signals dominate a long, mixed history.
    """

    def __init__(self, n_users: int, n_behaviors: int, dim: int, pooling: str = "mean", use_id: bool = True) -> None:
        super().__init__()
        self.n_behaviors = n_behaviors
        self.pooling = pooling
        self.dim = dim
        # use_id=False: a user is only what they did (no per-user free vector to overfit a short history)
        self.id_emb = nn.Embedding(n_users, dim) if use_id else None
        if pooling == "attention":
            self.att_query = nn.Parameter(torch.zeros(n_behaviors, dim))
        self.dnn = mlp(dim * (int(use_id) + n_behaviors), dim)

    def pool(self, h_uniq: torch.Tensor, inv: torch.Tensor, row: torch.Tensor, beh: torch.Tensor, n_rows: int
             ) -> torch.Tensor:
        """Pool item vectors into (n_rows, n_behaviors, dim).

        h_uniq: (U, dim) vectors of the distinct items in the batch's sequences; inv: (E,) which of them each
        sequence entry is; row: (E,) which batch row the entry belongs to; beh: (E,) its behaviour index.
        Empty sequences pool to zeros.
        """
        dim = h_uniq.shape[-1]
        n_slots = n_rows * self.n_behaviors
        slot = row * self.n_behaviors + beh
        if self.pooling == "attention":
            h_items = h_uniq[inv]
            logit = (h_items * self.att_query[beh]).sum(-1) / dim**0.5
            # softmax within each (row, behaviour) slot, stabilised by the slot max
            slot_max = torch.full((n_slots,), -1e9, device=h_uniq.device)
            slot_max = slot_max.scatter_reduce(0, slot, logit.detach(), reduce="amax")
            w = torch.exp(logit - slot_max[slot])
            total = torch.zeros(n_slots, dim, device=h_uniq.device).index_add(0, slot, h_items * w[:, None])
            norm = torch.zeros(n_slots, device=h_uniq.device).index_add(0, slot, w)
            pooled = total / norm.clamp_min(1e-9)[:, None]
        else:
            # mean = sparse (slot x item) averaging matrix @ item vectors: never materialises (E, dim)
            count = torch.bincount(slot, minlength=n_slots).clamp_min(1).float()
            avg = torch.sparse_coo_tensor(torch.stack([slot, inv]), 1.0 / count[slot], (n_slots, len(h_uniq)),
                                          check_invariants=False)
            pooled = torch.sparse.mm(avg, h_uniq)
        return pooled.view(n_rows, self.n_behaviors, dim)

    def forward(self, user_idx: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """user_idx: (B,), pooled: (B, n_behaviors, dim) -> h_u: (B, dim)."""
        parts = [pooled.flatten(1)] if self.id_emb is None else [self.id_emb(user_idx), pooled.flatten(1)]
        return self.dnn(torch.cat(parts, dim=-1))


def right_align(seq_row: torch.Tensor, n_rows: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Place flattened, chronological sequence entries into a right-aligned (n_rows, L) grid.

    seq_row: (E,) batch row of each entry, rows contiguous and in time order (`gather_sequences`). Returns
    (keep (E,) bool: the entry is among its row's `max_len` most recent, column (E,) of each kept entry, L); the
    most recent entry of every row lands in column L-1, so column L-1-d is "d steps before the latest"."""
    lengths = torch.bincount(seq_row, minlength=n_rows)
    starts = torch.cumsum(lengths, 0) - lengths
    from_end = lengths[seq_row] - 1 - (torch.arange(len(seq_row), device=seq_row.device) - starts[seq_row])
    keep = from_end < max_len
    width = int(min(int(lengths.max()) if n_rows else 0, max_len)) or 1
    return keep, width - 1 - from_end[keep], width


class CausalBlock(nn.Module):
    """Pre-norm transformer block (nanoGPT): x + Attn(LN(x)) under a causal mask, then x + FFN(LN(x))."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: (B, L, dim); allowed: (B, 1, L, L) bool, True where query position i may read key position j."""
        b, n, d = x.shape
        q, k, v = (t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for t in self.qkv(self.ln1(x)).split(d, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, n, d)))
        return x + self.ffn(self.ln2(x))


class SequentialUserTower(nn.Module):
    """Causal self-attention over the ordered history (SASRec-style; beyond the paper's mean pooling, §2.3.1).

        x_p = e(item_p) + EMB_pos(steps before the latest) + EMB_beh(behaviour_p);  n_layers causal blocks;  LN

    Position p only ever reads positions <= p (and never padding), so the output at p summarises the history up to
    p: training predicts item p+1 from it at every p; h_u is the output at the most recent position.
    """

    def __init__(self, n_behaviors: int, dim: int, max_len: int, n_layers: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"--dim {dim} must be a multiple of --heads {n_heads}")
        self.dim, self.max_len = dim, max_len
        self.pos_emb = nn.Embedding(max_len, dim)
        self.beh_emb = nn.Embedding(max(n_behaviors, 1), dim)
        self.blocks = nn.ModuleList(CausalBlock(dim, n_heads, dropout) for _ in range(n_layers))
        self.ln = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, h_items: torch.Tensor, beh: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """h_items: (B, L, dim) item vectors, right-aligned; beh: (B, L); valid: (B, L) bool -> (B, L, dim)."""
        n = h_items.shape[1]
        steps_back = torch.arange(n - 1, -1, -1, device=h_items.device)
        x = self.drop(h_items + self.pos_emb(steps_back)[None] + self.beh_emb(beh)) * valid[..., None]
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        # a query reads earlier real entries, and always itself (so padding rows never see an empty softmax)
        allowed = (causal[None] & valid[:, None, :]) | torch.eye(n, dtype=torch.bool, device=x.device)[None]
        for block in self.blocks:
            x = block(x, allowed[:, None])
        return self.ln(x)


class TagTower(nn.Module):
    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.word_emb = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.dnn = mlp(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, T) word ids, 0-padded -> h_t: (B, dim). A tag with no known words embeds as the pad mean (0)."""
        mask = (tokens > 0).float()
        mean = (self.word_emb(tokens) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
        return self.dnn(mean)


class TAR(nn.Module):
    """User-Item-Tag Retrieval: three parallel towers into one d-dimensional space (§2.3.1)."""

    def __init__(self, shapes: TowerShapes, dim: int = 64, pooling: str = "mean", normalize: bool = True,
                 use_user_id: bool = True, item_id_residual: bool = False, item_features: bool = True,
                 history_embedding: str = "tower",
                 user_tower: str = "pooled", max_seq_len: int = 200, n_layers: int = 2, n_heads: int = 1,
                 dropout: float = 0.2, init_std: float = 0.0, hidden_dim: int = 600,
                 history_dropout: float = 0.0, item_bias: bool = False) -> None:
        super().__init__()
        self.shapes = shapes
        self.dim = dim
        # history_embedding="separate": history items are looked up in their own id table instead of going through
        # the item tower, so "watched A" (input side) and "will like A" (target side) can differ, as in FISM/Mult-DAE
        self.history_emb = nn.Embedding(shapes.item_field_sizes[0], dim) if history_embedding == "separate" else None
        self.normalize = normalize  # unit vectors make beta-fusion and temperature behave the same across towers
        self.item_tower = ItemTower(shapes.item_field_sizes, dim, item_id_residual, item_features)
        self.user_tower = UserTower(shapes.n_users, len(shapes.behaviors), dim, pooling, use_user_id)
        # user_tower="sequential": the pooled tower above is replaced by causal self-attention over the history
        self.seq_tower = (SequentialUserTower(len(shapes.behaviors), dim, max_seq_len, n_layers, n_heads, dropout)
                          if user_tower == "sequential" else None)
        # user_tower="variational": a RecVAE encoder over the history multi-hot (its own input table) replaces both
        self.vae_tower = (VariationalUserTower(shapes.item_field_sizes[0], hidden_dim, dim, n_layers, history_dropout)
                          if user_tower == "variational" else None)
        self.tag_tower = TagTower(shapes.vocab_size, dim)
        if init_std > 0:  # small embeddings keep unnormalised dot-product logits near 0 at the start (SASRec)
            for emb in self.modules():
                if isinstance(emb, nn.Embedding):
                    nn.init.normal_(emb.weight, std=init_std)
                    if emb.padding_idx is not None:
                        with torch.no_grad():
                            emb.weight[emb.padding_idx].zero_()
        # item_bias: y = h_u . h_v + b_v, served as one more coordinate (h_v gets b_v, h_u a 1, h_t a 0), so an
        # inner-product index still finds the top items; starts at 0
        self.item_bias = nn.Embedding(shapes.item_field_sizes[0], 1) if item_bias else None
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)

    def unit(self, h: torch.Tensor) -> torch.Tensor:
        """Tower output into the shared space: unit length when `normalize`."""
        return F.normalize(h, dim=-1) if self.normalize else h

    @property
    def out_dim(self) -> int:
        """Length of the served vectors: dim, plus the bias coordinate."""
        return self.dim + int(self.item_bias is not None)

    def query(self, h: torch.Tensor, bias_weight: float = 1.0) -> torch.Tensor:
        """A user (bias_weight 1) or tag (0) tower output as a query of the shared space."""
        h = self.unit(h)
        if self.item_bias is None:
            return h
        return torch.cat([h, torch.full((len(h), 1), bias_weight, device=h.device)], dim=-1)

    def items(self, feats: torch.Tensor) -> torch.Tensor:
        h = self.unit(self.item_tower(feats))
        return h if self.item_bias is None else torch.cat([h, self.item_bias(feats[:, 0])], dim=-1)

    def tags(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.query(self.tag_tower(tokens), bias_weight=0.0)

    def users(
        self,
        user_idx: torch.Tensor,
        seq_items: torch.Tensor,
        seq_row: torch.Tensor,
        seq_beh: torch.Tensor,
        item_feats: torch.Tensor,
    ) -> torch.Tensor:
        """h_u for a batch of users from their flattened behaviour sequences.

        seq_items/seq_row/seq_beh: (E,) item index, batch row and behaviour of each sequence entry (the training
        target already removed by the caller). Item vectors come from the item tower, computed once per distinct item.
        """
        if self.vae_tower is not None:
            return self.query(self.vae_tower(seq_items, seq_row, len(user_idx)))
        if self.seq_tower is not None:
            return self.query(self.sequence_states(seq_items, seq_row, seq_beh, item_feats, len(user_idx))[0][:, -1])
        uniq, inv = torch.unique(seq_items, return_inverse=True)
        if len(uniq) == 0:
            dim = self.user_tower.dim
            pooled = torch.zeros(len(user_idx), self.user_tower.n_behaviors, dim, device=user_idx.device)
        else:
            h_uniq = self.item_tower(item_feats[uniq]) if self.history_emb is None else self.history_emb(uniq)
            pooled = self.user_tower.pool(h_uniq, inv, seq_row, seq_beh, len(user_idx))
        return self.query(self.user_tower(user_idx, pooled))

    def history_vectors(self, items: torch.Tensor, item_feats: torch.Tensor) -> torch.Tensor:
        """Input-side vectors of history items: item-tower outputs (paper) or their own id embeddings."""
        uniq, inv = torch.unique(items, return_inverse=True)
        h_uniq = self.item_tower(item_feats[uniq]) if self.history_emb is None else self.history_emb(uniq)
        return h_uniq[inv]

    def sequence_states(self, seq_items: torch.Tensor, seq_row: torch.Tensor, seq_beh: torch.Tensor,
                        item_feats: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sequential tower over flattened chronological entries -> (states (B, L, dim), items (B, L), valid (B, L)),
        right-aligned, the most recent `max_seq_len` entries per row; states are not yet normalised."""
        assert self.seq_tower is not None
        keep, col, width = right_align(seq_row, n_rows, self.seq_tower.max_len)
        row = seq_row[keep]
        dev = seq_items.device
        items = torch.zeros(n_rows, width, dtype=torch.long, device=dev)
        beh = torch.zeros(n_rows, width, dtype=torch.long, device=dev)
        valid = torch.zeros(n_rows, width, dtype=torch.bool, device=dev)
        h = torch.zeros(n_rows, width, self.dim, device=dev)
        items[row, col], beh[row, col], valid[row, col] = seq_items[keep], seq_beh[keep], True
        if keep.any():
            h = h.index_put((row, col), self.history_vectors(seq_items[keep], item_feats))
        return self.seq_tower(h, beh, valid), items, valid


class TAREnsemble(nn.Module):
    """K independently trained TARs as one retrieval model: every vector is the members' unit vectors concatenated
    and scaled by 1/sqrt(K), so a dot product is the members' mean cosine score and one hnswlib index serves all."""

    def __init__(self, members: list[TAR]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self._tars = members  # the same modules, typed for the calls below
        self.shapes = members[0].shapes
        self.dim = self.out_dim = sum(m.out_dim for m in members)

    def _cat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([F.normalize(p, dim=-1) for p in parts], dim=-1) / len(parts) ** 0.5

    def items(self, feats: torch.Tensor) -> torch.Tensor:
        return self._cat([m.items(feats) for m in self._tars])

    def tags(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._cat([m.tags(tokens) for m in self._tars])

    def users(self, user_idx: torch.Tensor, seq_items: torch.Tensor, seq_row: torch.Tensor, seq_beh: torch.Tensor,
              item_feats: torch.Tensor) -> torch.Tensor:
        return self._cat([m.users(user_idx, seq_items, seq_row, seq_beh, item_feats) for m in self._tars])
