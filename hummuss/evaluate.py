"""Evaluation conditions: what the paper's claims are measured under.

Each condition runs the model on windows of the test sequences and scores frames in
millimetres under the config's protocol (`hummuss.protocols`: `motionbert` for Human3.6M
and MotionBERT's clip folders, `p-stmo` for MPI-INF-3DHP, `all-frames` otherwise; `auto`
picks by source). Every protocol sets the predicted root joint to 0 and leaves the other
joints where the model put them; predictions are scaled by the source's per-frame
`mm_per_unit`, the ground truth is `extras["labels_mm"]` where the source has it.

    F_<n>             windows of n frames (which windows and frames: the protocol), each
                      window one model call
    F_<n>_win<w>      the same n-frame windows, each run by the model in sliding windows
                      of w < n frames (MotionBERT evaluated at its training length)
    fps_x<k>[_dt]     input subsampled k times (k = 2, 4, 8); `_dt`: HumMUSS told the step
                      is k times longer (dt_scale = k); without: run as if nothing changed
    fps_up2[_dt]      input upsampled x2 (dt_scale = 1/2 with `_dt`)
    drop_<p>[_dt]     frames dropped at random with probability p; `_dt`: HumMUSS given
                      each frame's step (per-frame dt)
    rate_<s>[_dt]     the frame rate changes inside each window under schedule s
                      (`segments`: strides 1, 2, 4, 1 of the native frames, i.e. 60 -> 30 ->
                      15 -> 60 fps at 60 fps native; `walk`: a seeded random walk between
                      60 and 15 fps; hummuss.rate_schedules); `_dt`: given each frame's step
    stream_<s>[_dt]   the same frames, causal models run frame by frame through `stream()`
                      (with `stream`), with each frame's step (`_dt`) or the training step
    stream            causal models run frame by frame through `stream()`, scored on the
                      frames the protocol scores at `rate_length`
    as_trained        the F_<n> condition at the model's training length, under one name

The frame-rate, drop and schedule conditions use windows of `rate_length` frames under
the same protocol; the streamed ones are scored on the frames it scores there, and log
`max_abs_diff_offline` beside: the largest gap to one offline pass over the whole (picked)
sequence with the same steps. `condition_names` is the one list of these names: the runner labels
`as_trained` with `with_as_trained`, and the registry checks every table cell against
`condition_names`.

Models without a notion of time (MotionBERT) get the `fps_*`, `drop_*` and `rate_*`
conditions without `_dt` only (the same frames as they come). `evaluate(...)` returns a tidy table (condition, metric, value,
frames); `clip_mpjpe_mm` is the per-epoch validation number of the trainer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from hummuss import metrics
from hummuss.allocator import keep_freed_memory
from hummuss.data.augment import drop_frames
from hummuss.data.clips import Clips, Sequence
from hummuss.data.skeleton import MPI3DHP_PCK_JOINTS, ROOT
from hummuss.protocols import (
    AUTO,
    assemble,
    labels_mm,
    plan_windows,
    pred_mm,
    resolve_protocol,
    scored_frames,
)
from hummuss.rate_schedules import check_schedule, schedule_sequences
from hummuss.tta import flip_tta
from hummuss.windows import sliding_window_forward, window_starts

FACTORS = {"x2": 0.5, "x4": 0.25, "x8": 0.125, "up2": 2.0}  # name -> frame-rate multiplier
AS_TRAINED = "as_trained"


@dataclass
class EvalConfig:
    lengths: tuple[int, ...] = (243,)  # test window lengths F
    model_windows: tuple[int, ...] = ()  # also run each test window in windows of these lengths
    rates: tuple[str, ...] = ()  # subset of FACTORS
    rate_length: int = 243  # window length for the frame-rate and drop conditions
    drops: tuple[float, ...] = ()  # drop probabilities
    schedules: tuple[str, ...] = ()  # rates changing inside the window: hummuss.rate_schedules.SCHEDULES
    stream: bool = False  # frame-by-frame conditions (causal models)
    flip: bool = True  # flip test-time augmentation
    batch_size: int = 32
    seed: int = 0  # frame drops
    max_sequences: int = 0  # 0 = all test sequences
    protocol: str = AUTO  # motionbert, p-stmo, all-frames; auto: by source (hummuss.protocols)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        resolve_protocol(self.protocol, "")  # an unknown name fails here, naming the known ones
        for name in self.schedules:
            check_schedule(name)


# -- condition names ----------------------------------------------------------------------
def _length(F: int, window: int | None = None) -> str:
    return f"F_{F}" if window is None else f"F_{F}_win{window}"


def _rate(name: str, dt: bool) -> str:
    return f"fps_{name}" + ("_dt" if dt else "")


def _drop(p: float, dt: bool) -> str:
    return f"drop_{p:g}" + ("_dt" if dt else "")


def _schedule(name: str, dt: bool, stream: bool = False) -> str:
    return ("stream_" if stream else "rate_") + name + ("_dt" if dt else "")


def condition_names(config: EvalConfig, *, continuous: bool, causal: bool = False,
                    trained_frames: int | None = None) -> tuple[str, ...]:
    """Every condition `evaluate(model, source, config)` produces, in its order.

    `continuous`: the model takes a time step (the `_dt` conditions); `causal`: it
    streams (the `stream` condition). With `trained_frames`, also AS_TRAINED when
    F_<trained_frames> is among them.
    """
    names = []
    for F in config.lengths:
        names.append(_length(F))
        names += [_length(F, w) for w in config.model_windows if w < F]
    for name in config.rates:
        names += [_rate(name, False)] + ([_rate(name, True)] if continuous else [])
    for p in config.drops:
        names += [_drop(p, False)] + ([_drop(p, True)] if continuous else [])
    for name in config.schedules:
        names += [_schedule(name, False)] + ([_schedule(name, True)] if continuous else [])
        if config.stream and causal:
            names += [_schedule(name, False, stream=True), _schedule(name, True, stream=True)]
    if config.stream and causal:
        names.append("stream")
    if trained_frames is not None and _length(trained_frames) in names:
        names.append(AS_TRAINED)
    return tuple(names)


def with_as_trained(table: pd.DataFrame, frames: int) -> pd.DataFrame:
    """`table` with the rows of condition F_<frames> repeated under AS_TRAINED."""
    same = table[table["condition"] == _length(frames)].assign(condition=AS_TRAINED)
    return pd.concat([table, same], ignore_index=True)


# -- prediction ---------------------------------------------------------------------------
def _continuous(model) -> bool:
    return bool(getattr(model, "continuous_time", False))


def _forward(model, x, flip: bool, **kwargs) -> torch.Tensor:
    if flip:
        return flip_tta(model, x, **kwargs)
    return model(x, **kwargs)


@torch.no_grad()
def predict_windows(model, windows: list[np.ndarray], dts: list[np.ndarray] | None, *, flip: bool,
                    batch_size: int, dt_scale: float = 1.0, model_window: int = 0,
                    device=None) -> list[np.ndarray]:
    """Predict a list of windows (t_i, 17, 3), batching windows of equal length."""
    device = device or next(model.parameters()).device
    out: list[np.ndarray | None] = [None] * len(windows)
    by_length = defaultdict(list)
    for i, w in enumerate(windows):
        by_length[len(w)].append(i)
    for idx in by_length.values():
        for b in range(0, len(idx), batch_size):
            chunk = idx[b:b + batch_size]
            x = torch.from_numpy(np.stack([windows[i] for i in chunk])).float().to(device)
            kwargs = {}
            if _continuous(model):
                kwargs["dt_scale"] = dt_scale
                if dts is not None:
                    kwargs["dt"] = torch.from_numpy(np.stack([dts[i] for i in chunk])).float().to(device)
            if model_window and x.shape[1] > model_window:
                if "dt" in kwargs:
                    raise ValueError("per-frame dt with model_window windows is not supported")
                y = sliding_window_forward(lambda v, **kw: _forward(model, v, flip, **kw), x, model_window, **kwargs)
            else:
                y = _forward(model, x, flip, **kwargs)
            for i, pred in zip(chunk, y.float().cpu().numpy()):
                out[i] = pred
    return out  # type: ignore[return-value]


def predict_sequences(model, seqs: list[Sequence], window: int, *, dts=None, **kwargs) -> list[np.ndarray]:
    """Predict every frame of each sequence from windows of `window` frames."""
    windows, dt_windows, owners = [], [] if dts is not None else None, []
    for s, seq in enumerate(seqs):
        for st in window_starts(len(seq), window):
            windows.append(seq.inputs[st:st + window])
            if dts is not None:
                dt_windows.append(dts[s][st:st + window])
            owners.append((s, st))
    preds = predict_windows(model, windows, dt_windows, **kwargs)
    out = [np.zeros(seq.labels.shape, np.float32) for seq in seqs]
    count = [np.zeros(len(seq), np.float32) for seq in seqs]
    for (s, st), pred in zip(owners, preds):
        out[s][st:st + len(pred)] += pred
        count[s][st:st + len(pred)] += 1
    return [o / c[:, None, None] for o, c in zip(out, count)]


def to_mm(pose: np.ndarray, mm_per_unit: np.ndarray) -> np.ndarray:
    """Root-relative pose (..., T, 17, 3) in millimetres."""
    rel = pose - pose[..., ROOT:ROOT + 1, :]
    return rel * np.asarray(mm_per_unit)[..., None, None]


def predict_protocol(model, seqs: list[Sequence], window: int, protocol: str, *, dts=None,
                     seed: int = 0, **kwargs) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per sequence (prediction (T, 17, 3) with the root set to 0, scored (T,) bool) under
    `protocol` (resolved, see hummuss.protocols) at window length `window`."""
    plan = plan_windows(seqs, window, protocol, seed=seed)
    windows = [seqs[w.seq].inputs[w.index] for w in plan]
    dt_windows = [np.asarray(dts[w.seq])[w.index] for w in plan] if dts is not None else None
    preds = predict_windows(model, windows, dt_windows, **kwargs) if plan else []
    return assemble(plan, preds, seqs)


def score(preds: list[np.ndarray], seqs: list[Sequence], averaging: str = "frames",
          pck: bool = False, scored: list[np.ndarray] | None = None) -> dict[str, float]:
    """MPJPE, P-MPJPE (and PCK/AUC) in mm over the scored, valid frames of the sequences.

    The predicted root is set to 0 (`protocols.pred_mm`); the ground truth is
    `protocols.labels_mm`. `averaging` `frames` averages over frames; `actions` averages
    per action first (MotionBERT's Human3.6M protocol). `scored`: per sequence (T,) bool,
    the frames the protocol scores (default: all).
    """
    rows = defaultdict(list)
    for i, (pred, seq) in enumerate(zip(preds, seqs)):
        keep = np.asarray(seq.extras.get("valid", np.ones(len(seq), bool)), bool)
        if scored is not None:
            keep = keep & np.asarray(scored[i], bool)
        if not keep.any():
            continue
        p = pred_mm(pred, seq.extras["mm_per_unit"])[keep]
        g = labels_mm(seq)[keep]
        group = seq.meta.get("action", "all") if averaging == "actions" else "all"
        rows[("mpjpe", group)].append(metrics.mpjpe(p, g, reduce=False))
        rows[("p_mpjpe", group)].append(metrics.p_mpjpe(p, g, reduce=False))
        if pck:
            rows[("pck", group)].append(metrics.pck(p, g, joints=MPI3DHP_PCK_JOINTS, reduce=False))
            rows[("auc", group)].append(metrics.auc(p, g, joints=MPI3DHP_PCK_JOINTS, reduce=False))
    result = defaultdict(list)
    for (name, _group), values in rows.items():
        result[name].append(float(np.mean(np.concatenate(values))))
    return {name: float(np.mean(v)) for name, v in result.items()}


@torch.no_grad()
def clip_mpjpe_mm(model, clips: Clips, batch_size: int = 64, flip: bool = True, device=None) -> float:
    """MPJPE (mm) of a model on stacked clips: the trainer's validation number."""
    was_training = model.training
    model.eval()
    try:
        windows = list(clips.inputs.astype(np.float32))
        preds = predict_windows(model, windows, None, flip=flip, batch_size=batch_size, device=device)
        mmpu = clips.extras["mm_per_unit"]
        errs = metrics.mpjpe(pred_mm(np.stack(preds), mmpu), to_mm(clips.labels, mmpu), reduce=False)
        valid = clips.extras.get("valid")
        return float(np.mean(errs[np.asarray(valid, bool)] if valid is not None else errs))
    finally:
        model.train(was_training)


@torch.no_grad()
def stream_sequences(model, seqs: list[Sequence], dts: list[np.ndarray] | None = None,
                     batch_size: int = 64) -> list[np.ndarray]:
    """Frame-by-frame predictions of a causal model; `dts`: each frame's step (default: the
    training step). Batches of up to `batch_size` sequences of similar length (longest first);
    the shorter ones are padded at their end (last frame repeated, step 1), which a causal
    model's earlier outputs never see."""
    out: list[np.ndarray | None] = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        chunk = _stream_batch(model, [seqs[i] for i in idx], None if dts is None else [dts[i] for i in idx])
        for i, pred in zip(idx, chunk):
            out[i] = pred
    return out  # type: ignore[return-value]


def _stream_batch(model, seqs: list[Sequence], dts: list[np.ndarray] | None) -> list[np.ndarray]:
    device = next(model.parameters()).device
    T = max(len(s) for s in seqs)
    x = np.stack([np.concatenate([s.inputs, np.repeat(s.inputs[-1:], T - len(s), 0)]) for s in seqs])
    x = torch.from_numpy(x).float().to(device)
    steps: list = [1.0] * T
    if dts is not None:  # per-stream steps (the stream takes steps that are all one step as one float)
        dt = np.stack([np.concatenate([np.asarray(d, np.float32), np.ones(T - len(d), np.float32)]) for d in dts])
        steps = [torch.from_numpy(d).to(device) for d in dt.T]
    stepper = model.stream(batch_size=len(seqs), compile=False)  # eager: no compilation per evaluation
    y = torch.stack([stepper.step(x[:, t], steps[t]) for t in range(T)], 1).cpu().numpy()
    return [pred[:len(s)] for pred, s in zip(y, seqs)]


def evaluate(model, source, config: EvalConfig | None = None, split: str = "test") -> pd.DataFrame:
    """Run the configured conditions; tidy table with columns condition, metric, value, frames."""
    cfg = config or EvalConfig()
    keep_freed_memory()
    model.eval()
    protocol = resolve_protocol(cfg.protocol, getattr(source, "name", ""))
    averaging = "actions" if source.name == "h36m" else "frames"
    pck = source.name == "mpi3dhp"
    rows: list[dict] = []

    def seqs_at(rate: float) -> list[Sequence]:
        seqs = source.sequences(split, rate=rate)
        return seqs[: cfg.max_sequences] if cfg.max_sequences else seqs

    def add(condition, predicted, seqs):
        preds, scored = [p for p, _ in predicted], [c for _, c in predicted]
        frames = int(sum((np.asarray(s.extras.get("valid", np.ones(len(s), bool)), bool) & c).sum()
                         for s, c in zip(seqs, scored)))
        for name, value in score(preds, seqs, averaging, pck, scored).items():
            rows.append(dict(condition=condition, metric=name, value=value, frames=frames))

    common = dict(flip=cfg.flip, batch_size=cfg.batch_size, seed=cfg.seed)

    def run(seqs, window, **kwargs):
        return predict_protocol(model, seqs, window, protocol, **common, **kwargs)

    native = seqs_at(1.0)
    for F in cfg.lengths:
        add(_length(F), run(native, F), native)
        for w in cfg.model_windows:
            if w < F:
                add(_length(F, w), run(native, F, model_window=w), native)
    for name in cfg.rates:
        if name not in FACTORS:
            raise ValueError(f"unknown frame-rate condition {name!r}; known: {', '.join(FACTORS)}")
        rate = FACTORS[name]
        seqs = seqs_at(rate)
        add(_rate(name, False), run(seqs, cfg.rate_length), seqs)
        if _continuous(model):
            add(_rate(name, True), run(seqs, cfg.rate_length, dt_scale=1 / rate), seqs)
    rng = np.random.default_rng(cfg.seed)
    for p in cfg.drops:
        pairs = [drop_frames(s, rng, p) for s in native]
        seqs, dts = [q for q, _ in pairs], [d for _, d in pairs]
        add(_drop(p, False), run(seqs, cfg.rate_length), seqs)
        if _continuous(model):
            add(_drop(p, True), run(seqs, cfg.rate_length, dts=dts), seqs)
    streams = cfg.stream and getattr(getattr(model, "config", None), "causal", False)

    def streamed(condition, seqs, dts=None):
        online = stream_sequences(model, seqs, dts, batch_size=cfg.batch_size)
        frame_set = scored_frames(seqs, cfg.rate_length, protocol, seed=cfg.seed)
        add(condition, list(zip(online, frame_set)), seqs)
        # the frame-by-frame outputs must equal the offline pass over whole sequences
        offline = predict_sequences(model, seqs, max(len(s) for s in seqs), dts=dts, flip=False,
                                    batch_size=cfg.batch_size)
        gap = max(float(np.abs(a - b).max()) for a, b in zip(online, offline))
        rows.append(dict(condition=condition, metric="max_abs_diff_offline", value=gap, frames=0))

    for name in cfg.schedules:
        seqs, dts = schedule_sequences(native, name, cfg.rate_length, seed=cfg.seed)
        add(_schedule(name, False), run(seqs, cfg.rate_length), seqs)
        if _continuous(model):
            add(_schedule(name, True), run(seqs, cfg.rate_length, dts=dts), seqs)
        if streams:
            streamed(_schedule(name, False, stream=True), seqs)
            streamed(_schedule(name, True, stream=True), seqs, dts)
    if streams:
        streamed("stream", native)
    return pd.DataFrame(rows, columns=["condition", "metric", "value", "frames"])
