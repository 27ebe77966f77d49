"""--rollout-snap: a rollout row's target becomes the training program nearest to where the model heads,
for the chosen languages and the rollout rows only, the row's own program winning ties; a run records it."""
import json

import pytest
import torch

from codefusion.errors import CodeFusionError
from codefusion.train.config import TrainConfig
from codefusion.train.snap import ProgramBank, snap_targets
from codefusion.train.trainer import train

from conftest import PAIRS, write_data


class FakeTok:
    pad_id, eos_id = 0, 1

    def encode_target(self, ids, n):
        out = torch.zeros(len(ids), n, dtype=torch.int64)
        for r, toks in enumerate(ids):
            seq = [*toks, 1][:n]
            out[r, :len(seq)] = torch.tensor(seq)
        return out


def one_hot_embed(vocab=10):
    table = torch.eye(vocab)
    return lambda ids: table[ids]


def test_bank_holds_each_languages_distinct_programs_that_fit():
    bank = ProgramBank([[5, 6], [5, 6], [7], [2, 3, 4, 5], [8]], ["cf", "cf", "cf", "cf", "bash"], ("cf",), FakeTok())
    assert bank.langs() == ("cf",)  # bash is not snapped
    assert bank.rows("cf", 3).tolist() == [[5, 6, 1], [7, 1, 0]]  # the repeat once; [2, 3, 4, 5] + </s> does not fit
    assert bank.rows("cf", 6).tolist() == [[5, 6, 1, 0, 0, 0], [7, 1, 0, 0, 0, 0], [2, 3, 4, 5, 1, 0]]
    assert bank.rows("python", 4).shape == (0, 4)


def test_a_row_heading_for_another_program_learns_that_program():
    tok = FakeTok()
    bank = ProgramBank([[5, 6], [7, 8], [9]], ["cf", "cf", "bash"], ("cf", "bash"), tok)
    embed = one_hot_embed()
    tgt = tok.encode_target([[5, 6], [5, 6], [5, 6], [9]], 3)
    x0 = embed(tok.encode_target([[7, 8], [5, 6], [7, 8], [7, 8]], 3))  # rows 0, 2, 3 head for 7 8
    x0[0] += 0.1 * torch.randn_like(x0[0])  # near it, not on it
    rows = torch.tensor([True, True, False, True])
    new, changed = snap_targets(embed, tgt, x0, rows, ["cf", "cf", "cf", "bash"], bank)
    assert new[0].tolist() == [7, 8, 1]  # snapped
    assert new[1].tolist() == [5, 6, 1]  # already heads for its own
    assert new[2].tolist() == [5, 6, 1]  # not a rollout row
    assert new[3].tolist() == [9, 1, 0]  # bash's bank holds only 9 ("7 8" is cf's): nothing nearer than its own
    assert changed == 1 and tgt[0].tolist() == [5, 6, 1]  # the caller's targets are untouched


def test_the_own_program_wins_a_tie():
    tok = FakeTok()
    bank = ProgramBank([[5], [6]], ["cf", "cf"], ("cf",), tok)
    embed = one_hot_embed()
    tgt = tok.encode_target([[5]], 2)
    x0 = (embed(tok.encode_target([[5]], 2)) + embed(tok.encode_target([[6]], 2))) / 2  # halfway between
    new, changed = snap_targets(embed, tgt, x0, torch.tensor([True]), ["cf"], bank)
    assert new.tolist() == tgt.tolist() and changed == 0


def test_a_run_with_snap_logs_and_records_it(tmp_path):
    data = write_data(tmp_path / "data", {"nl2bash": PAIRS["nl2bash"]})
    out = train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "run"), max_steps=3, batch_size=4,
                            dev_rows=0, dtype="float32", warmup=1, rollout_share=0.5, rollout_steps=2,
                            rollout_t_max=0.3, rollout_snap="bash", rollout_snap_t_max=0.5, log_every=1))
    run = json.loads((out / "config.json").read_text())["meta"]["history"][-1]
    assert run["rollout_snap"] == "bash" and run["rollout_snap_t_max"] == 0.5
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(0 <= row["snapped"] <= 2 for row in logged if "loss" in row)  # 2 rollout rows of 4


@pytest.mark.parametrize("kwargs, message", [
    ({"rollout_snap": "cf"}, "give --rollout-share too"),
    ({"rollout_snap": "sql", "rollout_share": 0.5}, "--rollout-snap takes languages"),
    ({"rollout_snap": "cf", "rollout_share": 0.5, "rollout_snap_t_max": 0.0}, "--rollout-snap-t-max is a fraction"),
])
def test_bad_snap_options_fail_with_one_line(tmp_path, kwargs, message):
    with pytest.raises(CodeFusionError, match=message):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "run"), max_steps=1, **kwargs))
