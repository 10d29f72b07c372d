"""Flip test-time augmentation: (f(x) + flip(f(flip(x)))) / 2 with MotionBERT's flip pairs."""

import numpy as np
import torch

from hummuss.baselines.motionbert import MotionBERT, MotionBERTConfig
from hummuss.data.skeleton import FLIP_LEFT, FLIP_RIGHT, flip_pose
from hummuss.tta import flip_tta


def _x(B=2, T=6, seed=0):
    return torch.randn(B, T, 17, 3, generator=torch.Generator().manual_seed(seed))


def test_flip_pose_swaps_pairs_negates_x_and_is_an_involution():
    x = _x()
    f = flip_pose(x)
    for l, r in zip(FLIP_LEFT, FLIP_RIGHT, strict=True):
        assert torch.equal(f[..., l, 0], -x[..., r, 0]) and torch.equal(f[..., r, 1:], x[..., l, 1:])
    for j in (0, 7, 8, 9, 10):  # centre joints stay, mirrored
        assert torch.equal(f[..., j, 0], -x[..., j, 0]) and torch.equal(f[..., j, 2], x[..., j, 2])
    assert torch.equal(flip_pose(f), x)
    a = x.numpy()
    assert np.array_equal(flip_pose(flip_pose(a)), a)


def test_equivariant_models_are_unchanged():
    x = _x()
    assert torch.equal(flip_tta(lambda v: v, x), x)
    scale = torch.tensor([2.0, -3.0, 0.5])  # a per-channel scaling commutes with the flip
    assert torch.allclose(flip_tta(lambda v: v * scale, x), x * scale)


def test_non_equivariant_model_is_averaged_with_its_mirror():
    x = _x()
    bump = torch.zeros(17, 3)
    bump[1, 0] = 1.0  # f adds +1 to the x of r_hip only
    y = flip_tta(lambda v: v + bump, x)
    expected = x.clone()
    expected[..., 1, 0] += 0.5  # half the bump on r_hip ...
    expected[..., 4, 0] -= 0.5  # ... and half its mirror on l_hip, with x negated
    assert torch.allclose(y, expected, atol=1e-6)


def test_kwargs_reach_the_model_and_result_is_flip_equivariant():
    torch.manual_seed(0)
    model = MotionBERT(MotionBERTConfig.preset("smoke")).eval()
    x = _x(T=9)
    seen = []

    def fn(v, **kw):
        seen.append(kw)
        return model(v, **kw)

    with torch.no_grad():
        y = flip_tta(fn, x, dt_scale=1.0)
        assert seen == [{"dt_scale": 1.0}, {"dt_scale": 1.0}]
        assert y.shape == (2, 9, 17, 3)
        assert not torch.allclose(y, model(x), atol=1e-4)  # the model itself is not equivariant
        assert torch.allclose(flip_tta(model, flip_pose(x)), flip_pose(y), atol=1e-5)
