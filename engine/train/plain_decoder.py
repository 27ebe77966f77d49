"""A standard pre-LN transformer decoder for the seq2seq teacher (``codefusion train --task encoder
--seq2seq-decoder plain``), the alternative to the T5 decoder of ``seq2seq.py``.

Why it exists (models/README.md, "Session 22"): on the same 256 Bash pairs, batches and 150 AdamW steps, E + this
decoder reached a cross-entropy of 1.81 where E + the T5 decoder reached 3.36 (2.09 with the T5 embeddings at
10 × lr). The autoregressive anchor of ANCHORS.md is this kind of model. It is built from ``torch.nn`` modules:
learned positions, ``nn.TransformerDecoder`` with ``norm_first``, a final LayerNorm and an untied output layer.

Token ids follow the T5 decoder's convention so that both write the same programs: the start token is pad (0),
generation stops at </s> (1), finished rows are padded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PlainDecoder(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, heads: int, d_ff: int, layers: int, max_len: int,
                 dropout: float, pad_id: int = 0, eos_id: int = 1):
        super().__init__()
        self.pad_id, self.eos_id, self.max_len = pad_id, eos_id, max_len
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len + 1, d_model)  # + 1: the start token
        layer = nn.TransformerDecoderLayer(d_model, heads, d_ff, dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, vocab_size)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def logits(self, mem: torch.Tensor, src_mask: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """mem (B, S, d) = E_s, src_mask (B, S), prev (B, n) decoder inputs (start token first) → (B, n, vocab)."""
        n = prev.shape[1]
        if n > self.pos.num_embeddings:
            raise ValueError(f"the plain decoder reads at most {self.pos.num_embeddings} tokens, got {n}")
        h = self.embed(prev) + self.pos.weight[:n]
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=prev.device, dtype=h.dtype)
        h = self.blocks(h, mem, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=src_mask == 0)
        return self.head(h)

    def loss(self, mem: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher-forced cross-entropy per target token (pads after </s> left out), as the T5 decoder's."""
        start = torch.full_like(tgt[:, :1], self.pad_id)
        logits = self.logits(mem, src_mask, torch.cat([start, tgt[:, :-1]], dim=1))
        return F.cross_entropy(logits.flatten(0, 1).float(), tgt.flatten(), ignore_index=self.pad_id)

    @torch.no_grad()
    def greedy(self, mem: torch.Tensor, src_mask: torch.Tensor, max_len: int) -> torch.Tensor:
        """(B, ≤ max_len) token ids, greedy, pads after </s>. Each step runs the new position alone through the
        blocks against the earlier positions' block inputs, kept per block: a pre-LN causal block's output at a
        position reads only positions up to it, so this equals ``logits`` on the whole prefix (in eval mode) at
        1/n of its cost; without it a 64-token program costs 32 times as many token-passes."""
        if self.training:
            raise RuntimeError("greedy decoding reuses earlier positions' states: call .eval() first")
        b, pad = mem.shape[0], src_mask == 0
        out = torch.full((b, 1), self.pad_id, dtype=torch.long, device=mem.device)
        done = torch.zeros(b, dtype=torch.bool, device=mem.device)
        past: list[torch.Tensor | None] = [None] * len(self.blocks.layers)  # per block: (B, n, d) normed inputs
        cross = [_cross_kv(layer.multihead_attn, mem) for layer in self.blocks.layers]  # E_s projected once
        for n in range(min(max_len, self.max_len)):
            h = self.embed(out[:, -1:]) + self.pos.weight[n]  # (B, 1, d)
            for i, layer in enumerate(self.blocks.layers):
                h, past[i] = _block_step(layer, h, past[i], cross[i], pad)
            nxt = self.head(self.blocks.norm(h))[:, -1].argmax(-1).masked_fill(done, self.pad_id)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == self.eos_id
            if bool(done.all()):
                break
        return out[:, 1:]


def _cross_kv(attn: nn.MultiheadAttention, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cross-attention's keys and values of E_s (B, S, d), each (B, heads, S, d / heads): the same at every
    step, so greedy decoding projects them once (re-projected each step they were most of its time)."""
    d, h = attn.embed_dim, attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    k, v = F.linear(mem, w[d:2 * d], b[d:2 * d]), F.linear(mem, w[2 * d:], b[2 * d:])
    return tuple(t.unflatten(-1, (h, d // h)).transpose(1, 2) for t in (k, v))


def _block_step(layer: nn.TransformerDecoderLayer, x: torch.Tensor, past: torch.Tensor | None,
                cross: tuple[torch.Tensor, torch.Tensor], mem_pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pre-LN decoder block (``norm_first``, eval mode) on the newest position x (B, 1, d), its self-attention
    reading ``past`` (B, n, d: the block's normed inputs at the earlier positions) and x, its cross-attention the
    keys and values of ``_cross_kv``; returns (output, past + x)."""
    q = layer.norm1(x)
    keys = q if past is None else torch.cat([past, q], dim=1)
    x = x + layer.self_attn(q, keys, keys, need_weights=False)[0]
    attn, (k, v) = layer.multihead_attn, cross
    d, h = attn.embed_dim, attn.num_heads
    qc = F.linear(layer.norm2(x), attn.in_proj_weight[:d], attn.in_proj_bias[:d]).unflatten(-1, (h, d // h))
    o = F.scaled_dot_product_attention(qc.transpose(1, 2), k, v, attn_mask=~mem_pad[:, None, None, :])
    x = x + attn.out_proj(o.transpose(1, 2).flatten(2))
    x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
    return x, keys
