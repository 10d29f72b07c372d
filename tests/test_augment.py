"""Flip, MotionBERT's pre-training corruption, and frame-rate changes of recorded data."""

import numpy as np
import pytest

from hummuss.data.augment import Corruption, corrupt, drop_frames, flip, subsample, upsample2
from hummuss.data.clips import Sequence
from hummuss.data.skeleton import FLIP_LEFT, FLIP_RIGHT


def _sequence(t=20, fps=50.0):
    rng = np.random.default_rng(0)
    return Sequence(
        inputs=rng.normal(size=(t, 17, 3)).astype(np.float32),
        labels=rng.normal(size=(t, 17, 3)).astype(np.float32),
        fps=fps, times=np.arange(t) / fps, meta={"source": "x"},
        extras={"mm_per_unit": np.linspace(1000, 2000, t).astype(np.float32),
                "valid": np.arange(t) % 5 != 0})


def test_flip_mirrors_inputs_and_labels_together():
    seq = _sequence()
    fi, fl = flip(seq.inputs, seq.labels)
    for left, right in zip(FLIP_LEFT, FLIP_RIGHT, strict=True):
        np.testing.assert_array_equal(fi[:, left, 0], -seq.inputs[:, right, 0])
        np.testing.assert_array_equal(fl[:, right, 1:], seq.labels[:, left, 1:])
    np.testing.assert_array_equal(fi[:, 0, 0], -seq.inputs[:, 0, 0])
    back = flip(fi, fl)
    np.testing.assert_array_equal(back[0], seq.inputs)
    np.testing.assert_array_equal(back[1], seq.labels)


def test_corrupt_masks_and_recomputes_confidence():
    x = np.zeros((64, 243, 17, 3), np.float32)
    x[..., 2] = 1.0
    out = corrupt(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == np.float32
    zero = np.all(out == 0, axis=-1)  # (N, T, J) masked entries
    frame_zero = zero.all(-1)
    assert 0.08 < frame_zero.mean() < 0.12  # 10 % frame masking
    joint_zero = zero[~frame_zero].mean()
    assert 0.04 < joint_zero < 0.06  # 5 % joint masking
    kept = ~zero
    assert np.all((out[..., 2] >= 0) & (out[..., 2] <= 1))
    d = np.linalg.norm(out[..., :2], axis=-1)[kept]
    conf = out[..., 2][kept]
    assert 0.005 < np.median(d) < 0.03  # ~ 2-15 px at w = 1000
    assert np.corrcoef(d, conf)[0, 1] < -0.5  # confidence falls with displacement
    # deterministic given the generator, and the noise is smooth over time
    np.testing.assert_array_equal(out, corrupt(x, np.random.default_rng(0)))
    smooth = corrupt(x, np.random.default_rng(1), Corruption(jitter_std=0, joint_mask=0, frame_mask=0))
    # linear interpolation of 27 key-frames: a frame step is at most 2 max|noise| / (242 / 26)
    step = np.abs(np.diff(smooth[..., :2], axis=1)).max()
    assert step <= 2 * np.abs(smooth[..., :2]).max() * 26 / 242 + 1e-6


def test_subsample_and_upsample():
    seq = _sequence(21)
    half = subsample(seq, 2)
    assert len(half) == 11 and half.fps == 25.0
    np.testing.assert_array_equal(half.inputs, seq.inputs[::2])
    np.testing.assert_array_equal(half.extras["valid"], seq.extras["valid"][::2])
    np.testing.assert_allclose(half.times, np.arange(11) / 25.0)
    up = upsample2(seq)
    assert len(up) == 41 and up.fps == 100.0
    np.testing.assert_array_equal(up.labels[::2], seq.labels)
    np.testing.assert_allclose(up.labels[1::2], (seq.labels[:-1] + seq.labels[1:]) / 2, rtol=1e-6)
    np.testing.assert_allclose(up.times, np.arange(41) / 100.0)
    np.testing.assert_array_equal(up.extras["valid"][1::2], seq.extras["valid"][:-1] & seq.extras["valid"][1:])
    with pytest.raises(ValueError, match="positive integer"):
        subsample(seq, 1.5)


def test_drop_frames_returns_steps():
    seq = _sequence(200)
    short, dt = drop_frames(seq, np.random.default_rng(3), drop=0.4)
    assert dt[0] == 1.0 and dt.dtype == np.float32 and len(dt) == len(short)
    assert 0.5 < len(short) / len(seq) < 0.7
    index = np.round(short.times * seq.fps).astype(int)
    assert index[0] == 0
    np.testing.assert_array_equal(np.diff(index), dt[1:])
    np.testing.assert_array_equal(short.inputs, seq.inputs[index])
    np.testing.assert_array_equal(short.extras["mm_per_unit"], seq.extras["mm_per_unit"][index])
    assert dt.max() >= 2
