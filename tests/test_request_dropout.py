"""Request token dropout (--request-dropout): body tokens deleted at the asked rate, the language tag and </s>
kept, the survivors closed up in order, and a run that uses it shows E the shortened requests and records it."""
import json

import pytest
import torch

from codefusion.errors import CodeFusionError
from codefusion.train.config import TrainConfig
from codefusion.train.request_dropout import drop_request_tokens
from codefusion.train.trainer import train

from conftest import PAIRS, write_data

PAD = 0


def rows(lengths: list[int], S: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """[<lang>=1] + body 100.. + [</s>=2] + pads, one row per total length."""
    ids = torch.full((len(lengths), S), PAD)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.tensor([1, *range(100, 100 + n - 2), 2])
    return ids, ids != PAD


def test_no_dropout_returns_the_request_untouched():
    ids, mask = rows([5, 3, 12])
    got_ids, got_mask = drop_request_tokens(ids, mask, 0.0, PAD)
    assert got_ids is ids and got_mask is mask


def test_survivors_close_up_in_order_with_their_tag_and_end():
    ids, mask = rows([12, 7, 3, 2] * 50)
    new_ids, new_mask = drop_request_tokens(ids, mask, 0.5, PAD, torch.Generator().manual_seed(3))
    assert new_ids.shape == ids.shape and new_mask.dtype == torch.bool
    for before, after, m in zip(ids.tolist(), new_ids.tolist(), new_mask.tolist()):
        n = sum(m)
        assert m == [True] * n + [False] * (len(m) - n)  # kept tokens first, then pads
        assert after[n:] == [PAD] * (len(m) - n)
        kept = after[:n]
        assert kept[0] == 1 and kept[-1] == 2  # the language tag and </s> are never dropped
        body = [t for t in before if t >= 100]
        assert kept[1:-1] == [t for t in body if t in kept[1:-1]]  # a subsequence, order kept
    # rows with no body ([<lang>, </s>]) have nothing to lose
    assert all(new_mask[r].sum() == 2 for r in range(3, 200, 4))


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_the_body_loses_the_asked_share(p):
    ids, mask = rows([12] * 4000)  # 10 body tokens a row: 40,000 draws, binomial sd of the share < 0.003
    _, new_mask = drop_request_tokens(ids, mask, p, PAD, torch.Generator().manual_seed(0))
    lost = 1 - (new_mask.sum() - 2 * 4000) / (10 * 4000)
    assert abs(float(lost) - p) < 0.015


def test_a_run_shows_e_the_shortened_requests_and_records_it(tmp_path, monkeypatch):
    from codefusion.model.codefusion import CodeFusionModel
    seen = []
    encode = CodeFusionModel.encode

    def recording_encode(self, ids, mask):
        seen.append((ids.clone(), mask.clone()))
        return encode(self, ids, mask)

    monkeypatch.setattr(CodeFusionModel, "encode", recording_encode)
    data = write_data(tmp_path / "data", {"nl2bash": PAIRS["nl2bash"]})
    kw = dict(preset="tiny", data=str(data), max_steps=3, batch_size=4, dev_rows=0, dtype="float32", warmup=1)
    train(TrainConfig(out=str(tmp_path / "plain"), **kw))
    plain = [m.sum().item() for _, m in seen]
    seen.clear()
    out = train(TrainConfig(out=str(tmp_path / "drop"), request_dropout=0.5, **kw))
    dropped = [m.sum().item() for _, m in seen]
    assert len(plain) == len(dropped) == 3 and sum(dropped) < sum(plain)  # same batches (seed), fewer tokens
    for _, mask in seen:  # each request closed up: its tokens first, then pads
        n = mask.sum(dim=1, keepdim=True)
        assert torch.equal(mask, torch.arange(mask.shape[1]) < n)
    run = json.loads((out / "config.json").read_text())["meta"]["history"][-1]
    assert run["request_dropout"] == 0.5
    plain_run = json.loads((tmp_path / "plain" / "config.json").read_text())["meta"]["history"][-1]
    assert "request_dropout" not in plain_run


@pytest.mark.parametrize("kw, message", [({"request_dropout": 1.0}, "--request-dropout is a probability"),
                                         ({"request_dropout": -0.1}, "--request-dropout is a probability"),
                                         ({"request_dropout": 0.2, "task": "pretrain"},
                                          "--request-dropout deletes words of the requests of --task finetune")])
def test_bad_request_dropout_is_refused(tmp_path, kw, message):
    with pytest.raises(CodeFusionError, match=message):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), max_steps=1, **kw))
