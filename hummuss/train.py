"""The trainer: any model of the library on any clips, one CPU or many GPUs.

    from hummuss.train import Trainer, TrainConfig
    trainer = Trainer(model, train_clips, val_clips, TrainConfig(epochs=2), out_dir="runs/x")
    result = trainer.fit()          # resumes from runs/x/last.pt when it exists

Defaults follow MotionBERT's pose3d recipe: AdamW (weight decay 0.01), learning rate
x0.99 after every epoch, loss MPJPE + 0.5 N-MPJPE + 20 velocity on root-relative
targets, random left-right flips; optional pre-training corruption of the 2D input and
gradient clipping.

Every epoch ends with a validation pass (MPJPE in mm) and an atomic write of
`last.pt` (and `best.pt` when validation improved): written to a temporary file, then
renamed, so a crash mid-write leaves the previous checkpoint intact; the replaced `last.pt`
is kept as `last.prev.pt`, and every checkpoint carries a checksum, so a corrupt or
truncated `last.pt` is detected and resuming falls back to `last.prev.pt` (or to a fresh
start), with a warning. A checkpoint holds
the model, optimiser, schedule, random-number states, epoch and step; a resumed run
continues exactly where the last completed epoch left it (bit-identical on the CPU).

Distributed: started by `torchrun --nproc-per-node N -m hummuss.train ...` or by any
code under torchrun, the trainer wraps the model in DistributedDataParallel (gloo on
the CPU, nccl on GPUs), shards batches with DistributedSampler, and only rank 0
writes checkpoints and calls callbacks. On a GPU it uses bf16 autocast, pinned memory
and data-loader workers.

Reporting goes through callbacks (`Callback`); this module never imports MLflow or
Optuna. `on_epoch_end` may return True to stop training (how a sweep prunes a trial).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from hummuss import mkl_vendor
from hummuss.allocator import keep_freed_memory
from hummuss.checkpoint import (
    CHECKPOINT_FORMAT,
    load_resumable,
    rng_state,
    save_atomic,
    seed_everything,
    set_rng_state,
)
from hummuss.config import PresetConfig, coerce, parse_overrides
from hummuss.data.augment import corrupt
from hummuss.data.clips import Clips
from hummuss.data.skeleton import ROOT, flip_pose
from hummuss.distributed import DistInfo, agree, pick_device
from hummuss.evaluate import clip_mpjpe_mm
from hummuss.losses import PoseLoss
from hummuss.schedule import SCHEDULES, lr_factor


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


@dataclass
class TrainConfig(PresetConfig):
    epochs: int = 60
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    lr_decay: float = 0.99  # exponential schedule: lr x lr_decay after every epoch
    schedule: str = "exponential"  # exponential (MotionBERT's) | cosine (per step, to min_lr_ratio x lr)
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps to lr over the first steps
    min_lr_ratio: float = 0.0  # cosine: the last step's lr as a fraction of lr
    w_mpjpe: float = 1.0
    w_scale: float = 0.5  # N-MPJPE
    w_velocity: float = 20.0
    flip: bool = True  # random left-right flips in training
    flip_test: bool = True  # flip test-time augmentation in validation
    corruption: bool = False  # MotionBERT's pre-training corruption of the 2D input
    clip_grad: float = 0.0  # max gradient norm; 0 = off
    max_steps_per_epoch: int = 0  # 0 = the whole epoch
    eval_batch_size: int = 64
    max_val_clips: int = 0  # validate on at most this many clips, evenly spaced; 0 = all
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off
    num_workers: int = -1  # -1 = auto (0 on the CPU, 4 on a GPU)

    PRESETS = {
        "motionbert": {},
        "pretrain": dict(lr=3e-4, corruption=True, batch_size=64, epochs=90),
        # 4,800 steps of batch 8, warm-up then cosine, gradients clipped at norm 1 (AdamW is
        # insensitive to the scale of a step's gradient, so this only damps spikes). Seed 0, one
        # thread, every synthetic test sequence at F = 27 with flip (linear lift 74.9 mm):
        # HumMUSS cpu 66.5 / 56.4 / 49.7 / 44.5 mm at 600 / 1,200 / 2,400 / 4,800 steps, the
        # first with 0.6 x the lift in reach; MotionBERT-Lite cpu (lr 1e-3) 84.1 at 2,400, 57.2
        # at 4,800. Still not converged (the last doubling gained 10% and 32%): see the scale
        # in suite/registry.py
        "cpu": dict(epochs=48, batch_size=8, lr=3e-3, max_steps_per_epoch=100, max_val_clips=96,
                    eval_batch_size=32, schedule="cosine", warmup_steps=20, clip_grad=1.0),
        "quick": dict(epochs=10, batch_size=16, lr=3e-3, max_steps_per_epoch=16, max_val_clips=48,
                      eval_batch_size=32, schedule="cosine", warmup_steps=20, clip_grad=1.0),
        "smoke": dict(epochs=2, batch_size=8, lr=1e-3, max_steps_per_epoch=4, eval_batch_size=16),
    }

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("TrainConfig.warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"TrainConfig.amp must be auto, bf16 or off, got {self.amp!r}")


class Callback:
    """Hooks the trainer calls on rank 0. Override what you need."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> bool | None:
        """Called after validation; return True to stop training."""

    def on_checkpoint(self, path: Path, best: bool) -> None: ...

    def on_train_end(self, result: TrainResult) -> None: ...


@dataclass
class TrainResult:
    epochs_run: int  # epochs completed in total (including before a resume)
    steps: int
    best_epoch: int
    best_val_mpjpe: float
    history: list[dict[str, float]]  # per-epoch metrics of every epoch, also those before a resume
    stopped_early: bool
    checkpoint: Path | None  # best.pt (rank 0)


# -- data ---------------------------------------------------------------------------------
class ClipDataset(Dataset):
    """(index) -> (input (F, 17, 3), root-relative label (F, 17, 3)) as float32 tensors."""

    def __init__(self, clips: Clips):
        if len(clips) == 0:
            raise ValueError("no training clips: the data source yielded no clip of the requested length")
        self.inputs = torch.from_numpy(np.ascontiguousarray(clips.inputs, dtype=np.float32))
        labels = np.asarray(clips.labels, dtype=np.float32)
        self.labels = torch.from_numpy(np.ascontiguousarray(labels - labels[..., ROOT:ROOT + 1, :]))

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        return self.inputs[i], self.labels[i]


# -- the trainer ------------------------------------------------------------------------
class Trainer:
    def __init__(self, model: torch.nn.Module, train: Clips, val: Clips | None, config: TrainConfig,
                 out_dir: str | Path, callbacks: list[Callback] | tuple = (), log=None):
        self.config, self.out_dir = config, Path(out_dir)
        self.callbacks = list(callbacks)
        self.dist = DistInfo.from_env()
        self.device = pick_device(config.device, self.dist.local_rank)
        if self.device.type == "cpu":
            keep_freed_memory()  # no page faults for each step's activations (hummuss/allocator.py)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        if self.device.type == "cpu" and mkl_vendor.applies() and not mkl_vendor.intel_code_path():
            self.log(f"{mkl_vendor.code_path()}: about half its matmul rate; start Python with "
                     "`python -m hummuss.mkl_vendor -- python ...` (as hummuss-suite does) for its Intel code path")
        seed_everything(config.seed + self.dist.rank)
        self.model = model.to(self.device)
        self.train_set, self.val = ClipDataset(train), _subset(val, config.max_val_clips)
        self.loss_fn = PoseLoss(config.w_mpjpe, config.w_scale, config.w_velocity)
        # fused: one pass over all parameters (PyTorch's CPU and CUDA kernels), where the default
        # on the CPU loops over them in Python: `cpu` HumMUSS's 189 tensors 6.1 -> 1.3 ms a step,
        # paper size's 459 tensors 75 -> 22 ms (one thread); the same update to float32 rounding
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           fused=self.device.type in ("cpu", "cuda") or None)
        self.steps_per_epoch = self._steps_per_epoch()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(  # stepped after every optimiser step
            self.optimizer, lambda step: lr_factor(config, step, self.steps_per_epoch))
        self.generator = torch.Generator().manual_seed(config.seed)  # shuffling and flips
        self.np_rng = np.random.default_rng(config.seed)  # corruption
        self.epoch, self.step, self.best = 0, 0, (math.inf, -1)  # (val mpjpe, epoch)
        self.history: list[dict[str, float]] = []  # one dict per completed epoch
        self.use_amp = self.device.type == "cuda" and config.amp != "off"

    # -- setup ----------------------------------------------------------------------------
    def _init_distributed(self):
        if self.dist.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend=backend)
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(self.model, device_ids=ids)
        return self.model

    def _steps_per_epoch(self) -> int:
        per_rank = math.ceil(len(self.train_set) / self.dist.world_size)
        steps = math.ceil(per_rank / self.config.batch_size)
        return min(steps, self.config.max_steps_per_epoch) if self.config.max_steps_per_epoch else steps

    def _loader(self, epoch: int) -> DataLoader:
        cfg, on_gpu = self.config, self.device.type == "cuda"
        workers = (4 if on_gpu else 0) if cfg.num_workers < 0 else cfg.num_workers
        if self.dist.world_size > 1:
            sampler = DistributedSampler(self.train_set, self.dist.world_size, self.dist.rank,
                                         shuffle=True, seed=cfg.seed)
            sampler.set_epoch(epoch)
        else:
            sampler = torch.randperm(len(self.train_set), generator=self.generator).tolist()
        return DataLoader(self.train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=on_gpu, drop_last=False, persistent_workers=False)

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict:
        model = self.model
        return {
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "model_config": model.config.to_dict() if hasattr(model, "config") else {},
            "model_class": type(model).__name__,
            "train_config": asdict(self.config),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(self.np_rng, self.generator),
            "epoch": self.epoch,
            "step": self.step,
            "best_val_mpjpe": self.best[0],
            "best_epoch": self.best[1],
            "history": self.history,
        }

    def resume(self, ckpt: dict, path: Path) -> None:
        """Continue from the checkpoint `ckpt` (read from `path`)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"], self.np_rng, self.generator)
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.best = (float(ckpt["best_val_mpjpe"]), int(ckpt["best_epoch"]))
        self.history = [dict(h) for h in ckpt.get("history", [])]
        self.log(f"resumed from {path} at epoch {self.epoch}, step {self.step}")

    def _write_checkpoints(self, improved: bool) -> None:
        payload = self.state()
        last = self.out_dir / "last.pt"
        save_atomic(payload, last, keep_previous=True)  # the replaced one stays as last.prev.pt
        self._notify("on_checkpoint", last, False)
        if improved:
            best = self.out_dir / "best.pt"
            save_atomic(payload, best)
            self._notify("on_checkpoint", best, True)

    def _notify(self, hook: str, *args):
        answers = [getattr(cb, hook)(*args) for cb in self.callbacks] if self.dist.main else []
        return any(bool(a) for a in answers)

    # -- the loop ---------------------------------------------------------------------------
    def _batch(self, x: torch.Tensor, y: torch.Tensor):
        cfg = self.config
        if cfg.corruption:
            x = torch.from_numpy(corrupt(x.numpy(), self.np_rng)).to(torch.float32)
        if cfg.flip:
            flip = torch.rand(len(x), generator=self.generator) < 0.5
            if flip.any():
                x, y = x.clone(), y.clone()
                x[flip], y[flip] = flip_pose(x[flip]), flip_pose(y[flip])
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, where: str = ""):
        """One optimisation step on a batch already on the device (forward under autocast,
        loss, backward, optional clipping, AdamW, schedule) -> (loss, detached terms).
        The one step of `train_epoch`; the training benchmarks time it too."""
        with self._autocast():
            pred = net(x)
        loss, terms = self.loss_fn(pred.float(), y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at epoch {self.epoch + 1}, "
                                     f"step {self.step + 1}{where}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), self.config.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss, terms

    def train_epoch(self, net: torch.nn.Module) -> dict[str, float]:
        cfg = self.config
        net.train()
        loader = self._loader(self.epoch)
        total = min(len(loader), self.steps_per_epoch)
        sums: dict[str, torch.Tensor] = {}
        progress = _progress(total, f"epoch {self.epoch + 1}/{cfg.epochs}", self.dist.main)
        for i, (x, y) in enumerate(loader):
            if i >= total:
                break
            loss, terms = self.train_step(net, *self._batch(x, y), where=f" (batch {i + 1} of the epoch)")
            for k, v in {"loss": loss.detach(), **terms}.items():
                sums[k] = sums.get(k, 0.0) + v
            progress.update(loss.item())
        progress.close()
        n = max(1, min(total, len(loader)))
        return {f"train/{k}": float(v) / n for k, v in sums.items()}

    def validate(self) -> dict[str, float]:
        if self.val is None or len(self.val) == 0:
            return {}
        mm = clip_mpjpe_mm(self.model, self.val, batch_size=self.config.eval_batch_size,
                           flip=self.config.flip_test, device=self.device)
        return {"val/mpjpe": mm}

    def fit(self, resume: bool = True) -> TrainResult:
        cfg = self.config
        last = self.out_dir / "last.pt"
        if self.dist.main and self.out_dir.is_dir():  # leftovers of a write killed midway
            for stale in self.out_dir.glob(".*.pt.*.tmp"):
                stale.unlink(missing_ok=True)
        if resume:  # the newest good one of last.pt and last.prev.pt; a corrupt one is moved aside
            ckpt, used = load_resumable(last, self.log, quarantine=self.dist.main)
            if ckpt is not None:
                self.resume(ckpt, used)
        net = self._init_distributed()
        self._notify("on_train_start", self)
        stopped = False
        while self.epoch < cfg.epochs and not stopped:
            started = time.perf_counter()
            metrics = self.train_epoch(net)
            self.epoch += 1
            if self.dist.main:
                metrics.update(self.validate())
            metrics["lr"] = self.optimizer.param_groups[0]["lr"]
            metrics["time/epoch_s"] = time.perf_counter() - started
            val = metrics.get("val/mpjpe", metrics["train/loss"])
            improved = val < self.best[0]
            if improved:
                self.best = (val, self.epoch)
            self.history.append({"epoch": self.epoch, **metrics})
            if self.dist.main:
                self._write_checkpoints(improved)
                self.log(f"epoch {self.epoch}/{cfg.epochs} " + " ".join(
                    f"{k}={v:.4g}" for k, v in metrics.items()))
            stopped = self._notify("on_epoch_end", self.epoch, metrics)
            stopped = agree(stopped, self.dist, self.device)
        result = TrainResult(self.epoch, self.step, self.best[1], self.best[0], list(self.history), stopped,
                             self.out_dir / "best.pt" if self.dist.main else None)
        self._notify("on_train_end", result)
        if self.dist.world_size > 1 and dist.is_initialized():
            dist.barrier()
        return result


def _subset(clips: Clips | None, n: int) -> Clips | None:
    """At most n clips, evenly spaced (all when n is 0 or there are fewer)."""
    if clips is None or not n or len(clips) <= n:
        return clips
    idx = np.linspace(0, len(clips) - 1, n).round().astype(int)
    return Clips(clips.inputs[idx], clips.labels[idx], np.asarray(clips.fps)[idx],
                 clips.meta.iloc[idx].reset_index(drop=True), {k: v[idx] for k, v in clips.extras.items()})


class _progress:
    """tqdm on a terminal, one plain line per epoch elsewhere (and nothing off rank 0)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    def update(self, loss: float):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


# -- command line: the bare trainer (no tracking), e.g. under torchrun ---------------------
def main(argv: list[str] | None = None) -> int:
    import argparse

    from hummuss.data import open_source
    from hummuss.zoo import build_model, config_class

    p = argparse.ArgumentParser(prog="python -m hummuss.train", description="Train one model (no tracking).")
    p.add_argument("--model", default="hummuss")
    p.add_argument("--preset", default="smoke")
    p.add_argument("--train-preset", default="smoke", help="a TrainConfig preset")
    p.add_argument("--data", default="synthetic:scale=smoke")
    p.add_argument("--frames", type=int, default=27, help="clip length in frames")
    p.add_argument("--stride", type=int, default=0, help="clip stride (default: frames / 3)")
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--model-set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--train-set", nargs="*", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    try:
        model_cfg = config_class(args.model).preset(
            args.preset, **coerce(config_class(args.model), parse_overrides(args.model_set)))
        train_cfg = TrainConfig.preset(args.train_preset, **coerce(TrainConfig, parse_overrides(args.train_set)))
        source = open_source(args.data)
    except (ValueError, FileNotFoundError) as err:
        p.exit(2, f"error: {err}\n")
    torch.manual_seed(train_cfg.seed)
    model = build_model(args.model, args.preset, **model_cfg.to_dict())
    stride = args.stride or max(1, args.frames // 3)
    train, val = source.training_clips(args.frames, stride)  # validation: held-out training sequences
    result = Trainer(model, train, val, train_cfg, args.out).fit()
    if DistInfo.from_env().main:
        print(f"done: {result.epochs_run} epochs, {result.steps} steps, best val MPJPE "
              f"{result.best_val_mpjpe:.2f} mm at epoch {result.best_epoch}")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
