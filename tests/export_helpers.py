"""What the export tests share: a tiny checkpoint with the shipped model's features (self-conditioning, a length
head, the pooled condition), its ONNX export (each a module-scoped fixture: one export per test module), and the
one-line-error check."""
import dataclasses

import pytest

from codefusion.checkpoint import save_checkpoint
from codefusion.cli import main
from conftest import pooled_model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_model, tokenizer):
    cfg = dataclasses.replace(tiny_model.cfg, self_condition=True, length_head=True)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", pooled_model(cfg, seed=2), tokenizer)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, ckpt):
    out = tmp_path_factory.mktemp("export") / "tiny-onnx"
    assert main(["export", "onnx", "--model", str(ckpt), "--out", str(out)]) == 0
    return out


def one_line_error(capsys, argv, match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and match in err, err
