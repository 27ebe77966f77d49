"""CodeBERTScore (Zhou et al. 2023), computed only from a local model directory the user names.

    h(x)  = L2-normalised hidden states of layer ``layer`` for the tokens of x (specials dropped)
    P     = mean over prediction tokens of the best cosine to a reference token
    R     = mean over reference tokens of the best cosine to a prediction token
    F1    = 2PR / (P + R)

No idf weighting and no source context (the original offers both). The layer defaults to 7 of 12,
the setting the CodeBERTScore authors ran for several languages; pass another with ``layer``.
Nothing is downloaded: the directory must hold a transformers model and its tokenizer.
"""
from __future__ import annotations

import torch

from ..errors import CodeFusionError


def _load(path: str):
    from transformers import AutoModel, AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CodeFusionError(f"--codebert {path}: not a local transformers model with a tokenizer ({first})") from None
    return tok, model.eval()


@torch.no_grad()
def _embed(tok, model, texts: list[str], layer: int) -> list[torch.Tensor]:
    enc = tok(texts, padding=True, truncation=True, max_length=512, return_tensors="pt",
              return_special_tokens_mask=True)
    special = enc.pop("special_tokens_mask").bool()
    hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                   output_hidden_states=True).hidden_states[layer]  # (B, L, H)
    keep = enc["attention_mask"].bool() & ~special
    hidden = torch.nn.functional.normalize(hidden.float(), dim=-1)
    return [hidden[i][keep[i]] for i in range(len(texts))]


def f1_from_embeddings(pred: torch.Tensor, ref: torch.Tensor) -> float:
    """Greedy-matching F1 of two (tokens, H) unit-norm embedding sets; 0 when either is empty."""
    if not len(pred) or not len(ref):
        return 0.0
    sim = pred @ ref.T
    p, r = sim.max(dim=1).values.mean(), sim.max(dim=0).values.mean()
    return float(2 * p * r / (p + r)) if p + r > 0 else 0.0


def codebert_scores(path: str, preds: list[str], refs: list[str], layer: int | None = None,
                    batch_size: int = 32) -> list[float]:
    tok, model = _load(path)
    n_layers = model.config.num_hidden_layers
    layer = round(n_layers * 7 / 12) if layer is None else layer
    if not 0 <= layer <= n_layers:
        raise CodeFusionError(f"CodeBERTScore layer {layer} is outside the model's 0..{n_layers}")
    scores = []
    for i in range(0, len(preds), batch_size):
        p = _embed(tok, model, preds[i:i + batch_size], layer)
        r = _embed(tok, model, refs[i:i + batch_size], layer)
        scores += [f1_from_embeddings(a, b) for a, b in zip(p, r)]
    return scores
