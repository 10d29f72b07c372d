"""Metrics equal hand-computed values, for numpy arrays and torch tensors."""

import numpy as np
import pytest
import torch

from hummuss.data.skeleton import MPI3DHP_PCK_JOINTS
from hummuss.metrics import AUC_THRESHOLDS, auc, mpjpe, mpjve, n_mpjpe, p_mpjpe, pck


def _rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))  # proper rotation


@pytest.fixture
def poses():
    return np.random.default_rng(0).normal(scale=300.0, size=(4, 17, 3))


def test_mpjpe_hand_computed():
    gt = np.zeros((2, 17, 3))
    pred = gt.copy()
    pred[0, :, 0] = 3.0  # every joint 3 mm off
    pred[1, 0] = [3.0, 4.0, 0.0]  # one joint 5 mm off
    assert mpjpe(pred, gt) == pytest.approx((3.0 + 5.0 / 17) / 2)
    np.testing.assert_allclose(mpjpe(pred, gt, reduce=False), [3.0, 5.0 / 17])
    assert mpjpe(pred, gt, joints=[0]) == pytest.approx((3.0 + 5.0) / 2)


def test_p_mpjpe_of_similarity_transform_is_zero(poses):
    rng = np.random.default_rng(1)
    moved = np.stack([2.3 * p @ _rotation(rng).T + rng.normal(size=3) * 500 for p in poses])
    assert mpjpe(moved, poses) > 100
    assert p_mpjpe(moved, poses) < 1e-6
    assert p_mpjpe(torch.tensor(moved), torch.tensor(poses)) < 1e-6


def test_p_mpjpe_does_not_allow_reflection(poses):
    mirrored = poses * np.array([-1.0, 1.0, 1.0])
    assert p_mpjpe(mirrored, poses) > 10.0


def test_p_mpjpe_matches_between_numpy_and_torch(poses):
    noisy = poses + np.random.default_rng(2).normal(scale=30.0, size=poses.shape)
    a = p_mpjpe(noisy, poses, reduce=False)
    b = p_mpjpe(torch.tensor(noisy), torch.tensor(poses), reduce=False)
    assert isinstance(b, torch.Tensor) and b.shape == (4,)
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-9)
    assert 0 < p_mpjpe(noisy, poses) < mpjpe(noisy, poses)


def test_n_mpjpe_removes_scale_only(poses):
    assert n_mpjpe(0.5 * poses, poses) < 1e-9
    assert mpjpe(0.5 * poses, poses) > 50
    shifted = poses + 10.0
    assert n_mpjpe(shifted, poses) > 1.0


def test_mpjve():
    t = np.arange(5, dtype=float)[:, None, None]
    gt = np.zeros((5, 17, 3)) + t * np.array([1.0, 0, 0])
    assert mpjve(gt + 100.0, gt) == 0.0  # a constant offset has no velocity error
    pred = gt + t * np.array([0, 3.0, 4.0])  # 5 mm per frame drift
    assert mpjve(pred, gt) == pytest.approx(5.0)
    assert mpjve(pred, gt, reduce=False).shape == (4,)
    assert mpjve(torch.tensor(pred), torch.tensor(gt)) == pytest.approx(5.0)


def test_pck_and_auc_on_constructed_errors():
    gt = np.zeros((1, 17, 3))
    pred = gt.copy()
    errors = [0, 100, 149.9, 150, 200] + [10] * 12
    pred[0, :, 2] = errors
    # strictly below 150 mm: 15 of 17 joints
    assert pck(pred, gt) == pytest.approx(100 * 15 / 17)
    assert pck(pred, gt, threshold=50) == pytest.approx(100 * 13 / 17)
    all75 = gt + np.array([0, 0, 75.0])
    # 75 mm is below the 15 thresholds 80..150 of the 31 in 0:5:150
    assert len(AUC_THRESHOLDS) == 31 and AUC_THRESHOLDS[-1] == 150
    assert auc(all75, gt) == pytest.approx(100 * 15 / 31)
    assert auc(gt, gt) == pytest.approx(100 * 30 / 31)  # 0 < 0 fails at the first threshold
    assert auc(torch.tensor(all75), torch.tensor(gt)) == pytest.approx(100 * 15 / 31)


def test_joint_selection_for_3dhp():
    gt = np.zeros((3, 17, 3))
    pred = gt.copy()
    pred[:, [0, 7, 9], 0] = 1000.0  # pelvis, spine, nose: not scored by 3DHP's PCK
    assert pck(pred, gt) == pytest.approx(100 * 14 / 17)
    assert pck(pred, gt, joints=MPI3DHP_PCK_JOINTS) == 100.0
    assert auc(pred, gt, joints=MPI3DHP_PCK_JOINTS) == pytest.approx(100 * 30 / 31)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="shapes differ"):
        mpjpe(np.zeros((2, 17, 3)), np.zeros((3, 17, 3)))
    with pytest.raises(ValueError, match="J, 3"):
        mpjpe(np.zeros((2, 17, 2)), np.zeros((2, 17, 2)))
