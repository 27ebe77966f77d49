"""--dtype auto: bf16 where the hardware has it (a GPU, a CPU with AMX or AVX512-BF16), fp32 where a CPU emulates it
(measured on an AVX2-only AMD EPYC: a 512² matmul 48× slower in bf16), with one line for a user who asks for
bf16 there anyway."""
import json

import pytest
import torch

from codefusion import validate
from codefusion.cli import _resolve_dtype, build_parser, main
from codefusion.errors import CodeFusionError
from codefusion.train.config import TrainConfig
from codefusion.train.trainer import train

from conftest import PAIRS, write_data


@pytest.fixture(params=[False, True], ids=["emulated", "native"])
def cpu_bf16(request, monkeypatch):
    """This CPU as one without (False) or with (True) AMX / AVX512-BF16."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: request.param)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return request.param


def test_auto_is_bf16_only_where_the_cpu_has_it(cpu_bf16):
    assert validate.native_bf16("cpu") is cpu_bf16
    assert validate.resolve_dtype("auto", "cpu") == ("bfloat16" if cpu_bf16 else "float32")
    assert validate.resolve_dtype("float32", "cpu") == "float32" and validate.resolve_dtype("bf16", "cpu") == "bf16"
    note = validate.slow_dtype_note("bfloat16", "cpu")
    assert (note is None) is cpu_bf16
    assert validate.slow_dtype_note("float32", "cpu") is None


def test_either_probe_is_enough(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert validate.native_bf16("cpu")


def test_a_torch_that_cannot_tell_keeps_bf16(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert validate.resolve_dtype("auto", "cpu") == "bfloat16"


def test_cli_resolves_auto_and_says_when_bf16_is_emulated(cpu_bf16, capsys):
    args = build_parser().parse_args(["serve"])
    assert args.dtype == "auto"
    assert _resolve_dtype(args) is None and args.dtype == ("bfloat16" if cpu_bf16 else "float32")
    assert main(["generate", "list files", "--steps", "1", "--dtype", "bfloat16", "--json"]) == 0
    err = capsys.readouterr().err
    assert err == "" if cpu_bf16 else err.startswith("note: this CPU has no native bf16") and err.count("\n") == 1


def test_serve_says_the_note_as_it_starts_not_when_it_stops(monkeypatch, capsys):
    """A server runs until it is stopped: the note must be on stderr before it serves, and said once."""
    import codefusion.server.app as app
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    seen = []
    monkeypatch.setattr(app, "serve_on_main_thread", lambda *a, **k: seen.append(capsys.readouterr().err))
    assert main(["serve", "--dtype", "bfloat16", "--port", "0"]) == 0
    assert len(seen) == 1 and seen[0].startswith("note: this CPU has no native bf16") and seen[0].count("\n") == 1
    assert capsys.readouterr().err == ""


def test_a_bad_flag_stays_one_line_without_the_note(capsys):
    assert main(["generate", "list files", "--dtype", "bfloat16", "--lang", "cobol"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_a_bad_device_is_one_line_not_a_torch_error():
    with pytest.raises(CodeFusionError, match="unknown device"):
        validate.resolve_dtype("auto", "gpu")


def test_train_records_the_dtype_auto_chose(cpu_bf16, tmp_path):
    data = write_data(tmp_path / "data", {"nl2bash": PAIRS["nl2bash"]})
    out = train(TrainConfig(preset="tiny", data=str(data), out=str(tmp_path / "run"), max_steps=1, batch_size=4,
                            dev_rows=0, warmup=1))
    run = json.loads((out / "config.json").read_text())["meta"]["history"][-1]
    assert run["dtype"] == ("bfloat16" if cpu_bf16 else "float32")


def test_train_refuses_a_dtype_it_cannot_run(tmp_path):
    with pytest.raises(CodeFusionError, match="--dtype of train is auto, bfloat16"):
        train(TrainConfig(preset="tiny", data=str(tmp_path), out=str(tmp_path / "o"), max_steps=1, dtype="fp64"))


def test_a_bench_list_resolves_each_name_and_notes_once(cpu_bf16):
    auto = "bfloat16" if cpu_bf16 else "float32"
    assert validate.resolve_dtypes("float32,auto", "cpu") == (f"float32,{auto}", None)
    spec, note = validate.resolve_dtypes("bfloat16,float32,bf16", "cpu")
    assert spec == "bfloat16,float32,bf16" and (note is None) is cpu_bf16
