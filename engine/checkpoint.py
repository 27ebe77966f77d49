"""Checkpoint directory I/O (DESIGN §6): config.json + model.safetensors + tokenizer.json. Never pickle.

config.json = {"format_version": 1, "model": ModelConfig, "tokenizer": {"kind": …[, "split_brackets": [langs]]},
"meta": {…}}; ``split_brackets`` (optional, absent = none) is the targets' bracket spelling (tokenizer.py).
Loading checks every tensor name, shape and dtype against a freshly built model and fails on the
first mismatch with a message that names it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import CLAMPS, ModelConfig
from .errors import CheckpointError, CodeFusionError
from .model import CodeFusionModel
from .tokenizer import CodeTokenizer, check_split_brackets

FORMAT_VERSION = 1
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"
ALLOWED_DTYPES = (torch.float32, torch.bfloat16)


def save_checkpoint(path: str | Path, model: CodeFusionModel, tokenizer: CodeTokenizer, meta: dict | None = None,
                    dtype: torch.dtype = torch.float32, generation: dict | None = None,
                    stamp: dict[str, str] | None = None) -> Path:
    """Write the three files; tensors are stored contiguous in ``dtype`` (fp32 or bf16). ``generation``: the
    model's defaults for requests that leave them unset (``generation_defaults``), written when given. ``stamp``:
    extra safetensors metadata (training marks the files of one save with its id)."""
    if dtype not in ALLOWED_DTYPES:
        raise CodeFusionError(f"checkpoint dtype must be float32 or bfloat16, got {dtype}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in unique_state(model).items()}
    replace_atomically(path / WEIGHTS, lambda tmp: save_file(tensors, str(tmp),
                                                             metadata={"format_version": str(FORMAT_VERSION),
                                                                       **(stamp or {})}))
    replace_atomically(path / TOKENIZER, tokenizer.save)
    config = {"format_version": FORMAT_VERSION, "model": model.cfg.to_dict(),
              "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                            **({"split_brackets": list(tokenizer.split_brackets)} if tokenizer.split_brackets else {})},
              "meta": meta or {},
              **({"generation": generation_defaults({"generation": generation})} if generation else {})}
    replace_atomically(path / CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n",
                                                                 encoding="utf-8"))  # last: it names the rest
    return path


def replace_atomically(path: Path, write) -> None:
    """``write(tmp)`` a sibling temporary file, then rename it onto ``path``: a crash mid-write leaves the old
    file whole (or none), never a truncated one that a later load would take for the real thing. A symlink is
    written through (its target replaced); a path that is not a regular file (a pipe, /dev/stdout) is written
    directly."""
    path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        write(path)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        readable_by_all(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def readable_by_all(path: Path) -> None:
    """The mode a plain ``open()`` would have given ``path`` (0o666 less the umask): safetensors ≥ 0.8 writes its
    files 0o600, so a model saved by one user could not be served by another (PermissionError on load). The mode
    is read off a probe file the kernel creates beside it: reading the umask (os.umask sets it to read it) would
    let another thread create its files world-writable in between."""
    probe = path.with_name(f".{path.name}.{os.urandom(6).hex()}.mode")  # unique: O_EXCL never meets a leftover
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        os.chmod(path, os.stat(probe).st_mode & 0o777)
    finally:
        os.unlink(probe)


def unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without aliases (T5 ties ``shared`` and ``embed_tokens``): first name of each tensor."""
    seen, out = set(), {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            out[name] = tensor
    return out


def read_config(path: str | Path) -> dict:
    path = Path(path)
    if path.is_file():
        raise CheckpointError(f"{path} is a file: pass the checkpoint directory that holds it ({path.parent})")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist: pass a directory written by "
                              "`codefusion train` (or omit --model for the embedded default)")
    for name in (CONFIG, WEIGHTS, TOKENIZER):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} is not a CodeFusion checkpoint: {name} is missing")
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / CONFIG} is not valid JSON ({e}); restore it from the original checkpoint") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path / CONFIG} must hold a JSON object, not a {type(config).__name__}: restore it "
                              "from the original checkpoint")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        raise CheckpointError(f"{path / CONFIG} has format_version {version!r}; this engine reads {FORMAT_VERSION}"
                              + (": upgrade codefusion to load it" if newer else ""))
    for section in ("model", "tokenizer"):
        if not isinstance(config.get(section, {}), dict):
            raise CheckpointError(f"{path / CONFIG}: \"{section}\" must be an object, got {config[section]!r}")
    generation_defaults(config, path / CONFIG)
    return config


def generation_defaults(config: dict, where="config.json") -> dict:
    """The checkpoint's own defaults for requests that leave them unset: ``"generation": {"clamp": …}``
    (today only the sampler's rounding, GenerationConfig.clamp None). Checked on load."""
    block = config.get("generation", {})
    if not isinstance(block, dict) or set(block) - {"clamp"}:
        raise CheckpointError(f"{where}: \"generation\" must be an object with only \"clamp\", got {block!r}")
    if block.get("clamp", "none") not in CLAMPS:
        raise CheckpointError(f"{where}: generation.clamp must be one of {', '.join(CLAMPS)}, got {block['clamp']!r}")
    return block


def load_state(path: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read model.safetensors and validate names, shapes and dtypes against ``expected``."""
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path / WEIGHTS} is not a readable safetensors file ({str(e).splitlines()[0]}); "
                              "the file is corrupted or truncated: copy it again") from None
    for name, ref in expected.items():
        if name not in tensors:
            raise CheckpointError(f"{path / WEIGHTS} lacks tensor {name!r}: the file does not match config.json")
        got = tensors[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(f"{path / WEIGHTS}: tensor {name!r} has shape {tuple(got.shape)}, "
                                  f"config.json implies {tuple(ref.shape)}")
        if got.dtype not in ALLOWED_DTYPES:
            raise CheckpointError(f"{path / WEIGHTS}: tensor {name!r} has dtype {got.dtype}; expected float32 or bfloat16")
        if not torch.isfinite(got).all():
            raise CheckpointError(f"{path / WEIGHTS}: tensor {name!r} holds NaN or infinite values (a diverged "
                                  "training run?): load an earlier checkpoint")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{path / WEIGHTS} has unexpected tensor {extra[0]!r}: the file does not match config.json")
    return tensors


def load_checkpoint(path: str | Path) -> tuple[CodeFusionModel, CodeTokenizer, dict]:
    """→ (fp32 model in eval mode on CPU, tokenizer, config dict)."""
    path = Path(path)
    config = read_config(path)
    if "model" not in config:
        raise CheckpointError(f"{path / CONFIG} has no \"model\" section: restore it from the original checkpoint")
    try:
        cfg = ModelConfig.from_dict(config["model"])
    except CodeFusionError as e:
        raise CheckpointError(f"{path / CONFIG}: {e}") from None
    tokenizer = CodeTokenizer.load(path / TOKENIZER)
    try:
        tokenizer.split_brackets = check_split_brackets(config.get("tokenizer", {}).get("split_brackets", ()))
    except (CodeFusionError, TypeError) as e:
        raise CheckpointError(f"{path / CONFIG}: tokenizer.split_brackets must list languages ({e})") from None
    if tokenizer.vocab_size > cfg.vocab_size:
        raise CheckpointError(f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model only "
                              f"{cfg.vocab_size}; the tokenizer.json belongs to another model")
    recorded = config.get("tokenizer", {}).get("vocab_size")
    if recorded is not None and recorded != tokenizer.vocab_size:
        raise CheckpointError(f"{path}: tokenizer.json has {tokenizer.vocab_size} tokens but config.json records "
                              f"{recorded}; the tokenizer.json belongs to another model: restore this checkpoint's")
    model = CodeFusionModel(cfg)
    state = load_state(path, unique_state(model))
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=False)  # aliases stay tied
    return model.eval(), tokenizer, config
