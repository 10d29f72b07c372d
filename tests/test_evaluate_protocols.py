"""Evaluation protocols against independent computations of the originals' scoring.

Small files are written in each layout (the LCN/MotionBERT Human3.6M pickle, P-STMO's
3DHP npz); the expected numbers come from direct formulas written here, not from
`hummuss.evaluate`: MotionBERT's test clips (runs of one source id cut every F frames,
the tail and a short last sequence unscored), its root handling (predicted root set to 0,
denormalised, times the 2.5D factor, against `joints_2.5d_image`), per-action means; and
P-STMO's one centred, edge-padded window per valid 3DHP frame.
"""

import pickle

import numpy as np
import pytest
import torch

from hummuss.data import open_source
from hummuss.data.clips import Sequence
from hummuss.evaluate import EvalConfig, evaluate
from hummuss.protocols import plan_windows, resolve_protocol

CAMS = {"54138969": (1000, 1002), "55011271": (1000, 1000), "58860488": (1000, 1000), "60457274": (1000, 1002)}
LEFT, RIGHT = [4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]
BLOCKED = {"s_09_act_05_subact_02", "s_09_act_10_subact_02", "s_09_act_13_subact_01"}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HUMMUSS_CACHE_DIR", str(tmp_path / "cache"))


# -- fixed test models -------------------------------------------------------------------
class PerFrame(torch.nn.Module):
    """y = x A + b per frame and joint; b[root] != 0, so the root output is not zero."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.nn.Parameter(torch.eye(3) + 0.3 * torch.randn(3, 3, generator=g), requires_grad=False)
        self.b = torch.nn.Parameter(0.2 * torch.randn(17, 3, generator=g), requires_grad=False)
        with torch.no_grad():
            self.b[0] = torch.tensor([0.31, -0.27, 0.45])

    def forward(self, x):
        return x @ self.A + self.b


class Context(PerFrame):
    """Uses its whole window (the window mean of every joint), so which frames share a
    window changes the prediction; root output not zero either."""

    def forward(self, x):
        return x @ self.A + 0.7 * x.mean(dim=1, keepdim=True).flip(-1) + self.b


def _flip_np(a):
    out = a.copy()
    out[..., 0] *= -1
    out[..., LEFT + RIGHT, :] = out[..., RIGHT + LEFT, :]
    return out


def _run(model, window, flip):
    """One model call on one window (t, 17, 3) -> (t, 17, 3), MotionBERT's flip TTA."""
    with torch.no_grad():
        y = model(torch.as_tensor(window, dtype=torch.float32)[None])[0].numpy().astype(np.float64)
        if flip:
            yf = model(torch.as_tensor(_flip_np(window), dtype=torch.float32)[None])[0].numpy()
            y = (y + _flip_np(yf.astype(np.float64))) / 2
    return y


def _procrustes_error(pred, gt):
    """Per-frame P-MPJPE (T,): similarity transform by SVD, reflection fixed."""
    out = []
    for p, g in zip(pred, gt, strict=True):
        Y, X = p - p.mean(0), g - g.mean(0)
        U, S, Vt = np.linalg.svd(Y.T @ X)
        if np.linalg.det(U @ Vt) < 0:
            U[:, -1] *= -1
            S[-1] *= -1
        s = S.sum() / (Y ** 2).sum()
        out.append(np.linalg.norm(s * Y @ (U @ Vt) + g.mean(0) - g, axis=-1).mean())
    return np.array(out)


# -- Human3.6M layout ----------------------------------------------------------------------
def _h36m_file(tmp_path, F):
    """A pickle whose test split has a sequence not a multiple of F, an excluded one, one of
    exactly 3F, and a last sequence shorter than F; joints_2.5d_image deliberately not
    exactly joint3d_image x factor (the original reads joints_2.5d_image)."""
    rng = np.random.default_rng(F)
    runs = [("s_09_act_02_subact_01_ca_01", "54138969", "Walk", round(2.2 * F)),
            ("s_09_act_05_subact_02_ca_02", "55011271", "Walk", F + 13),  # excluded by MotionBERT
            ("s_11_act_03_subact_01_ca_03", "58860488", "Sit", 3 * F),
            ("s_11_act_02_subact_02_ca_04", "60457274", "Walk", F + 23),
            ("s_11_act_04_subact_01_ca_01", "54138969", "Sit", F // 2)]  # short and last: no clip

    def part(rs, test):
        n = sum(r[3] for r in rs)
        j3d = rng.uniform(100, 900, size=(n, 17, 3))
        j3d[..., 2] = rng.normal(0, 60, size=(n, 17))
        j3d[..., 2] -= j3d[:, :1, 2]
        p = {"joint_2d": j3d[..., :2] + rng.normal(0, 8, size=(n, 17, 2)),
             "confidence": rng.uniform(0.3, 1, size=(n, 17)), "joint3d_image": j3d,
             "camera_name": np.concatenate([[c] * k for _, c, _, k in rs]),
             "source": np.concatenate([[s] * k for s, _, _, k in rs])}
        if test:
            p["2.5d_factor"] = rng.uniform(3.5, 5.5, size=n)
            p["joints_2.5d_image"] = j3d * p["2.5d_factor"][:, None, None] + rng.normal(0, 4, size=(n, 17, 3))
            p["action"] = np.concatenate([[a] * k for _, _, a, k in rs])
        return p

    data = {"train": part([("s_01_act_02_subact_01_ca_01", "54138969", "", 40)], False), "test": part(runs, True)}
    path = tmp_path / "h36m.pkl"
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path, data["test"]


def _motionbert_reference(model, test, F, flip, subtract_root=False):
    """MotionBERT's evaluate, written out: (mpjpe, p_mpjpe, frames scored). `subtract_root`:
    subtract the predicted root from every joint instead (the suite's old way)."""
    src, n = test["source"], len(test["source"])
    w = np.array([CAMS[c][0] for c in test["camera_name"]], float)
    h = np.array([CAMS[c][1] for c in test["camera_name"]], float)
    offset = np.stack([np.ones(n), h / w], -1)[:, None, :]  # (N, 1, 2)
    inputs = np.concatenate([test["joint_2d"] / w[:, None, None] * 2 - offset, test["confidence"][..., None]], -1)
    # the test clips: within each run of one source id, [st, st + F) every F frames
    clips, start = [], 0
    while start < n:
        stop = start
        while stop < n and src[stop] == src[start]:
            stop += 1
        assert stop - start >= F or stop == n, "no short sequence in the middle here"
        clips += [np.arange(st, st + F) for st in range(start, stop - F + 1, F)]
        start = stop
    e1, e2, oc = np.zeros(n), np.zeros(n), np.zeros(n)
    for idx in clips:
        if src[idx[0]][:-6] in BLOCKED:
            continue
        pred = _run(model, inputs[idx], flip)
        if subtract_root:
            pred = pred - pred[:, :1]
        pred[:, 0] = 0  # rootrel: the predicted root set to 0
        px = (pred[..., :2] + offset[idx]) * w[idx, None, None] / 2  # denormalise to pixels
        pz = pred[..., 2:] * w[idx, None, None] / 2
        pred = np.concatenate([px, pz], -1) * test["2.5d_factor"][idx, None, None]
        pred = pred - pred[:, :1]
        gt = test["joints_2.5d_image"][idx] - test["joints_2.5d_image"][idx, :1]
        e1[idx] += np.linalg.norm(pred - gt, axis=-1).mean(-1)
        e2[idx] += _procrustes_error(pred, gt)
        oc[idx] += 1
    scored = oc > 0
    actions = sorted(set(test["action"]))
    p1 = np.mean([np.mean(e1[scored & (test["action"] == a)] / oc[scored & (test["action"] == a)])
                  for a in actions])
    p2 = np.mean([np.mean(e2[scored & (test["action"] == a)] / oc[scored & (test["action"] == a)])
                  for a in actions])
    return p1, p2, int(scored.sum())


def _values(table, condition):
    part = table[table["condition"] == condition].set_index("metric")
    return part["value"].to_dict(), int(part["frames"].iloc[0])


@pytest.mark.parametrize("F", [27, 243])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("model_cls", [PerFrame, Context])
def test_h36m_default_protocol_equals_motionbert_evaluate(tmp_path, F, flip, model_cls):
    path, test = _h36m_file(tmp_path, F)
    source = open_source(f"h36m:{path}")
    model = model_cls()
    table = evaluate(model, source, EvalConfig(lengths=(F,), flip=flip))
    got, frames = _values(table, f"F_{F}")
    p1, p2, n_scored = _motionbert_reference(model, test, F, flip)
    assert frames == n_scored
    assert got["mpjpe"] == pytest.approx(p1, abs=1e-3)
    assert got["p_mpjpe"] == pytest.approx(p2, abs=1e-3)


def test_h36m_frame_set_is_the_test_clips_and_the_root_is_zeroed(tmp_path):
    F = 27
    path, test = _h36m_file(tmp_path, F)
    seqs = open_source(f"h36m:{path}").sequences("test")
    plan = plan_windows(seqs, F, resolve_protocol("auto", "h36m"))
    # each sequence: clips at 0, F, 2F, ... while they fit; the short last one has none
    starts = {}
    for w in plan:
        starts.setdefault(w.seq, []).append(int(w.index[0]))
        np.testing.assert_array_equal(w.frames, w.index)  # every frame of a clip, once
    lengths = [len(s) for s in seqs]
    assert lengths == [59, 40, 81, 50, 13]
    assert starts == {0: [0, 27], 1: [0], 2: [0, 27, 54], 3: [0]}
    frames = np.concatenate([w.frames + 1000 * w.seq for w in plan])
    assert len(frames) == len(set(frames.tolist()))  # no frame predicted twice
    # the zeroed root: a model whose only error is a root offset scores its non-root joints
    model = PerFrame()
    with torch.no_grad():
        model.A.copy_(torch.eye(3))
        model.b.zero_()
        model.b[0] = torch.tensor([0.5, 0.5, 0.5])
    table = evaluate(model, open_source(f"h36m:{path}"), EvalConfig(lengths=(F,), flip=False))
    got, _ = _values(table, f"F_{F}")
    p1, _, _ = _motionbert_reference(model, test, F, False)
    assert got["mpjpe"] == pytest.approx(p1, abs=1e-3)
    # subtracting the predicted root (the old way) would have scored something else
    old, _, _ = _motionbert_reference(model, test, F, False, subtract_root=True)
    assert abs(got["mpjpe"] - old) > 10.0, (got["mpjpe"], old)


def test_short_sequence_in_the_middle_is_resampled_and_a_short_last_one_unscored():
    F = 10

    def seq(n):
        return Sequence(np.zeros((n, 17, 3), np.float32), np.zeros((n, 17, 3), np.float32), 50.0,
                        np.arange(n) / 50.0, extras={"mm_per_unit": np.ones(n)})

    seqs = [seq(25), seq(7), seq(4)]
    plan = plan_windows(seqs, F, "motionbert")
    assert [(w.seq, len(w.index)) for w in plan] == [(0, 10), (0, 10), (1, 10)]
    short = plan[2]
    assert set(short.frames.tolist()) == set(short.index.tolist()) and len(short.frames) <= 7
    # the scored position of a repeated frame is its last one
    for f, p in zip(short.frames, short.pos, strict=True):
        assert short.index[p] == f and f not in short.index[p + 1:]
    # all-frames covers every frame, p-stmo one centred window per valid frame
    covered = {(w.seq, int(f)) for w in plan_windows(seqs, F, "all-frames") for f in w.frames}
    assert covered == {(s, f) for s, q in enumerate(seqs) for f in range(len(q))}
    centred = plan_windows([seq(5)], 4, "p-stmo")
    assert [w.index.tolist() for w in centred] == [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4],
                                                   [2, 3, 4, 4], [3, 4, 4, 4]]
    assert [int(w.pos[0]) for w in centred] == [1] * 5
    with pytest.raises(ValueError, match="unknown evaluation protocol 'mb'; known: auto, motionbert"):
        resolve_protocol("mb", "h36m")


# -- MotionBERT's clip folders ----------------------------------------------------------------
def test_motionbert_clip_folders_default_to_the_motionbert_frame_set(tmp_path):
    from hummuss.data.skeleton import H36M_BONES, H36M_MEAN_BONE_MM

    rng = np.random.default_rng(5)
    root, F, lengths = tmp_path / "clips", 27, [60, 81, 20]  # the last file is shorter than F: no clip
    for split, ns in (("train", [30]), ("test", lengths)):
        (root / split).mkdir(parents=True)
        for i, n in enumerate(ns):
            clip = {"data_input": rng.uniform(-1, 1, size=(n, 17, 3)).astype(np.float32),
                    "data_label": rng.uniform(-1, 1, size=(n, 17, 3)).astype(np.float32)}
            with open(root / split / f"{i:08d}.pkl", "wb") as fh:
                pickle.dump(clip, fh)
    model = Context(4)
    table = evaluate(model, open_source(f"motionbert-clips:{root}"), EvalConfig(lengths=(F,), flip=True))
    got, frames = _values(table, f"F_{F}")
    errs = []
    for i, n in enumerate(lengths):
        with open(root / "test" / f"{i:08d}.pkl", "rb") as fh:
            clip = pickle.load(fh)
        x, y = clip["data_input"].astype(np.float64), clip["data_label"].astype(np.float64)
        bones = sum(np.linalg.norm(y[:, c] - y[:, p], axis=-1) for p, c in H36M_BONES)
        mm = sum(H36M_MEAN_BONE_MM) / bones  # (n,) estimated: no 2.5D factor in these files
        for st in range(0, n - F + 1, F):
            pred = _run(model, x[st:st + F], True)
            pred[:, 0] = 0
            gt = y[st:st + F] - y[st:st + F, :1]
            errs.append(np.linalg.norm(pred - gt, axis=-1).mean(-1) * mm[st:st + F])
    assert frames == 54 + 81
    assert got["mpjpe"] == pytest.approx(np.concatenate(errs).mean(), abs=1e-3)


# -- MPI-INF-3DHP layout (P-STMO) ------------------------------------------------------------
def test_3dhp_default_protocol_equals_p_stmo(tmp_path):
    from hummuss.data.skeleton import MPI3DHP_TO_H36M

    rng = np.random.default_rng(3)

    def poses(n, w, h):
        return {"data_2d": rng.uniform(0, [w, h], size=(n, 17, 2)),
                "data_3d": rng.normal(0, 400, size=(n, 17, 3)) + [0, 0, 4000]}

    te = {"TS1": {**poses(40, 2048, 2048), "valid": (np.arange(40) % 4 != 1).astype(float)},
          "TS5": {**poses(23, 1920, 1080), "valid": np.ones(23)}}
    root = tmp_path / "3dhp"
    root.mkdir()
    np.savez_compressed(root / "data_test_3dhp.npz", data=te)
    model, F = Context(1), 9
    table = evaluate(model, open_source(f"mpi3dhp:{root}"), EvalConfig(lengths=(F,), flip=True))
    got, frames = _values(table, f"F_{F}")
    order = list(MPI3DHP_TO_H36M)
    errs, perrs = [], []
    for name, (w, h) in (("TS1", (2048, 2048)), ("TS5", (1920, 1080))):
        d2, d3 = te[name]["data_2d"][:, order], te[name]["data_3d"][:, order]
        x = np.concatenate([d2 / w * 2 - [1, h / w], np.ones((len(d2), 17, 1))], -1)
        gt = d3 - d3[:, :1]
        for t in np.flatnonzero(te[name]["valid"]):
            window = np.pad(x, ((4, 4), (0, 0), (0, 0)), mode="edge")[t:t + F]  # frame t at the centre
            pred = _run(model, window, True)[4]
            pred[0] = 0
            pred = pred * w / 2
            errs.append(np.linalg.norm(pred - gt[t], axis=-1).mean())
            perrs.append(_procrustes_error(pred[None], gt[t][None])[0])
    assert frames == len(errs) == 30 + 23
    assert got["mpjpe"] == pytest.approx(np.mean(errs), abs=1e-3)
    assert got["p_mpjpe"] == pytest.approx(np.mean(perrs), abs=1e-3)


# -- all-frames (synthetic, bvh) ----------------------------------------------------------------
def test_all_frames_scores_every_frame_with_the_root_zeroed():
    rng = np.random.default_rng(4)

    class Hand:
        name = "hand"

        def __init__(self, seqs):
            self.seqs = seqs

        def sequences(self, split, rate=1.0):
            return self.seqs

    seqs = [Sequence(rng.normal(size=(n, 17, 3)).astype(np.float32), rng.normal(size=(n, 17, 3)).astype(np.float32),
                     30.0, np.arange(n) / 30.0, extras={"mm_per_unit": rng.uniform(900, 1100, n)})
            for n in (23, 5)]
    model = PerFrame(2)
    table = evaluate(model, Hand(seqs), EvalConfig(lengths=(10,), flip=False))
    got, frames = _values(table, "F_10")
    errs = []
    for s in seqs:
        pred = _run(model, s.inputs, False)  # per-frame model: windows do not matter
        pred[:, 0] = 0
        gt = s.labels - s.labels[:, :1]
        errs.append(np.linalg.norm((pred - gt) * s.extras["mm_per_unit"][:, None, None], axis=-1).mean(-1))
    assert frames == 28
    assert got["mpjpe"] == pytest.approx(np.concatenate(errs).mean(), abs=1e-3)


def test_table_notes_say_which_protocol_produced_the_numbers():
    import pandas as pd

    from suite.report.tables import UNRECORDED_PROTOCOL, protocol_note

    runs = pd.DataFrame({"params.data.spec": ["h36m:/d/h36m.pkl", "synthetic", "mpi3dhp:/d"],
                         "params.eval.protocol": ["auto", "auto", "all-frames"]})
    note = protocol_note(runs)
    assert "`motionbert`: MotionBERT's frame set" in note and "`all-frames`: every frame scored" in note
    assert "p-stmo" not in note  # the 3DHP runs asked for all-frames
    assert protocol_note(runs.drop(columns="params.eval.protocol")) == f" Protocol: {UNRECORDED_PROTOCOL}."
    assert protocol_note(pd.DataFrame()) == ""


def test_unknown_protocol_is_refused_when_configured():
    with pytest.raises(ValueError, match="unknown evaluation protocol 'frames'; known: auto, motionbert, p-stmo"):
        EvalConfig(protocol="frames")
    assert EvalConfig().protocol == "auto" and EvalConfig(protocol="all-frames").protocol == "all-frames"
