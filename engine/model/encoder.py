"""Encoder E: a T5 encoder (CodeT5-small shape in the ``paper`` preset) built with transformers.

Built from scratch from the preset, or loaded from a local CodeT5 / T5 directory (never
downloaded: ``local_files_only``). Output E_s: (B, S, enc_d_model).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import T5Config, T5EncoderModel

from ..config import ModelConfig
from ..errors import CheckpointError


def t5_config(cfg: ModelConfig) -> T5Config:
    return T5Config(vocab_size=cfg.vocab_size, d_model=cfg.enc_d_model, d_kv=cfg.enc_d_model // cfg.enc_heads,
                    d_ff=cfg.enc_d_ff, num_layers=cfg.enc_layers, num_heads=cfg.enc_heads,
                    dropout_rate=cfg.dropout, feed_forward_proj="relu", pad_token_id=0, eos_token_id=1,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.t5 = T5EncoderModel(t5_config(cfg))

    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """src_ids, src_mask: (B, S) → E_s (B, S, enc_d_model)."""
        return self.t5(input_ids=src_ids, attention_mask=src_mask).last_hidden_state

    @staticmethod
    def codet5_vocab_size(path: str | Path) -> int:
        try:
            return T5Config.from_pretrained(str(path), local_files_only=True).vocab_size
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a T5/CodeT5 directory: {str(e).splitlines()[0]}") from None

    def load_codet5(self, path: str | Path, vocab_size: int) -> None:
        """Copy weights from a local CodeT5/T5 checkpoint directory (its shape must match the preset)."""
        try:
            pretrained = T5EncoderModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load a T5 encoder from {path}: {str(e).splitlines()[0]}") from None
        pretrained.resize_token_embeddings(vocab_size)
        missing, unexpected = self.t5.load_state_dict(pretrained.state_dict(), strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path} does not match the encoder shape of this preset "
                                  f"(first mismatch: {(missing or unexpected)[0]}); pick the matching preset")
