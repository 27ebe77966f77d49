"""Does the model use its condition? Token accuracy of one-shot x̂0 at fixed noise levels, with the
right E_s and with E_s of another row (shuffled), on dev rows.

    python -m codefusion.train.probe CHECKPOINT --data DATA_DIR [--rows 96] [--n 32]

For each t: x_t = √ᾱ_t L(y) + √(1−ᾱ_t) ε, then argmax H(D(N(x_t, t, E_s))) against y on non-pad
positions. A model that conditions loses accuracy when E_s is shuffled, most at high t, where x_t
carries almost nothing; equal columns mean it denoises from x_t alone and sampling from pure noise
cannot follow the request.
"""
from __future__ import annotations

import argparse
import json

import torch

from ..checkpoint import load_checkpoint
from .data import load_split

LEVELS = (300, 600, 900, 1100, 1199)


@torch.no_grad()
def probe(ckpt: str, data: str, rows: int = 96, n: int = 32, seed: int = 0) -> list[dict]:
    model, tok, _ = load_checkpoint(ckpt)
    dev = load_split(data, None, "dev")
    dev = dev[:: max(1, len(dev) // rows)]
    code = tok.encode_code([e.code for e in dev], [e.lang for e in dev])
    keep = [i for i, c in enumerate(code) if len(c) + 1 <= n][:rows]
    dev, code = [dev[i] for i in keep], [code[i] for i in keep]
    y = tok.encode_target(code, n)
    src = tok.encode_source([], [e.lang for e in dev], model.cfg.max_source_len, tok.encode_text([e.nl for e in dev]))
    g = torch.Generator().manual_seed(seed)
    mem, shuffled = model.encode(src.ids, src.mask), torch.roll(torch.arange(len(dev)), 1)
    x0, content = model.embed(y), y != 0
    out = []
    for t in LEVELS:
        abar = model.alphas_cumprod[t]
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * torch.randn(x0.shape, generator=g)
        tt = torch.full((len(dev),), t)
        row = {"t": t, "rows": len(dev)}
        for name, m, mask in (("right", mem, src.mask), ("shuffled", mem[shuffled], src.mask[shuffled])):
            ids = model.logits(model.decode(model.predict_x0(x_t, tt, m, mask), m, mask)).argmax(-1)
            row[f"acc_{name}"] = round(float((ids == y)[content].float().mean()), 4)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--rows", type=int, default=96)
    p.add_argument("--n", type=int, default=32)
    a = p.parse_args(argv)
    for row in probe(a.checkpoint, a.data, a.rows, a.n):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
