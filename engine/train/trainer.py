"""``codefusion train``: pre-training (unsupervised generation + CPD) and fine-tuning.

AdamW without weight decay (lr 5e-4, the paper's), linear warm-up then cosine decay to zero over
the run (the run's length is the larger of steps/max_steps and elapsed/minutes budget), gradient
clipping at 1.0, bf16 autocast on CPU (AMX) or GPU. A checkpoint (+ optimizer state, so --resume
continues the same run) is written every ``save_minutes`` and at the end; a dev check (a few-step
sample of up to ``dev_rows`` dev rows) is logged beside the loss every ``dev_every`` steps.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..checkpoint import CONFIG, read_config, save_checkpoint
from ..diffusion.losses import loss_terms
from ..errors import CodeFusionError
from ..model import CodeFusionModel
from ..tokenizer import CodeTokenizer
from ..validate import resolve_dtype, slow_dtype_note
from .batches import TaskBatches
from .config import TrainConfig
from .data import Example, balanced, load_split, repeat_rows, unique_programs
from .devcheck import dev_check
from .optim import build_optimizer, lr_at, t5_embedding_scale
from .options import TASKS, check_options, parse_snap
from .request_dropout import drop_request_tokens
from .loopwalk import LoopWalks
from .rollout import own_rows
from .seq2seq import SEQ2SEQ, Seq2SeqTask, saved_kind, seq2seq_dev_check
from .snap import ProgramBank, snap_targets
from .start import build_model, seq2seq_kind
from .state import (SAVE, DeferInterrupt, check_resume, load_trainer_state, run_identity, same_out,
                    save_trainer_state)
from .timesteps import sample_t


def _examples(cfg: TrainConfig, split: str) -> list[Example]:
    return load_split(cfg.data, cfg.datasets, split, cfg.on_bad_line)


def train(cfg: TrainConfig) -> Path:
    repeat, split_brackets, snap = check_options(cfg)  # every bad option fails here, before any data is read
    cfg = dataclasses.replace(cfg, dtype=resolve_dtype(cfg.dtype, cfg.device))  # recorded as run
    if note := slow_dtype_note(cfg.dtype, cfg.device):
        tqdm.write(f"note: {note}")
    if cfg.task == "length":
        from .length import train_length_head
        return train_length_head(cfg)
    torch.manual_seed(cfg.seed)
    split = "pretrain" if cfg.task == "pretrain" else "train"
    examples = _examples(cfg, split)
    if cfg.task == "pretrain":
        examples, repeats = unique_programs(examples)
        tqdm.write(f"note: pre-training on {len(examples)} distinct programs ({repeats} repeated lines left out)")
    examples = repeat_rows(examples, repeat)
    dev = balanced(_examples(cfg, "dev"), cfg.dev_rows) if cfg.dev_rows else []
    model, tok, meta = build_model(cfg, examples, split_brackets)
    device = torch.device(cfg.device)
    model.to(device).train()
    if cfg.freeze_encoder:
        model.encoder.requires_grad_(False)
    # the encoder task pads nothing on purpose: its loss ignores pads, so a longer bucket is only cost
    upsize = 0.0 if cfg.task == "encoder" else cfg.upsize
    batches = TaskBatches(examples, tok, model.cfg, TASKS[cfg.task], cfg.batch_size, cfg.seed, upsize)
    bank = ProgramBank(batches.code_ids, [e.lang for e in examples], snap, tok) if snap else None
    walks = LoopWalks(cfg.rollout_loop, cfg.rollout_t_max, model.cfg.diffusion_steps) if cfg.rollout_loop else None
    hooks = _hooks(cfg, model, tok, dev, device, bank, walks)
    source = cfg.out if cfg.resume else cfg.init
    hooks.generation = read_config(Path(source)).get("generation") if source else None
    optimizer = build_optimizer(cfg, hooks.module)
    counters = {"step": 0, "elapsed_s": 0.0}
    if cfg.resume:
        counters = load_trainer_state(Path(cfg.out), hooks.module, optimizer)
        check_resume(cfg, counters, meta)
        # draws go on from where the run stood (t, ε, dropout, batch order, masks): as saved, or for a state
        # saved before draws were, re-seeded by the step
        if "draws" in counters and "torch_rng" in counters and batches.restore_draws(counters["draws"]):
            torch.set_rng_state(counters["torch_rng"])
            torch.cuda.manual_seed_all(cfg.seed + counters["step"])  # a GPU's generator is not saved: re-seeded
            counters["draws"] = batches.draw_state(), torch.get_rng_state()  # a save before any step saves them
        else:
            if "draws" in counters:
                tqdm.write("note: the saved data order cannot be put back (the training rows changed since the run "
                           "was saved, or the state lacks it): the draws are re-seeded", file=sys.stderr)
                del counters["draws"]
            torch.manual_seed(cfg.seed + counters["step"])
            batches.sampler.rng.seed(cfg.seed + counters["step"])
            batches.rng.seed(cfg.seed + 1 + counters["step"])
    if batches.sampler.dropped:
        tqdm.write(f"note: {batches.sampler.dropped} of {len(examples)} rows are longer than "
                   f"{model.cfg.max_target_len} tokens and were left out")
    return _loop(cfg, model, tok, batches, optimizer, counters, meta, hooks)


@dataclass
class Hooks:
    """What differs between tasks inside the loop: the module whose parameters are optimised (and
    saved with the optimizer state), one optimizer step, the dev check, and extra files to save."""
    module: torch.nn.Module
    step: Callable[[object, torch.optim.Optimizer, object], dict[str, float]]
    check: Callable[[], dict]
    save_extra: Callable[[Path, dict], None] = lambda out, stamp: None
    # the sampler defaults of the checkpoint the run started from (`pack --default-clamp`), read once at the start
    # and written with every save: without them `generate` of the result fell back to the reference sampler
    generation: dict | None = None


class _Joint(torch.nn.Module):
    """The CodeFusion model and the seq2seq decoder trained beside it (--aux-seq2seq): one optimizer
    state for both."""

    def __init__(self, model: CodeFusionModel, task: Seq2SeqTask):
        super().__init__()
        self.model, self.seq2seq = model, task.seq2seq


def _hooks(cfg: TrainConfig, model: CodeFusionModel, tok: CodeTokenizer, dev: list[Example], device,
           bank: ProgramBank | None = None, walks: LoopWalks | None = None) -> Hooks:
    task = None
    if cfg.task == "encoder" or cfg.aux_seq2seq:
        task = Seq2SeqTask(model, kind=seq2seq_kind(cfg)).to(device).train()
        init_kind = saved_kind(cfg.init)
        if cfg.resume:
            task.load(Path(cfg.out))
        elif init_kind == task.kind:  # continue an earlier encoder run's decoder
            task.load(Path(cfg.init))
        elif init_kind:
            tqdm.write(f"{cfg.init} holds a {init_kind} seq2seq decoder: a fresh {task.kind} decoder starts on its E")
        elif cfg.init:  # e.g. a packed or length-task checkpoint: they carry no decoder
            tqdm.write(f"note: {cfg.init} holds no seq2seq decoder ({SEQ2SEQ}): a fresh {task.kind} decoder starts "
                       "on its E", file=sys.stderr)
    if cfg.task != "encoder":
        check = (lambda: dev_check(model, tok, dev, cfg.task, cfg.dev_steps, device)) if dev else dict

        def diffusion_step(batch, opt, autocast):
            return _train_step(cfg, model, tok, batch, opt, autocast, device, task, bank, walks)
        if task is None:
            return Hooks(model, diffusion_step, check)
        return Hooks(_Joint(model, task), diffusion_step, check, task.save)

    def step(batch, optimizer, autocast) -> dict[str, float]:
        with autocast:
            loss = task.loss(batch.src_ids.to(device), batch.src_mask.to(device), batch.tgt.to(device))
        return _optimize(cfg, loss, optimizer, {"loss": loss, "ce": loss})

    check = (lambda: seq2seq_dev_check(task, tok, dev)) if dev else dict
    return Hooks(task, step, check, task.save)


def _loop(cfg, model, tok, batches, optimizer, counters, meta, hooks: Hooks) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.resume:  # rows past the saved step were logged by a run killed before its next save: it redoes them
        _cut_log(out / "train_log.jsonl", counters["step"])
    log = open(out / "train_log.jsonl", "a" if cfg.resume else "w", encoding="utf-8")  # a new run: a new log
    try:
        step = _steps(cfg, model, tok, batches, optimizer, counters, meta, hooks, log)
        result = hooks.check()
        log.write(json.dumps({"step": step, "dev": result, "final": True}) + "\n")
        log.close()
        _save(cfg, model, tok, optimizer, meta, step, time.perf_counter() - counters["t0"], hooks, result,
              counters.get("draws"))
    except Diverged as e:
        log.close()
        again = "--resume from the checkpoint there, saved before it" if (out / CONFIG).is_file() else "start again"
        raise CodeFusionError(f"training diverged at step {counters['last_step'] + 1}: {e}; nothing was saved to "
                              f"{out}: lower --lr (or raise --warmup) and {again}") from None
    except KeyboardInterrupt:  # keep the work: a resumable checkpoint at the last finished step (also when the
        log.close()            # interrupt cut the final dev check or the final save short: saved whole again)
        step = counters["last_step"]
        if step > counters["step"]:
            _save(cfg, model, tok, optimizer, meta, step, time.perf_counter() - counters["t0"], hooks,
                  draws=counters.get("draws"))
            tqdm.write(f"interrupted: saved step {step} to {out}; continue with --resume --out {out}")
        raise
    return out


def _cut_log(path: Path, step: int) -> None:
    """Keep the log's rows up to ``step`` (a row that is not JSON, cut by the kill, goes too)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line + "\n")
        except (ValueError, AttributeError):
            continue
    path.write_text("".join(keep), encoding="utf-8")


def _steps(cfg, model, tok, batches, optimizer, counters, meta, hooks: Hooks, log) -> int:
    """The loop proper → the last step run. ``counters["last_step"]`` follows it, so an interrupt or a
    divergence knows where the run stood; ``counters["t0"]``: the run's clock start."""
    budget = cfg.minutes * 60 if cfg.minutes else None
    t0, last_save = time.perf_counter() - counters["elapsed_s"], time.perf_counter()
    step = counters["last_step"] = counters["step"]
    counters["t0"] = t0
    bar = tqdm(total=cfg.max_steps, initial=step, desc=cfg.task, dynamic_ncols=True)
    max_steps = cfg.max_steps or float("inf")
    device = torch.device(cfg.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.dtype in ("bfloat16", "bf16"))
    while step < max_steps:
        elapsed = time.perf_counter() - t0
        if budget is not None and elapsed >= budget:
            break
        progress = max(step / max_steps, elapsed / budget if budget else 0.0)
        lr = lr_at(cfg, step, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        with DeferInterrupt():  # the step, its count and the draws after it together
            terms = hooks.step(batches.batch(step), optimizer, autocast)
            step = counters["last_step"] = step + 1
            counters["draws"] = batches.draw_state(), torch.get_rng_state()  # what a save of this step resumes
        bar.update(1)
        if step % cfg.log_every == 0 or step == 1:
            row = {"step": step, "lr": lr, "elapsed_s": round(time.perf_counter() - t0, 1), **terms}
            bar.set_postfix(loss=f"{terms['loss']:.3f}", ce=f"{terms['ce']:.3f}")
            log.write(json.dumps(row) + "\n")
        if cfg.dev_every and step % cfg.dev_every == 0 and (result := hooks.check()):
            tqdm.write(f"step {step}: dev {json.dumps(result)}")
            log.write(json.dumps({"step": step, "dev": result}) + "\n")
        if time.perf_counter() - last_save > cfg.save_minutes * 60:
            _save(cfg, model, tok, optimizer, meta, step, time.perf_counter() - t0, hooks, draws=counters["draws"])
            last_save = time.perf_counter()
        log.flush()
    bar.close()
    return step


def _train_step(cfg, model, tok, batch, optimizer, autocast, device,
                aux: Seq2SeqTask | None = None, bank: ProgramBank | None = None,
                walks: LoopWalks | None = None) -> dict[str, float]:
    B, n = batch.tgt.shape
    with autocast:
        loop = None
        k = round(cfg.rollout_share * B)
        if walks is not None and k:  # the first k rows: states of a stored loop
            batch, loop_t, loop = walks.draw(model, batch, k, device)
        tgt = batch.tgt.to(device)
        if batch.src_ids is None:  # unsupervised generation: E_s is fresh Gaussian noise
            mem = torch.randn(B, model.cfg.max_source_len, model.cfg.enc_d_model, device=device)
            mem_mask = None
        else:
            src_ids, mem_mask = drop_request_tokens(batch.src_ids.to(device), batch.src_mask.to(device),
                                                    cfg.request_dropout, tok.pad_id)
            if cfg.freeze_encoder:  # a frozen E gives N the E_s it will see at inference: no dropout
                model.encoder.eval()
            with torch.set_grad_enabled(not cfg.freeze_encoder):
                mem = model.encode(src_ids, mem_mask)
        t = sample_t(cfg.t_sampling, B, model.cfg.diffusion_steps, device, cfg.t_min, cfg.t_min_share)
        eps = torch.randn(B, n, model.cfg.d_embed, device=device)
        eps0 = torch.randn_like(eps)
        self_cond = model.cfg.self_condition and bool(torch.rand(()) < 0.5)
        if loop is not None:
            t[:len(loop_t)] = loop_t
            own = loop
        else:
            own = own_rows(model, mem, mem_mask, t, eps.shape, cfg.rollout_share, cfg.rollout_steps,
                           cfg.rollout_t_max)
        snapped = None
        if own is not None and bank is not None:
            snapped = 0
            late = own.rows & (t <= cfg.rollout_snap_t_max * model.cfg.diffusion_steps)
            if own.heads is not None and bool(late.any()):
                tgt, snapped = snap_targets(model.embed, tgt, own.heads, late, list(batch.langs), bank)
        terms = loss_terms(model, tgt, mem, mem_mask, t, eps, eps0, self_cond, own)
        if snapped is not None:  # rows of this batch whose target snap.py replaced
            terms["snapped"] = torch.tensor(float(snapped))
        if aux is not None and mem_mask is not None:  # E_s must still let a left-to-right decoder write the code
            terms["seq2seq_ce"] = aux.loss_on(mem, mem_mask, tgt)
            terms["loss"] = terms["loss"] + cfg.aux_seq2seq * terms["seq2seq_ce"]
    return _optimize(cfg, terms["loss"], optimizer, terms)


class Diverged(CodeFusionError):
    """The loss or the gradient is not finite: the step is not applied, and nothing more is saved."""


def _optimize(cfg, loss, optimizer, terms: dict) -> dict[str, float]:
    """One AdamW step, gradients clipped over exactly the parameters the optimizer trains. A loss or gradient
    norm that is NaN or infinite raises Diverged before the weights move."""
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss.detach()):
        raise Diverged(f"the loss is {float(loss.detach())}")
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                                               cfg.clip)
    if not torch.isfinite(grad_norm):
        raise Diverged(f"the gradient norm is {float(grad_norm)}")
    optimizer.step()
    return {k: float(f"{float(v.detach()):.5g}") for k, v in {**terms, "grad_norm": grad_norm}.items()}


def _save(cfg, model, tok, optimizer, meta, step, elapsed, hooks: Hooks, dev_result=None, draws=None) -> None:
    run = {"task": cfg.task, "datasets": cfg.datasets, **({"repeat": cfg.repeat} if cfg.repeat else {}),
           "steps": step, "wall_s": round(elapsed, 1), "batch_size": cfg.batch_size, "lr": cfg.lr, "dtype": cfg.dtype,
           "seed": cfg.seed,
           "t_sampling": cfg.t_sampling, "t_min": cfg.t_min, "t_min_share": cfg.t_min_share,
           "freeze_encoder": cfg.freeze_encoder, "encoder_from": cfg.encoder_from, "aux_seq2seq": cfg.aux_seq2seq}
    if (scale := t5_embedding_scale(cfg)) != 1:
        run["embed_lr_scale"] = scale
    if cfg.task == "encoder" or cfg.aux_seq2seq:
        run["seq2seq_decoder"] = seq2seq_kind(cfg)
    if cfg.rollout_share:
        run.update(rollout_share=cfg.rollout_share, rollout_steps=cfg.rollout_steps)
        if cfg.rollout_t_max < 1.0:
            run["rollout_t_max"] = cfg.rollout_t_max
        if cfg.rollout_loop:
            run.update(rollout_loop=cfg.rollout_loop, rollout_steps=model.cfg.diffusion_steps)
        if cfg.rollout_snap:
            run.update(rollout_snap=",".join(parse_snap(cfg.rollout_snap)), rollout_snap_t_max=cfg.rollout_snap_t_max)
    if cfg.request_dropout:
        run["request_dropout"] = cfg.request_dropout
    if tok.split_brackets:
        run["split_brackets"] = list(tok.split_brackets)
    if dev_result:
        run["dev"] = dev_result
    history = [h for h in meta.get("history", []) if not same_out(h.get("out"), cfg.out)]
    history.append({**run, "out": str(cfg.out)})
    out = Path(cfg.out)
    save = f"{step}-{os.urandom(4).hex()}"  # stamped into every file of this save (state.py: SAVE)
    save_trainer_state(out, hooks.module, optimizer,
                       {"step": step, "elapsed_s": elapsed, "run": run_identity(cfg), SAVE: save}, draws)
    hooks.save_extra(out, {SAVE: save})
    save_checkpoint(out, model, tok, {**meta, "history": history, SAVE: save}, generation=hooks.generation,
                    stamp={SAVE: save})  # last: its config.json names the step
