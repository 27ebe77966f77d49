import json
import re
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from codefusion.checkpoint import load_checkpoint, save_checkpoint
from codefusion.errors import CheckpointError


@pytest.fixture
def ckpt(tmp_path, tiny_model, tokenizer):
    return save_checkpoint(tmp_path / "ck", tiny_model, tokenizer, {"note": "test"})


def test_round_trip(ckpt, tiny_model):
    model, tok, config = load_checkpoint(ckpt)
    assert config["meta"] == {"note": "test"} and model.cfg == tiny_model.cfg
    for (k, a), (_, b) in zip(tiny_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), k
    # T5's tied input embedding stays tied after loading
    assert model.encoder.t5.shared.weight.data_ptr() == model.encoder.t5.encoder.embed_tokens.weight.data_ptr()


def test_bf16_weights_load(tmp_path, tiny_model, tokenizer):
    path = save_checkpoint(tmp_path / "bf", tiny_model, tokenizer, dtype=torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in load_file(str(path / "model.safetensors")).values())
    model, _, _ = load_checkpoint(path)
    w = tiny_model.embed.weight
    torch.testing.assert_close(model.embed.weight, w.to(torch.bfloat16).float())


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
def test_missing_file(ckpt, name):
    (ckpt / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name} is missing"):
        load_checkpoint(ckpt)


def _rewrite(ckpt, edit):
    tensors = load_file(str(ckpt / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(ckpt / "model.safetensors"))


def test_missing_tensor(ckpt):
    _rewrite(ckpt, lambda t: t.pop("denoiser.out.weight"))
    with pytest.raises(CheckpointError, match="lacks tensor 'denoiser.out.weight'"):
        load_checkpoint(ckpt)


def test_misshaped_tensor(ckpt):
    _rewrite(ckpt, lambda t: t.__setitem__("decoder.pos", torch.zeros(3, 3)))
    with pytest.raises(CheckpointError, match=r"'decoder.pos' has shape \(3, 3\)"):
        load_checkpoint(ckpt)


def test_wrong_dtype_and_extra_tensor(ckpt):
    _rewrite(ckpt, lambda t: t.__setitem__("embed.weight", t["embed.weight"].to(torch.int32)))
    with pytest.raises(CheckpointError, match="dtype torch.int32"):
        load_checkpoint(ckpt)


def test_unexpected_tensor(ckpt):
    _rewrite(ckpt, lambda t: t.__setitem__("stray", torch.zeros(1)))
    with pytest.raises(CheckpointError, match="unexpected tensor 'stray'"):
        load_checkpoint(ckpt)


def test_corrupted_safetensors(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(ckpt)


def test_bad_config(ckpt):
    (ckpt / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt)
    (ckpt / "config.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99; this engine reads 1: upgrade codefusion"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("edit, message", [
    (lambda c: [1, 2], "must hold a JSON object, not a list"),
    (lambda c: {**c, "tokenizer": "bpe"}, '"tokenizer" must be an object'),
    (lambda c: {**c, "model": [1]}, '"model" must be an object'),
    (lambda c: {k: v for k, v in c.items() if k != "model"}, 'has no "model" section'),
    (lambda c: {**c, "model": {**c["model"], "n_heads": 0}}, "n_heads must be an integer ≥ 1, got 0"),
    (lambda c: {**c, "model": {**c["model"], "d_model": "256"}}, "d_model must be an integer ≥ 1, got '256'"),
    (lambda c: {**c, "model": {**c["model"], "length_buckets": []}}, "length_buckets must be positive integers"),
    (lambda c: {**c, "model": {**c["model"], "self_condition": 1}}, "self_condition must be true or false"),
    (lambda c: {**c, "model": {k: v for k, v in c["model"].items() if k != "d_ff"}}, "model section lacks d_ff"),
    (lambda c: {**c, "tokenizer": {**c["tokenizer"], "vocab_size": 300}}, "config.json records 300"),
])
def test_malformed_config_is_one_line(ckpt, edit, message):
    """A config.json edited by hand fails as a CheckpointError naming what is wrong, not a traceback."""
    good = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(edit(good)))
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(ckpt)


def test_non_finite_weights_are_refused(ckpt):
    _rewrite(ckpt, lambda t: t["embed.weight"].view(-1)[3:4].fill_(float("nan")))
    with pytest.raises(CheckpointError, match="tensor 'embed.weight' holds NaN or infinite values"):
        load_checkpoint(ckpt)


def test_a_weights_file_for_a_directory(ckpt):
    with pytest.raises(CheckpointError, match="is a file: pass the checkpoint directory"):
        load_checkpoint(ckpt / "model.safetensors")


def test_pack_writes_bf16_weights_that_load_as_the_rounded_model(tmp_path, tiny_model, tokenizer, capsys):
    from codefusion.cli import main

    src = save_checkpoint(tmp_path / "src", tiny_model, tokenizer, {"history": [{"task": "finetune"}]})
    assert main(["pack", "--model", str(src), "--out", str(tmp_path / "bf16")]) == 0
    packed, _, config = load_checkpoint(tmp_path / "bf16")
    assert config["meta"]["history"] == [{"task": "finetune"}]
    for (name, a), (_, b) in zip(tiny_model.state_dict().items(), packed.state_dict().items()):
        assert torch.equal(a.to(torch.bfloat16).float(), b), name
    ratio = (tmp_path / "bf16" / "model.safetensors").stat().st_size / (src / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55
    assert main(["pack", "--model", str(src), "--out", str(tmp_path / "bf16")]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert main(["pack", "--model", str(src), "--out", str(tmp_path / "h"), "--dtype", "float16"]) == 2
    capsys.readouterr()
    (tmp_path / "afile").write_text("keep me")
    for out, message in ((tmp_path / "afile", "is a file: choose a directory"), (src, "is --model itself")):
        assert main(["pack", "--model", str(src), "--out", str(out), "--force"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert (tmp_path / "afile").read_text() == "keep me"


def test_generation_defaults_set_the_clamp_a_request_leaves_unset(tmp_path, tiny_model, tokenizer, capsys):
    """A checkpoint's "generation": {"clamp": …} is what GenerationConfig(clamp=None) runs with; a request
    that names a clamp keeps it; `pack --default-clamp` writes the block and a later pack keeps it."""
    from codefusion import CodeFusion, GenerationConfig
    from codefusion.cli import main

    src = save_checkpoint(tmp_path / "src", tiny_model, tokenizer)
    assert "generation" not in json.loads((src / "config.json").read_text())
    assert CodeFusion.from_pretrained(src).resolve(GenerationConfig()).clamp == "none"
    assert main(["pack", "--model", str(src), "--out", str(tmp_path / "d"), "--default-clamp", "decode"]) == 0
    assert main(["pack", "--model", str(tmp_path / "d"), "--out", str(tmp_path / "d2")]) == 0
    assert json.loads((tmp_path / "d2" / "config.json").read_text())["generation"] == {"clamp": "decode"}
    cf = CodeFusion.from_pretrained(tmp_path / "d2")
    assert cf.resolve(GenerationConfig()).clamp == "decode"
    assert cf.resolve(GenerationConfig(clamp="none")).clamp == "none"
    plain = GenerationConfig(steps=4, max_length=16, lang="bash")
    by_default = cf.generate(["list files"], plain)
    assert by_default.texts == cf.generate(["list files"], replace(plain, clamp="decode")).texts
    # eval records the clamp it ran with
    rows = tmp_path / "dev.jsonl"
    rows.write_text(json.dumps({"id": "a", "nl": "list files", "code": "ls"}) + "\n")
    assert main(["eval", "--model", str(tmp_path / "d2"), "--data", str(rows), "--lang", "bash", "--steps", "3",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clamp"] == "decode"


@pytest.mark.parametrize("block, message", [({"clamp": "round"}, "generation.clamp must be one of"),
                                            ({"steps": 20}, "only \"clamp\""), ("decode", "only \"clamp\"")])
def test_bad_generation_defaults(ckpt, block, message):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "generation": block}))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("umask, mode", [(0o022, "0o644"), (0o027, "0o640")])
def test_saved_files_are_readable_by_other_users(tmp_path, tiny_model, tokenizer, monkeypatch, umask, mode):
    """safetensors >= 0.8 writes its files 0o600; a checkpoint saved by one user must load for another (a
    service account): every file gets the mode a plain open() gives (0o666 less the umask). The save never sets
    the process umask, not even for a moment (another thread would create its files with it)."""
    import os

    from codefusion.checkpoint import save_checkpoint
    outer = os.umask(umask)
    try:
        with monkeypatch.context() as m:
            m.setattr(os, "umask", lambda *a: pytest.fail("the save changed the process umask"))
            path = save_checkpoint(tmp_path / "ck", tiny_model, tokenizer)
    finally:
        os.umask(outer)
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in path.iterdir()} == {
        "config.json": mode, "model.safetensors": mode, "tokenizer.json": mode}
