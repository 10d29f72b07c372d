"""Frame rates that change inside a window (hummuss/rate_schedules.py): the frames and steps
each schedule picks (worked by hand), the evaluation conditions built on them (a causal model
streamed with per-frame steps equals its offline pass; a model without time gets the same
frames), and the frame-rate study's table, verdict and figure on fake runs."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from hummuss.data.clips import Sequence
from hummuss.evaluate import EvalConfig, evaluate, stream_sequences
from hummuss.rate_schedules import pick, schedule_sequences, segment_strides, walk_strides
from hummuss.windows import window_starts
from hummuss.zoo import build_model
from tests.test_report_verdicts import FLOORS, hand, runs_frame


def toy(T: int, start: float = 0.0) -> Sequence:
    """A sequence whose every value at frame t is start + t (so a frame shows where it came from)."""
    ramp = (start + np.arange(T, dtype=np.float32))[:, None, None] * np.ones((1, 17, 3), np.float32)
    return Sequence(inputs=ramp.copy(), labels=ramp * 2, fps=60.0, times=np.arange(T) / 60.0,
                    extras={"mm_per_unit": np.ones(T, np.float32), "labels_mm": ramp * 3})


# -- the schedules -------------------------------------------------------------------------------
def test_segments_read_each_window_at_strides_1_2_4_1():
    # window 8: positions 0-1 stride 1, 2-3 stride 2, 4-5 stride 4, 6-7 stride 1, then again
    assert segment_strides(10, 8).tolist() == [1, 1, 2, 2, 4, 4, 1, 1, 1, 1]
    # window 27: boundaries floor(27 k / 4) = 0, 6, 13, 20 -> 7, 7, 7, 6 frames
    assert segment_strides(27, 27).tolist() == [1] * 7 + [2] * 7 + [4] * 7 + [1] * 6
    # 20 native frames, window 8: 0, 1, +2 -> 3, 5, +4 -> 9, 13, +1 -> 14, 15 | 16, 17, +2 -> 19 (21 > 19)
    index, dt = pick(20, "segments", 8, np.random.default_rng(0))
    assert index.tolist() == [0, 1, 3, 5, 9, 13, 14, 15, 16, 17, 19]
    assert dt.tolist() == [1, 1, 2, 2, 4, 4, 1, 1, 1, 1, 2]
    assert dt.dtype == np.float32


class Scripted:
    """A generator stand-in: `integers` gives `first`, `random` the scripted draws in order."""

    def __init__(self, first, draws):
        self.first, self.draws = first, list(draws)

    def integers(self, lo, hi):
        assert (lo, hi) == (1, 5)
        return self.first

    def random(self):
        return self.draws.pop(0)


def test_walk_moves_by_one_within_1_to_4_with_probability_8_over_the_window():
    # window 16: a move when the draw < 0.5, then up when the next draw < 0.5, else down
    rng = Scripted(4, [0.1, 0.3,  # move up: 4 stays 4 (the range ends there)
                       0.1, 0.7,  # move down: 3
                       0.9,  # no move: 3
                       0.3, 0.6])  # move down: 2
    assert walk_strides(5, 16, rng).tolist() == [4, 4, 3, 3, 2]
    strides = walk_strides(243 * 200, 243, np.random.default_rng(3))
    assert set(np.unique(strides)) == {1, 2, 3, 4} and np.abs(np.diff(strides)).max() == 1
    # 8 tries per window; at 1 or 4 half of them are refused (there about half the time)
    changes = np.count_nonzero(np.diff(strides)) / 200
    assert 5.0 < changes < 7.5
    index, dt = pick(1000, "walk", 27, np.random.default_rng(5))
    assert index[0] == 0 and np.array_equal(np.diff(index), dt[1:]) and index[-1] < 1000
    again, _ = pick(1000, "walk", 27, np.random.default_rng(5))
    other, _ = pick(1000, "walk", 27, np.random.default_rng(6))
    assert np.array_equal(index, again) and not np.array_equal(index, other[:len(index)])


def test_schedule_sequences_pick_the_frames_and_their_ground_truth():
    seqs, dts = schedule_sequences([toy(20), toy(12, start=100.0)], "segments", 8)
    assert seqs[0].inputs[:, 0, 0].tolist() == [0, 1, 3, 5, 9, 13, 14, 15, 16, 17, 19]
    assert seqs[1].inputs[:, 0, 0].tolist() == [100, 101, 103, 105, 109]  # 113 is past frame 11
    assert seqs[1].labels[:, 0, 0].tolist() == [200, 202, 206, 210, 218]
    assert seqs[1].extras["labels_mm"][:, 0, 0].tolist() == [300, 303, 309, 315, 327]
    assert dts[1].tolist() == [1, 1, 2, 2, 4]
    walk, walk_dts = schedule_sequences([toy(50), toy(50)], "walk", 9, seed=2)
    assert np.array_equal(walk[0].times * 60, walk[0].inputs[:, 0, 0])  # times follow the frames
    with pytest.raises(ValueError, match="unknown rate schedule 'ramp'"):
        EvalConfig(schedules=("ramp",))


# -- the evaluation conditions ---------------------------------------------------------------------
@pytest.mark.parametrize("discretization", ["zoh", "foh"])
def test_stream_with_per_frame_dt_equals_the_offline_pass(discretization):
    """A causal model streamed with each frame's step equals one offline pass with dt (three
    sequences of different lengths in batches of two: the longest two together, the shorter
    one padded inside that batch, answers back in the order asked)."""
    torch.manual_seed(0)
    model = build_model("hummuss", "smoke", causal=True, discretization=discretization).eval()
    rng = np.random.default_rng(0)
    native = [toy(90), toy(70), toy(80)]
    for s in native:
        s.inputs[:] = rng.normal(size=s.inputs.shape).astype(np.float32)
    for name in ("segments", "walk"):
        seqs, dts = schedule_sequences(native, name, 12, seed=1)
        online = stream_sequences(model, seqs, dts, batch_size=2)
        assert len({len(s) for s in seqs}) == 3 and [len(y) for y in online] == [len(s) for s in seqs]
        with torch.no_grad():
            for s, d, y in zip(seqs, dts, online):
                offline = model(torch.from_numpy(s.inputs)[None], dt=torch.from_numpy(d)[None])[0].numpy()
                fixed = model(torch.from_numpy(s.inputs)[None])[0].numpy()
                gap, effect = np.abs(offline - y).max(), np.abs(fixed - y).max()
                # an untrained model's output moves little with the steps (~7e-5 here), so the
                # gap must also be a thousandth of what ignoring the steps changes
                assert gap <= 1e-4 and gap <= 1e-3 * effect, (gap, effect)


class Recorder(nn.Module):
    """Records what evaluation feeds it: (inputs, dt) per call; answers zeros."""

    def __init__(self, continuous: bool):
        super().__init__()
        self.continuous_time = continuous
        self.w = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, dt_scale=1.0, dt=None):
        self.calls.append((x.numpy().copy(), None if dt is None else dt.numpy().copy()))
        return torch.zeros_like(x)


@pytest.mark.parametrize("name", ["segments", "walk"])
def test_a_model_without_time_gets_the_same_frames(name):
    """MotionBERT (no notion of time) reads the picked frames as they come: the windows the
    continuous model is given, fixed and with each frame's dt."""
    from hummuss.baselines.motionbert import MotionBERT
    from hummuss.data import open_source

    assert not getattr(MotionBERT, "continuous_time", False)
    source = open_source("synthetic:scale=smoke")
    cfg = EvalConfig(lengths=(), schedules=(name,), rate_length=9, max_sequences=2, flip=False, protocol="all-frames")
    timeless, continuous = Recorder(False), Recorder(True)
    assert list(dict.fromkeys(evaluate(timeless, source, cfg)["condition"])) == [f"rate_{name}"]
    assert list(dict.fromkeys(evaluate(continuous, source, cfg)["condition"])) == [f"rate_{name}", f"rate_{name}_dt"]
    seqs, dts = schedule_sequences(source.sequences("test")[:2], name, 9, seed=0)
    windows = [(s.inputs[st:st + 9], d[st:st + 9]) for s, d in zip(seqs, dts) for st in window_starts(len(s), 9)]
    seen = np.concatenate([x for x, _ in timeless.calls])
    assert np.array_equal(seen, np.stack([w for w, _ in windows]))
    half = len(continuous.calls) // 2  # fixed calls, then the calls with dt
    assert np.array_equal(np.concatenate([x for x, _ in continuous.calls[:half]]), seen)
    assert all(d is None for _, d in continuous.calls[:half])
    assert np.array_equal(np.concatenate([d for _, d in continuous.calls[half:]]), np.stack([d for _, d in windows]))


# -- the frame-rate study: table, verdict, figure ---------------------------------------------------
def hold_runs(zoh_minus_foh):
    """Three seeds everywhere; first-order hold lower than zero-order hold by `zoh_minus_foh`."""
    from suite.registry import get_study

    study = get_study("frame-rate")
    base = [30.0, 30.4, 29.6]
    cells = {}
    for row, _ in study.table.rows:
        for col, _ in study.table.columns:
            if (row, col) in study.table.blank:
                continue
            variant, condition = study.table.cell(row, col)
            shift = 3.0 if condition.startswith(("fps_", "drop_", "rate_", "stream_")) and "_dt" not in condition \
                else 1.0 if condition not in ("as_trained", "stream") else 0.0
            values = [b + shift + (20.0 if variant == "motionbert-lite" else 0.0) for b in base]
            if variant == "hummuss-foh":
                values = [v - d for v, d in zip(values, zoh_minus_foh)]
            cells.setdefault(variant, {})[condition] = values
    return cells


@pytest.mark.parametrize("by, verdict", [([1.0, 1.2, 0.8], "first-order hold better"),
                                         ([-1.0, -1.2, -0.8], "zero-order hold better"),
                                         ([0.0, 3.0, -2.0], "undecided")])
def test_the_verdict_says_per_condition_whether_first_order_hold_beats_zero_order(by, verdict):
    from suite.registry import get_study
    from suite.report.runs import select_runs
    from suite.report.tables import model_rows, study_table

    study = get_study("frame-rate")
    frame = study_table(select_runs(runs_frame("frame-rate", hold_runs(by), FLOORS), study))
    check = study.claims(model_rows(frame), study)
    assert check.verdict == "held"  # rescaling still helps (fixed 2 mm above rescaled at x2, x4, x8)
    for label in ("x1", "x8 sub", "10% dropped", "rate 1, 1/2, 1/4, 1 per window", "rate walk 1 to 1/4"):
        assert f"{label}: {hand(by)} (paired, n=3), {verdict}" in check.text
    assert "streamed causal HumMUSS rate walk 1 to 1/4: fixed − rescaled = +2.0 mm [+2.0, +2.0]" in check.text


def test_one_seed_leaves_first_against_zero_order_hold_undecided():
    from suite.registry import get_study
    from suite.report.runs import select_runs
    from suite.report.tables import model_rows, study_table

    study = get_study("frame-rate")
    cells = {v: {c: {0: vals[0]} for c, vals in conds.items()} for v, conds in hold_runs([5.0] * 3).items()}
    check = study.claims(model_rows(study_table(select_runs(runs_frame("frame-rate", cells, FLOORS), study))), study)
    assert "x8 sub: +5.0 mm (paired, n=1, no interval), undecided" in check.text


def test_the_table_reads_streamed_conditions_and_leaves_their_other_columns_blank(tmp_path):
    from suite.registry import get_study
    from suite.report import FigureContext
    from suite.report.runs import select_runs
    from suite.report.tables import grid, missing_cells, study_table

    study = get_study("frame-rate")
    assert study.table.cell("hummuss-causal-stream-dt", "segments") == ("hummuss-causal", "stream_segments_dt")
    assert study.table.cell("hummuss-causal-stream-fixed", "walk") == ("hummuss-causal", "stream_walk")
    assert study.table.cell("hummuss-causal-stream-dt", "x1") == ("hummuss-causal", "stream")
    assert study.table.cell("hummuss-foh-dt", "walk") == ("hummuss-foh", "rate_walk_dt")
    assert study.table.cell("motionbert-lite", "segments") == ("motionbert-lite", "rate_segments")
    streamed_rows = {"hummuss-causal-stream-dt", "hummuss-causal-stream-fixed"}
    assert study.table.blank == {(r, c) for r in streamed_rows
                                 for c in ("x2", "x4", "x8", "up2", "drop_0.1", "drop_0.3")}
    sel = select_runs(runs_frame("frame-rate", hold_runs([1.0, 1.2, 0.8]), FLOORS), study)
    frame = study_table(sel)
    shown = grid(frame, study).set_index("")
    assert shown.loc["HumMUSS causal streamed, step rescaled", "x4 sub"] == "—"
    assert shown.loc["HumMUSS causal streamed, step rescaled", "rate walk 1 to 1/4"].startswith("31.0 ± 0.4")
    assert shown.loc["HumMUSS causal streamed, step fixed", "rate walk 1 to 1/4"].startswith("33.0 ± 0.4")
    assert shown.loc["HumMUSS first-order hold, step rescaled", "rate 1, 1/2, 1/4, 1 per window"].startswith("30.0 ±")
    assert missing_cells(frame, sel).empty  # a blank cell is not a missing run
    ctx = FigureContext(study, {study.name: frame}, {study.name: sel}, tmp_path / "rates.png", tracker=None)
    path = study.figures[0].draw(ctx)
    assert path.exists() and path.stat().st_size > 20_000


def test_the_registry_refuses_a_blank_cell_outside_the_table():
    from suite.registry import get_study, validate

    study = get_study("frame-rate")
    table = dataclasses.replace(study.table, blank=study.table.blank | {("hummuss-dt", "x16")})
    with pytest.raises(ValueError, match=r"blank cell \('hummuss-dt', 'x16'\) is not a cell of its table"):
        validate(dataclasses.replace(study, table=table))
