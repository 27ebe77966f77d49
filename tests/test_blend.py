"""`codefusion pack --blend`: a weighted mean of checkpoints of one architecture and tokenizer."""
import dataclasses
import json

import pytest
import torch

from codefusion.checkpoint import load_checkpoint, save_checkpoint
from codefusion.cli import main
from codefusion.model import CodeFusionModel
from codefusion.tokenizer import CodeTokenizer


def _random_copy(model, seed):
    torch.manual_seed(seed)
    other = CodeFusionModel(model.cfg).eval()
    with torch.no_grad():
        for p in other.parameters():  # zero-started layers too, so every tensor differs from the base
            p.add_(torch.randn_like(p))
    return other


@pytest.fixture
def three(tmp_path, tiny_model, tokenizer):
    models = [tiny_model, _random_copy(tiny_model, 1), _random_copy(tiny_model, 2)]
    paths = [save_checkpoint(tmp_path / f"m{i}", m, tokenizer, {"history": [{"task": "finetune", "seed": i}]})
             for i, m in enumerate(models)]
    return models, paths


def test_blend_is_the_weighted_mean_of_every_tensor(tmp_path, three, capsys):
    (a, b, c), (pa, pb, pc) = three
    out = tmp_path / "mix"
    assert main(["pack", "--model", str(pa), "--blend", f"{pb}=0.25", "--blend", f"{pc}=0.15",
                 "--dtype", "float32", "--out", str(out)]) == 0
    assert "0.6·" in capsys.readouterr().err
    mixed, _, config = load_checkpoint(out)
    states = [m.state_dict() for m in (a, b, c)]
    for name, got in mixed.state_dict().items():
        want = 0.6 * states[0][name] + 0.25 * states[1][name] + 0.15 * states[2][name]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(mixed.state_dict()["embed.weight"], a.state_dict()["embed.weight"])
    # T5 ties its input embedding to `shared`: the blend keeps the two one tensor
    assert mixed.encoder.t5.shared.weight.data_ptr() == mixed.encoder.t5.encoder.embed_tokens.weight.data_ptr()
    history = config["meta"]["history"]
    assert history[0] == {"task": "finetune", "seed": 0}
    assert history[-1] == {"task": "blend", "base_weight": 0.6, "blended": [
        {"model": str(pb), "weight": 0.25, "last": {"task": "finetune", "seed": 1}},
        {"model": str(pc), "weight": 0.15, "last": {"task": "finetune", "seed": 2}}], "unchanged": []}


def test_blend_records_the_modules_every_checkpoint_shares(tmp_path, tiny_model, tokenizer):
    """Continuations with a frozen encoder blend into a model with that encoder, bit for bit, and say so."""
    other = _random_copy(tiny_model, 3)
    other.encoder.load_state_dict(tiny_model.encoder.state_dict())
    pa = save_checkpoint(tmp_path / "a", tiny_model, tokenizer)
    pb = save_checkpoint(tmp_path / "b", other, tokenizer)
    assert main(["pack", "--model", str(pa), "--blend", f"{pb}=0.3", "--dtype", "float32",
                 "--out", str(tmp_path / "m")]) == 0
    mixed, _, config = load_checkpoint(tmp_path / "m")
    assert config["meta"]["history"][-1]["unchanged"] == ["encoder"]
    for name, t in tiny_model.encoder.state_dict().items():
        assert torch.equal(mixed.encoder.state_dict()[name], t), name


def test_blend_in_bf16_rounds_the_fp32_mean_once(tmp_path, three):
    (a, b, _), (pa, pb, _) = three
    assert main(["pack", "--model", str(pa), "--blend", f"{pb}=0.5", "--out", str(tmp_path / "bf")]) == 0
    mixed, _, _ = load_checkpoint(tmp_path / "bf")
    sa, sb = a.state_dict(), b.state_dict()
    for name, got in mixed.state_dict().items():
        assert torch.equal(got, (0.5 * sa[name] + 0.5 * sb[name]).to(torch.bfloat16).float()), name


@pytest.mark.parametrize("spec, message", [
    ("{b}", "DIR=WEIGHT"), ("{b}=1.5", "0 < WEIGHT < 1"), ("{b}=0", "0 < WEIGHT < 1"), ("{b}=half", "DIR=WEIGHT"),
    ("=0.3", "DIR=WEIGHT")])
def test_bad_blend_spec_is_one_line(tmp_path, three, capsys, spec, message):
    _, (pa, pb, _) = three
    assert main(["pack", "--model", str(pa), "--blend", spec.format(b=pb), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_weights_must_leave_the_base_a_share(tmp_path, three, capsys):
    _, (pa, pb, pc) = three
    assert main(["pack", "--model", str(pa), "--blend", f"{pb}=0.5", "--blend", f"{pc}=0.5",
                 "--out", str(tmp_path / "x")]) == 2
    assert "add up to 1" in capsys.readouterr().err


def test_other_architecture_is_refused_naming_the_field(tmp_path, three, tokenizer, capsys):
    (a, _, _), (pa, _, _) = three
    deeper = CodeFusionModel(dataclasses.replace(a.cfg, denoiser_layers=a.cfg.denoiser_layers + 1))
    pd = save_checkpoint(tmp_path / "deep", deeper, tokenizer)
    assert main(["pack", "--model", str(pa), "--blend", f"{pd}=0.5", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "denoiser_layers" in err and "one architecture" in err


def test_other_tokenizer_is_refused(tmp_path, three, tokenizer, capsys):
    (a, _, _), (pa, _, _) = three
    other_tok = CodeTokenizer.train(["echo one two three", "ls -la /tmp", "print(x)"] * 8, vocab_size=a.cfg.vocab_size)
    pt = save_checkpoint(tmp_path / "tok", a, other_tok)
    assert main(["pack", "--model", str(pa), "--blend", f"{pt}=0.5", "--out", str(tmp_path / "x")]) == 2
    assert "tokenizer's vocabulary differs from --model's" in capsys.readouterr().err
    assert json.loads((pa / "config.json").read_text())["meta"]["history"] == [{"task": "finetune", "seed": 0}]


def test_other_bracket_spelling_is_refused_naming_it(tmp_path, three, tokenizer, capsys):
    """Same vocabulary, but one checkpoint was trained with --split-brackets cf: the refusal says so."""
    (a, _, _), (pa, _, _) = three
    pt = save_checkpoint(tmp_path / "split", a, CodeTokenizer(tokenizer.tok, split_brackets=["cf"]))
    assert main(["pack", "--model", str(pa), "--blend", f"{pt}=0.5", "--out", str(tmp_path / "x")]) == 2
    assert "splits brackets for cf against none for --model's (train --split-brackets)" in capsys.readouterr().err
