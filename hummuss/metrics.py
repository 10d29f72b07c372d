"""Pose metrics in millimetres, for numpy arrays and torch tensors alike.

Every function takes pred and gt of shape (..., 17, 3) (same units, normally mm,
already root-relative where the protocol wants it) and:
- `joints=`: a sequence of joint indices to score (e.g. `skeleton.MPI3DHP_PCK_JOINTS`);
  the selection is made first, so Procrustes and scale fits use only those joints;
- `reduce=True` (default): a Python float, the mean over every frame;
  `reduce=False`: per-frame values (...,) of the input's type.

mpjpe    mean joint distance (protocol 1)
p_mpjpe  after per-frame Procrustes alignment: scale, rotation (reflection fixed), translation (protocol 2)
n_mpjpe  after the per-frame least-squares scale of pred
mpjve    mean distance of per-frame velocities (inputs (..., T, 17, 3); mm per frame)
pck      % of joints within `threshold` mm (strictly less, as the 3DHP MATLAB code)
auc      mean of pck over thresholds 0, 5, ..., 150 mm (31 values), in %
"""

from __future__ import annotations

import numpy as np

AUC_THRESHOLDS = np.linspace(0.0, 150.0, 31)  # 0:5:150 mm


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _check(pred, gt, joints):
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    if pred.ndim < 2 or pred.shape[-1] != 3:
        raise ValueError(f"expected poses (..., J, 3), got shape {tuple(pred.shape)}")
    if _is_torch(pred) != _is_torch(gt):
        raise ValueError("pred and gt must both be numpy arrays or both torch tensors")
    if joints is not None:
        joints = list(joints)
        pred, gt = pred[..., joints, :], gt[..., joints, :]
    return pred, gt


def _norm(x):
    """Euclidean norm over the last axis."""
    return x.norm(dim=-1) if _is_torch(x) else np.linalg.norm(x, axis=-1)


def _reduce(per_frame, reduce: bool):
    if not reduce:
        return per_frame
    return float(per_frame.float().mean()) if _is_torch(per_frame) else float(np.mean(per_frame))


def mpjpe(pred, gt, joints=None, reduce: bool = True):
    """Mean per-joint position error: per frame mean over joints of ||pred - gt||."""
    pred, gt = _check(pred, gt, joints)
    return _reduce(_norm(pred - gt).mean(-1), reduce)


def procrustes_align(pred, gt):
    """pred (..., J, 3) aligned to gt by the similarity transform minimising squared error
    per frame: scale, rotation (det +1, reflections fixed as in MotionBERT's p_mpjpe), translation."""
    torch_mode = _is_torch(pred)
    if torch_mode:
        import torch

        mu_x, mu_y = gt.mean(-2, keepdim=True), pred.mean(-2, keepdim=True)
        x0, y0 = gt - mu_x, pred - mu_y
        norm_x = x0.pow(2).sum((-2, -1), keepdim=True).sqrt().clamp_min(1e-12)
        norm_y = y0.pow(2).sum((-2, -1), keepdim=True).sqrt().clamp_min(1e-12)
        x0, y0 = x0 / norm_x, y0 / norm_y
        h = x0.transpose(-1, -2) @ y0  # (..., 3, 3)
        u, s, vt = torch.linalg.svd(h)
        v = vt.transpose(-1, -2)
        sign = torch.sign(torch.det(v @ u.transpose(-1, -2)))  # (...,)
        fix = torch.ones_like(s)
        fix[..., -1] = sign
        v = v * fix[..., None, :]
        rot = v @ u.transpose(-1, -2)
        trace = (s * fix).sum(-1)[..., None, None]
    else:
        mu_x, mu_y = gt.mean(-2, keepdims=True), pred.mean(-2, keepdims=True)
        x0, y0 = gt - mu_x, pred - mu_y
        norm_x = np.maximum(np.sqrt((x0 ** 2).sum((-2, -1), keepdims=True)), 1e-12)
        norm_y = np.maximum(np.sqrt((y0 ** 2).sum((-2, -1), keepdims=True)), 1e-12)
        x0, y0 = x0 / norm_x, y0 / norm_y
        h = np.swapaxes(x0, -1, -2) @ y0
        u, s, vt = np.linalg.svd(h)
        v = np.swapaxes(vt, -1, -2)
        sign = np.sign(np.linalg.det(v @ np.swapaxes(u, -1, -2)))
        fix = np.ones_like(s)
        fix[..., -1] = sign
        v = v * fix[..., None, :]
        rot = v @ np.swapaxes(u, -1, -2)
        trace = (s * fix).sum(-1)[..., None, None]
    scale = trace * norm_x / norm_y  # (..., 1, 1)
    # row vectors: aligned = scale * pred @ rot + t
    return scale * (pred - mu_y) @ rot + mu_x


def p_mpjpe(pred, gt, joints=None, reduce: bool = True):
    """MPJPE after per-frame Procrustes alignment of pred to gt (protocol 2)."""
    pred, gt = _check(pred, gt, joints)
    return _reduce(_norm(procrustes_align(pred, gt) - gt).mean(-1), reduce)


def n_mpjpe(pred, gt, joints=None, reduce: bool = True):
    """MPJPE after scaling pred by the per-frame optimal s = <pred, gt> / <pred, pred>."""
    pred, gt = _check(pred, gt, joints)
    num = (pred * gt).sum(-1).mean(-1)
    den = (pred * pred).sum(-1).mean(-1)
    den = den.clamp_min(1e-12) if _is_torch(den) else np.maximum(den, 1e-12)
    scale = (num / den)[..., None, None]
    return _reduce(_norm(scale * pred - gt).mean(-1), reduce)


def mpjve(pred, gt, joints=None, reduce: bool = True):
    """Mean per-joint velocity error (mm per frame): MPJPE of first differences along
    the time axis of (..., T, J, 3); per-frame values have shape (..., T - 1)."""
    pred, gt = _check(pred, gt, joints)
    if pred.ndim < 3 or pred.shape[-3] < 2:
        raise ValueError(f"mpjve needs a time axis of >= 2 frames: (..., T, J, 3), got {tuple(pred.shape)}")
    dp = pred[..., 1:, :, :] - pred[..., :-1, :, :]
    dg = gt[..., 1:, :, :] - gt[..., :-1, :, :]
    return _reduce(_norm(dp - dg).mean(-1), reduce)


def pck(pred, gt, threshold: float = 150.0, joints=None, reduce: bool = True):
    """Percentage of correct keypoints: 100 * fraction of joints with error < threshold mm."""
    pred, gt = _check(pred, gt, joints)
    hit = _norm(pred - gt) < threshold
    per_frame = 100.0 * (hit.double() if _is_torch(hit) else hit.astype(np.float64)).mean(-1)
    return _reduce(per_frame, reduce)


def auc(pred, gt, joints=None, reduce: bool = True, thresholds=AUC_THRESHOLDS):
    """Area under the PCK curve: mean PCK (%) over thresholds 0, 5, ..., 150 mm."""
    pred, gt = _check(pred, gt, joints)
    err = _norm(pred - gt)  # (..., J)
    if _is_torch(err):
        import torch

        t = torch.as_tensor(np.asarray(thresholds), dtype=err.dtype, device=err.device)
        per_frame = 100.0 * (err[..., None] < t).double().mean((-2, -1))
    else:
        per_frame = 100.0 * (err[..., None] < np.asarray(thresholds)).mean((-2, -1))
    return _reduce(per_frame, reduce)


METRICS = {"mpjpe": mpjpe, "p_mpjpe": p_mpjpe, "n_mpjpe": n_mpjpe, "mpjve": mpjve, "pck": pck, "auc": auc}
