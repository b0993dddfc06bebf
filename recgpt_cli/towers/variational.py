"""The variational user tower (RecVAE, Shenbin et al. 2020, on Mult-VAE, Liang et al. 2018) — beyond the paper.

    x_u = the user's distinct history items as a multi-hot vector, divided by its norm; input dropout in training
    h_1 = LN(swish(W_1 x_u)),  h_k = LN(swish(W_k h_{k-1} + h_1 + ... + h_{k-1}))   (k = 2 .. n_layers)
    q(z | x_u) = N(mu(h), diag exp(logvar(h)));   h_u = mu at serving time, a sample z while training
    L_u = -sum_{i in x_u} log softmax(z . h_v)_i + gamma |x_u| KL(q(z | x_u) || p(z | x_u))    (beta(x) = gamma |x|)
    p(z | x_u) = 3/20 N(0, I) + 3/4 q_old(z | x_u) + 1/10 N(0, e^10 I)     per dimension (the composite prior)

q_old is a frozen copy of the encoder, refreshed after each epoch's encoder passes (`refresh_prior`): the KL pulls
each user's posterior towards where it was, not only towards N(0, I), so the strong regularisation that keeps the
model flat does not also wipe out what it learned. Training alternates as RecVAE does (towers/batches.py):
`encoder_passes` passes update the encoder, then one pass the item table; encoder_passes = 0 updates both at once.
Still a tower: h_u is one vector and scores are h_u . h_v, so hnswlib, beta fusion and `retrieve` are unchanged.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

# the composite prior's mixture weights of N(0, I), q_old and the wide N(0, e^10 I), and the wide one's log-variance
_PRIOR_WEIGHTS = (3 / 20, 3 / 4, 1 / 10)
_WIDE_LOGVAR = 10.0
_LN_EPS = 0.1  # RecVAE's LayerNorm epsilon: keeps near-empty histories from being blown up to unit variance


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; mu, exp(logvar))."""
    return -0.5 * (logvar + math.log(2 * math.pi) + (z - mu).pow(2) / logvar.exp())


class VariationalEncoder(nn.Module):
    """x_u (sparse, normalised) -> (mu, logvar) through densely connected swish + LayerNorm layers."""

    def __init__(self, n_items: int, hidden: int, latent: int, n_layers: int) -> None:
        super().__init__()
        self.inp = nn.EmbeddingBag(n_items, hidden, mode="sum")  # W_1 x_u for a sparse x_u, without densifying it
        self.inp_bias = nn.Parameter(torch.zeros(hidden))
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_layers - 1))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden, eps=_LN_EPS) for _ in range(n_layers))
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        bound = n_items**-0.5  # W_1 starts as nn.Linear(n_items, hidden) would (EmbeddingBag's N(0, 1) is far larger)
        nn.init.uniform_(self.inp.weight, -bound, bound)
        nn.init.uniform_(self.inp_bias, -bound, bound)

    def forward(self, items: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """EmbeddingBag inputs (one bag per user: its items and their x_u values) -> (mu, logvar): (B, latent)."""
        h = self.norms[0](F.silu(self.inp(items, offsets, per_sample_weights=weights) + self.inp_bias))
        total = h
        for layer, norm in zip(self.layers, self.norms[1:], strict=True):
            h = norm(F.silu(layer(h) + total))
            total = total + h
        return self.mu(h), self.logvar(h)


class VariationalUserTower(nn.Module):
    """The encoder, its frozen copy q_old (the composite prior's middle term) and the input dropout."""

    def __init__(self, n_items: int, hidden: int, latent: int, n_layers: int, dropout: float) -> None:
        super().__init__()
        self.n_items, self.dropout = n_items, dropout
        self.encoder = VariationalEncoder(n_items, hidden, latent, n_layers)
        self.prior_encoder = copy.deepcopy(self.encoder).requires_grad_(False)  # in state_dict: resume-exact

    @torch.no_grad()
    def refresh_prior(self) -> None:
        """q_old := the encoder now (once per epoch, before the item-table pass)."""
        self.prior_encoder.load_state_dict(self.encoder.state_dict())

    def bags(self, seq_items: torch.Tensor, seq_row: torch.Tensor, n_rows: int, drop: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Multi-hot x_u / ||x_u|| of each row as EmbeddingBag inputs (items, offsets, weights), a user's repeated
        items (several behaviours) counted once; `drop` > 0 zeroes that share of entries and scales the rest up."""
        key = torch.unique(seq_row * self.n_items + seq_items)  # sorted: rows contiguous, each (row, item) once
        row, items = key // self.n_items, key % self.n_items
        count = torch.bincount(row, minlength=n_rows)
        weights = count[row].float().rsqrt()
        if drop > 0:
            weights = F.dropout(weights, drop, training=True)
        offsets = torch.cumsum(count, 0) - count
        return items, offsets, weights

    def forward(self, seq_items: torch.Tensor, seq_row: torch.Tensor, n_rows: int) -> torch.Tensor:
        """mu: (B, latent), the serving h_u (no dropout, no sampling)."""
        return self.encoder(*self.bags(seq_items, seq_row, n_rows, 0.0))[0]

    def sample(self, seq_items: torch.Tensor, seq_row: torch.Tensor, n_rows: int, drop: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: (z (B, latent) sampled from q(z | x_u), its input dropped out unless not `drop`; KL(q || the
        composite prior) per row (B,))."""
        items, offsets, weights = self.bags(seq_items, seq_row, n_rows, 0.0)  # q_old reads the whole x_u
        dropped = F.dropout(weights, self.dropout, training=True) if drop and self.dropout > 0 else weights
        mu, logvar = self.encoder(items, offsets, dropped)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        with torch.no_grad():
            old_mu, old_logvar = self.prior_encoder(items, offsets, weights)
        zeros = torch.zeros_like(z)
        parts = [log_normal(z, zeros, zeros), log_normal(z, old_mu, old_logvar),
                 log_normal(z, zeros, torch.full_like(z, _WIDE_LOGVAR))]
        log_prior = torch.logsumexp(torch.stack([p + math.log(w) for p, w in zip(parts, _PRIOR_WEIGHTS,
                                                                                  strict=True)], -1), -1)
        kl = (log_normal(z, mu, logvar) - log_prior).sum(-1)  # one-sample Monte Carlo estimate, as RecVAE
        return z, kl
