"""The shared training loop: the diffusers/accelerate pattern as small functions, used by every model.

A command builds its models and a ``step_fn(models, batch, step) -> {"loss": tensor, ...}``;
:class:`Trainer` does the rest: devices and processes (accelerate: one CPU, GPUs, ``torchrun``),
gradient accumulation, clipping, Adam, EMA (diffusers ``EMAModel``, plus an EMA of the buffers), mixed precision,
checkpoints (``accelerate.save_state`` written under a temporary name and renamed, the newest
``keep_last`` kept), resume from the newest complete checkpoint with the same optimizer,
random and data state, ``log.jsonl`` (and optionally TensorBoard or wandb, :mod:`pipelines.training.trackers`),
periodic samples, a fixed validation loss, a weights-only start from a saved ``model/`` folder
(``init_from``), a cosine learning rate, and a clear stop on a NaN loss.

Data order: per epoch one permutation of the dataset (seeded by seed and epoch) is split across
processes, so each process draws different examples; the position in it follows from the
step, so a resumed run continues with the examples the interrupted one would have drawn.
Datasets with ``set_epoch`` (e.g. :class:`scenes.training.TrainViews`) are told the epoch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipelines.training import trackers
from pipelines.training.buffer_ema import BufferEMA
from pipelines.training.lr_schedule import lr_factor
from pipelines.training.train_config import TrainConfig, validate
from pipelines.training.train_log import JsonLog, Window
from scenes.errors import UserError
from scenes.io import write_json

STATE_FILE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: the run stops, the last good checkpoint stays."""


def complete_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints in a run folder, oldest first (a half-written one never counts)."""
    out_dir = Path(out_dir)
    found = [(int(m[1]), p) for p in out_dir.glob("checkpoint-*")
             if (m := _CHECKPOINT.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def resume_checkpoint(resume: str | None, out_dir: str | Path) -> Path | None:
    """The checkpoint ``train.resume`` names (``latest``: the newest complete one, None if none yet)."""
    if not resume:
        return None
    if resume == "latest":
        found = complete_checkpoints(out_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UserError(f"train.resume={resume!r} is not a complete checkpoint folder (no {STATE_FILE}); "
                        "use 'latest' or a checkpoint-<step> folder")
    return path


def epoch_order(n: int, num_processes: int, process_index: int, seed: int, epoch: int) -> list[int]:
    """This process's share of epoch ``epoch``'s permutation of ``range(n)`` (padded to divide evenly)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    per_process = math.ceil(n / num_processes)
    perm += perm[: per_process * num_processes - n]
    return perm[process_index::num_processes]


class Trainer:
    """Trains ``models`` (name -> module) with Adam on every trainable parameter (or ``param_groups``).

    Modules without trainable parameters are moved to the device and left alone (frozen parts).
    """

    def __init__(self, cfg: TrainConfig, models: dict[str, nn.Module], out_dir: str | Path,
                 param_groups: list[dict] | None = None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        validate(cfg)
        self.cfg, self.out = cfg, Path(out_dir)
        # cpu=True on machines without an accelerator: accelerate then runs torchrun processes on gloo
        cpu = not torch.cuda.is_available() and not torch.backends.mps.is_available()
        log_with = trackers.usable(cfg.log_with, int(os.environ.get("RANK", "0")) == 0)
        self.accelerator = acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum,
                                             mixed_precision=cfg.mixed_precision, cpu=cpu, log_with=log_with,
                                             **trackers.accelerator_kwargs(log_with, self.out))
        set_seed(cfg.seed, device_specific=True)
        trainable = [n for n, m in models.items() if any(p.requires_grad for p in m.parameters())]
        if not trainable:
            raise ValueError("Trainer: none of the models has trainable parameters")
        self.params = [p for n in trainable for p in models[n].parameters() if p.requires_grad]
        # fused: one kernel for every parameter, the same update as the per-tensor loop (2x faster on CPU)
        optimizer = torch.optim.Adam(param_groups or [{"params": self.params}], lr=cfg.lr,
                                     fused=acc.device.type in ("cpu", "cuda"))
        prepared = acc.prepare(*[models[n] for n in trainable], optimizer)
        self.optimizer = prepared[-1]
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.models = {n: (prepared[trainable.index(n)] if n in trainable else m.to(acc.device))
                       for n, m in models.items()}
        self.trainable = trainable
        self.ema = {}
        if cfg.ema:
            from diffusers.training_utils import EMAModel

            self.ema = {n: EMAModel(self.unwrapped[n].parameters(), decay=cfg.ema_decay) for n in trainable}
        self.ema_buffers = {n: BufferEMA(self.unwrapped[n]) for n in self.ema}
        self.step = 0
        self.saved_step = None  # step of the newest checkpoint this trainer wrote or resumed from
        self.seconds_before = 0.0

    # ------------------------------------------------------------------ properties
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def unwrapped(self) -> dict[str, nn.Module]:
        """The models without their distributed wrappers."""
        return {n: self.accelerator.unwrap_model(m) for n, m in self.models.items()}

    def ema_models(self) -> dict[str, nn.Module] | None:
        """Copies of the models holding the EMA weights (frozen models as they are); None without EMA."""
        if not self.ema:
            return None
        out = dict(self.unwrapped)
        for n, ema in self.ema.items():
            out[n] = copy.deepcopy(out[n])
            ema.copy_to(out[n].parameters())
            self.ema_buffers[n].copy_to(out[n])
        return out

    # ------------------------------------------------------------------ the loop
    def fit(self, dataset, step_fn: Callable[[dict, object, int], dict], collate_fn=None,
            preview_fn: Callable[[dict, int], None] | None = None,
            final_fn: Callable[[dict, dict | None, Path], None] | None = None,
            val_fn: Callable[[dict], dict] | None = None) -> dict:
        """Train to ``cfg.steps``; returns a summary (steps, seconds, images/s, last loss, out).

        ``step_fn(models, batch, step)`` gets the prepared models (call them; use ``unwrapped``
        for attributes) and returns ``loss`` plus optional scalar logs and ``images`` (the
        number of images in the batch, for images/s; default: the batch size).
        ``preview_fn(unwrapped_models, step)`` runs on the main process, in eval mode, without
        gradients and on its own random stream. ``final_fn(unwrapped_models, ema_models, out)``
        runs once at the end on the main process (``ema_models`` is None without EMA).
        ``val_fn(unwrapped_models) -> {name: float}`` is the fixed validation loss: run like
        ``preview_fn`` every ``val_every`` steps (and before the first step of a fresh run); its
        values go to ``log.jsonl`` as ``val_<name>`` rows.
        """
        cfg, acc = self.cfg, self.accelerator
        self.out.mkdir(parents=True, exist_ok=True)
        start = self._resume()
        log = JsonLog(self.out / "log.jsonl", start if cfg.resume else 0, enabled=self.is_main)
        trackers.start(acc, self.out)
        batches = self._batches(dataset, collate_fn, start * cfg.grad_accum)
        window, t_start, last = Window(acc.device), time.perf_counter(), {}
        images_total = 0
        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {self.out.name}", unit="step",
                   disable=not self.is_main, dynamic_ncols=True)
        for m in self.trainable:
            self.models[m].train()
        do_val = val_fn is not None and cfg.val_every > 0
        if do_val and start == 0:
            self._validate(val_fn, log)
        try:
            while self.step < cfg.steps:
                self._set_lr()
                batch = next(batches)
                with acc.accumulate(*[self.models[n] for n in self.trainable]):
                    out = step_fn(self.models, batch, self.step)
                    loss = out["loss"]
                    self._check_finite(loss)
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm > 0:
                        acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                images = int(out.get("images", cfg.batch_size))
                window.add(loss, out, images)
                images_total += images
                if not acc.sync_gradients:
                    continue
                self.step += 1
                for n, ema in self.ema.items():
                    ema.step(self.unwrapped[n].parameters())
                    self.ema_buffers[n].step(self.unwrapped[n], ema.cur_decay_value)
                bar.update()
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    last = window.flush(acc, self.step, self.optimizer.param_groups[0]["lr"],
                                        self.seconds_before + time.perf_counter() - t_start)
                    log.write(last)
                    trackers.log_row(acc, last)
                    bar.set_postfix(loss=f"{last['loss']:.4g}", img_s=f"{last['images_per_s']:.1f}")
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save_checkpoint(time.perf_counter() - t_start)
                if preview_fn is not None and cfg.preview_every and self.step % cfg.preview_every == 0:
                    self._preview(preview_fn)
                    trackers.log_sample(acc, self.out, self.step)
                if do_val and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                    self._validate(val_fn, log)
        finally:
            bar.close()
            trackers.finish(acc)
        seconds = time.perf_counter() - t_start
        if self.saved_step != self.step:
            self.save_checkpoint(seconds)
        acc.wait_for_everyone()
        if self.is_main and final_fn is not None:
            final_fn(self.unwrapped, self.ema_models(), self.out)
        acc.wait_for_everyone()
        agree = self._check_replicas()
        total = acc.reduce(torch.tensor([float(images_total)], device=acc.device), "sum") \
            if acc.num_processes > 1 else torch.tensor([float(images_total)])
        return {"steps": self.step, "start_step": start, "seconds": seconds,
                "images_per_s": total.item() / max(seconds, 1e-9), "loss": last.get("loss"), "out": str(self.out),
                "replicas_agree": agree}

    def _check_replicas(self) -> bool:
        """Whether every process ends with the same trainable weights; recorded in ``replicas.json``."""
        from accelerate.utils import gather_object

        digest = hashlib.sha256()
        for n in self.trainable:
            for p in self.unwrapped[n].parameters():
                digest.update(p.detach().float().cpu().numpy().tobytes())
        hashes = gather_object([digest.hexdigest()]) if self.accelerator.num_processes > 1 else [digest.hexdigest()]
        agree = len(set(hashes)) == 1
        if self.is_main:
            write_json(self.out / "replicas.json", {"processes": len(hashes), "weights_sha256": hashes, "agree": agree})
            if not agree:
                warnings.warn("the training processes ended with different weights (see replicas.json)", stacklevel=2)
        return agree

    def _batches(self, dataset, collate_fn, start_micro: int) -> Iterator:
        """Batches on the device, from micro-step ``start_micro`` on, epoch after epoch."""
        from accelerate.utils import send_to_device

        cfg, acc = self.cfg, self.accelerator
        n = len(dataset)
        if n == 0:
            raise UserError("the training set is empty")
        per_process = math.ceil(n / acc.num_processes)
        per_epoch = max(1, per_process // cfg.batch_size)  # micro-batches per epoch per process
        epoch, pos = divmod(start_micro, per_epoch)
        while True:
            order = epoch_order(n, acc.num_processes, acc.process_index, cfg.seed, epoch)
            order = order[pos * cfg.batch_size: per_epoch * cfg.batch_size]
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=order, collate_fn=collate_fn,
                                num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(cfg.seed + epoch))
            for batch in loader:
                yield send_to_device(batch, acc.device)
            epoch, pos = epoch + 1, 0

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop every process, naming the step, when any process's loss is NaN or infinite."""
        bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, "sum")
        if bad.item() == 0:
            return
        kept = complete_checkpoints(self.out)
        where = (f"the last good checkpoint {kept[-1]} is kept (resume with train.resume=latest after "
                 "lowering train.lr or fixing the data)") if kept else "no checkpoint had been saved yet"
        value = loss.detach().float().mean().item()
        raise TrainingDiverged(f"loss is {value} at step {self.step + 1}: training stopped; {where}")

    def _set_lr(self) -> None:
        factor = lr_factor(self.cfg.lr_schedule, self.cfg.lr_min_ratio, self.cfg.steps, self.step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def _validate(self, val_fn, log) -> None:
        """The fixed validation loss on the main process, logged as one ``val_*`` row.

        With EMA, the row also holds ``val_ema_*``: the same loss of the EMA weights, the ones a
        run saves (the live weights' loss is the one to compare runs by, per example seen).
        """
        values = {}
        self._preview(lambda models, step: values.update(val_fn(models)))
        if self.is_main and self.ema:
            self._preview(lambda models, step: values.update({f"ema_{k}": v for k, v in val_fn(models).items()}),
                         self.ema_models())
        if self.is_main:
            row = {"step": self.step, **{f"val_{k}": float(v) for k, v in values.items()}}
            log.write(row)
            trackers.log_row(self.accelerator, row)

    def _preview(self, preview_fn, models: dict[str, nn.Module] | None = None) -> None:
        if self.is_main:
            models = self.unwrapped if models is None else models
            for n in self.trainable:
                models[n].eval()
            devices = [torch.cuda.current_device()] if self.accelerator.device.type == "cuda" else []
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                preview_fn(models, self.step)
            for n in self.trainable:
                models[n].train()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, seconds: float = 0.0) -> Path:
        """``checkpoint-<step>``: accelerate state + EMA + trainer state, renamed into place when complete."""
        acc = self.accelerator
        final = self.out / f"checkpoint-{self.step}"
        tmp = self.out / f".checkpoint-{self.step}.incomplete"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()  # every process's random state is written before the rename
        if self.is_main:
            from safetensors.torch import save_file

            ema_state = {}
            for n, ema in self.ema.items():
                save_file({str(i): p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                          tmp / f"ema_{n}.safetensors")
                ema_state[n] = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
                self.ema_buffers[n].save(tmp / f"ema_buffers_{n}.safetensors")
            write_json(tmp / STATE_FILE, {"step": self.step, "seconds": self.seconds_before + seconds,
                                          "num_processes": acc.num_processes, "ema": ema_state})
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in complete_checkpoints(self.out)[: -self.cfg.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        self.saved_step = self.step
        return final

    def _resume(self) -> int:
        """Load the checkpoint ``cfg.resume`` names; returns the step to continue from."""
        resume, acc = self.cfg.resume, self.accelerator
        if self.is_main:
            for stale in self.out.glob(".checkpoint-*.incomplete"):
                shutil.rmtree(stale, ignore_errors=True)
        path = resume_checkpoint(resume, self.out)
        if path is None:
            if resume and self.is_main:
                print(f"no checkpoint in {self.out} yet: starting from step 0")
            return 0
        state = json.loads((path / STATE_FILE).read_text())
        if state.get("num_processes", acc.num_processes) != acc.num_processes:
            raise UserError(f"{path} was saved by {state['num_processes']} processes; resume it with as many "
                            f"(this run has {acc.num_processes})")
        try:
            acc.load_state(str(path))
        except (RuntimeError, ValueError, OSError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot resume from {path} (different model or settings?): {first}") from None
        self._load_ema(path, state.get("ema", {}))
        self.step, self.seconds_before = int(state["step"]), float(state.get("seconds", 0.0))
        self.saved_step = self.step
        if self.is_main:
            print(f"resumed from {path} at step {self.step}")
        return self.step

    def _load_ema(self, path: Path, scalars: dict) -> None:
        from safetensors.torch import load_file

        for n, ema in self.ema.items():
            file = path / f"ema_{n}.safetensors"
            if not file.is_file() or n not in scalars:
                raise UserError(f"{path} has no EMA weights for {n!r} (saved with train.ema=false?)")
            shadow = load_file(file, device=str(ema.shadow_params[0].device))
            if len(shadow) != len(ema.shadow_params):
                raise UserError(f"{file} holds {len(shadow)} tensors, the model has {len(ema.shadow_params)}")
            ema.load_state_dict({**scalars[n], "shadow_params": [shadow[str(i)] for i in range(len(shadow))]})
            self.ema_buffers[n].load(path / f"ema_buffers_{n}.safetensors")
