"""The plain seq2seq decoder (`--seq2seq-decoder plain`, engine/train/plain_decoder.py): causal, its loss the token
cross-entropy, greedy consistent with it; a teacher trained with it learns, resumes, continues and scores, and a
decoder file of the other kind is refused by name; a teacher's scores are written in `codefusion eval
--predictions`'s format."""
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from codefusion.bench.compare import read_predictions
from codefusion.errors import CodeFusionError
from codefusion.train.config import TrainConfig
from codefusion.train.data import load_split
from codefusion.train.plain_decoder import PlainDecoder
from codefusion.train.trainer import train

from conftest import bash_data, train_config


@pytest.fixture
def decoder():
    torch.manual_seed(0)
    return PlainDecoder(vocab_size=40, d_model=32, heads=4, d_ff=64, layers=2, max_len=12, dropout=0.0).eval()


def test_plain_decoder_is_causal_and_reads_only_unmasked_memory(decoder):
    mem, mask = torch.randn(2, 5, 32), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    prev = torch.randint(2, 40, (2, 8))
    logits = decoder.logits(mem, mask, prev)
    later = prev.clone()
    later[:, 5:] = (later[:, 5:] + 7) % 38 + 2
    torch.testing.assert_close(decoder.logits(mem, mask, later)[:, :5], logits[:, :5], atol=1e-5, rtol=0)
    assert not torch.allclose(decoder.logits(mem, mask, later)[:, 5:], logits[:, 5:])
    padded = mem.clone()
    padded[0, 3:] = 100.0  # row 0's masked source positions
    torch.testing.assert_close(decoder.logits(padded, mask, prev), logits, atol=1e-5, rtol=0)


def test_plain_decoder_loss_is_the_mean_token_cross_entropy_without_pads(decoder):
    mem, mask = torch.randn(2, 4, 32), torch.ones(2, 4, dtype=torch.long)
    tgt = torch.tensor([[5, 6, 7, 1, 0, 0], [8, 9, 1, 0, 0, 0]])  # code, </s> (1), pads (0)
    logits = decoder.logits(mem, mask, torch.tensor([[0, 5, 6, 7, 1, 0], [0, 8, 9, 1, 0, 0]]))
    keep = tgt != 0
    expected = F.cross_entropy(logits[keep], tgt[keep])
    torch.testing.assert_close(decoder.loss(mem, mask, tgt), expected, atol=1e-6, rtol=0)


def test_plain_decoder_step_by_step_equals_the_whole_prefix(decoder):
    """The cached blocks of greedy decoding, fed one position at a time, give the logits of the full causal pass."""
    from codefusion.train.plain_decoder import _block_step, _cross_kv
    mem, mask = torch.randn(2, 6, 32), torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    prev = torch.randint(0, 40, (2, 9))
    past, steps = [None] * len(decoder.blocks.layers), []
    with torch.no_grad():
        cross = [_cross_kv(layer.multihead_attn, mem) for layer in decoder.blocks.layers]
        for n in range(prev.shape[1]):
            h = decoder.embed(prev[:, n:n + 1]) + decoder.pos.weight[n]
            for i, layer in enumerate(decoder.blocks.layers):
                h, past[i] = _block_step(layer, h, past[i], cross[i], mask == 0)
            steps.append(decoder.head(decoder.blocks.norm(h)))
        torch.testing.assert_close(torch.cat(steps, dim=1), decoder.logits(mem, mask, prev), atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="call .eval"):
        decoder.train().greedy(mem, mask, 4)


def test_plain_decoder_greedy_takes_the_argmax_and_pads_after_eos(decoder):
    mem, mask = torch.randn(3, 4, 32), torch.ones(3, 4, dtype=torch.long)
    with torch.no_grad():
        decoder.head.bias[1] = 4.0  # </s> likely enough that some rows end early
    out = decoder.greedy(mem, mask, max_len=10)
    assert out.shape[0] == 3 and out.shape[1] <= 10
    prev = torch.cat([torch.zeros(3, 1, dtype=torch.long), out[:, :-1]], dim=1)
    argmax = decoder.logits(mem, mask, prev).argmax(-1)
    for row, best in zip(out.tolist(), argmax.tolist()):
        end = row.index(1) + 1 if 1 in row else len(row)
        assert row[:end] == best[:end] and set(row[end:]) <= {0}
    assert any(1 in row for row in out.tolist())


def test_encoder_task_with_the_plain_decoder_learns_resumes_continues_and_scores(tmp_path, overfit_dir, capsys):
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.seq2seq import SEQ2SEQ, Seq2SeqTask, main, saved_kind, seq2seq_dev_check
    data = bash_data(tmp_path)
    cfg = train_config(tmp_path, data, task="encoder", init=str(overfit_dir), seq2seq_decoder="plain", max_steps=120,
                       batch_size=8, lr=3e-3, warmup=10, dev_rows=8, dev_every=0)
    out = train(cfg)
    model, tok, config = load_checkpoint(out)
    assert config["meta"]["history"][-1]["seq2seq_decoder"] == "plain" and saved_kind(out) == "plain"
    task = Seq2SeqTask.of_run(model, out).eval()
    assert task.kind == "plain" and isinstance(task.seq2seq, PlainDecoder)
    assert seq2seq_dev_check(task, tok, load_split(str(data), None, "dev"))["exact"] == 1.0
    pred = tmp_path / "teacher.jsonl"
    assert main([str(out), "--data", str(data / "nl2bash" / "dev.jsonl"), "--lang", "bash", "--predictions",
                 str(pred)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["metrics"]["exact_match@1"] == 1.0
    rows = read_predictions(pred)  # what `codefusion bench compare` reads
    assert len(rows) == scored["n"] and all(r["generations"] == [r["reference"]] for r in rows)
    assert all(r["metrics"]["template_match@1"] == 1.0 for r in rows)
    # --resume keeps the saved kind; asking for the other one names both
    assert train(TrainConfig(**{**cfg.__dict__, "max_steps": 122, "resume": True, "seq2seq_decoder": None}))
    with pytest.raises(CodeFusionError, match=f"{SEQ2SEQ} holds a plain decoder and this run asks for a t5 one"):
        train(TrainConfig(**{**cfg.__dict__, "max_steps": 124, "resume": True, "seq2seq_decoder": "t5"}))
    # --init from a plain run continues its decoder without the flag: it writes every pair from the first step
    cont = train(TrainConfig(**{**cfg.__dict__, "init": str(out), "out": str(tmp_path / "cont"), "max_steps": 1,
                                "lr": 1e-9, "warmup": 0, "dev_every": 1, "seq2seq_decoder": None}))
    log = [json.loads(line) for line in (cont / "train_log.jsonl").read_text().splitlines()]
    assert [row["dev"]["exact"] for row in log if "dev" in row][0] == 1.0


def test_a_decoder_file_without_its_kind_is_a_t5_one(tmp_path, overfit_dir):
    """Encoder runs written before the plain decoder carry no kind in their file: they hold T5 decoders."""
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.seq2seq import SEQ2SEQ, Seq2SeqTask, saved_kind
    model = load_checkpoint(overfit_dir)[0]
    save_file(Seq2SeqTask(model).decoder_state(), str(tmp_path / SEQ2SEQ))
    assert saved_kind(tmp_path) == "t5" and saved_kind(tmp_path / "none") is None and saved_kind(None) is None
    assert Seq2SeqTask.of_run(model, tmp_path).kind == "t5"
    with pytest.raises(CodeFusionError, match="holds a t5 decoder .* pass --seq2seq-decoder t5"):
        Seq2SeqTask(model, kind="plain").load(tmp_path)


def test_seq2seq_decoder_needs_a_seq2seq_task(tmp_path, data_dir, overfit_dir):
    from codefusion.checkpoint import load_checkpoint
    from codefusion.train.seq2seq import Seq2SeqTask
    with pytest.raises(CodeFusionError, match="--seq2seq-decoder picks the decoder of --task encoder or --aux-seq2seq"):
        train(train_config(tmp_path, data_dir, seq2seq_decoder="plain"))
    with pytest.raises(CodeFusionError, match="the seq2seq decoder is one of t5, plain, got 'gru'"):
        Seq2SeqTask(load_checkpoint(overfit_dir)[0], kind="gru")
