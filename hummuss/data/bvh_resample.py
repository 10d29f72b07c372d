"""Resampling motion capture in joint space, and finding the rest pose some files start with.

`JointMotion` holds a BVH recording as each joint's rotation relative to its parent
(unit quaternions, w x y z) and its translation in the parent's frame (OFFSET + position
channels). `at(times)` interpolates the rotations spherically (slerp, shortest arc) and
the translations linearly between the two neighbouring frames, then runs forward
kinematics: every bone inside one BVH link keeps its length at every time by construction.

`first_frame_rest(bvh, h36m_frame0)` says whether frame 0 is a rest pose rather than
captured motion: every joint rotation zero (the skeleton's own rest pose), or a T-pose as
cgspeed adds to the CMU conversions (arms stretched out sideways and level, knees straight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hummuss.data.bvh_parse import BVHFile, chain, local_transforms

# T-pose test on the 17 H36M joints of a frame (y up): limits in degrees
TPOSE_MAX_BEND = 25.0  # elbows and knees: 180 - joint angle (Daz T-pose: 17; captured frames: >= 24 on CMU)
TPOSE_MAX_ARM_OFF_LINE = 20.0  # shoulder -> wrist against the line through both shoulders
TPOSE_MAX_ARM_TILT = 15.0  # shoulder -> wrist against the horizontal plane


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) (w, x, y, z), by the
    largest of the four diagonal combinations (numerically stable everywhere)."""
    R = np.asarray(R, dtype=np.float64)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    sq = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                   1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1) / 4  # (..., 4) = w², x², y², z²
    big = np.sqrt(np.maximum(sq.max(-1), 1e-300))  # (...,) the largest component
    k = sq.argmax(-1)
    a = R[..., 2, 1] - R[..., 1, 2]  # 4 w x
    b = R[..., 0, 2] - R[..., 2, 0]  # 4 w y
    c = R[..., 1, 0] - R[..., 0, 1]  # 4 w z
    d = R[..., 0, 1] + R[..., 1, 0]  # 4 x y
    e = R[..., 0, 2] + R[..., 2, 0]  # 4 x z
    f = R[..., 1, 2] + R[..., 2, 1]  # 4 y z
    four = 4 * big
    rows = [np.stack([big, a / four, b / four, c / four], -1),
            np.stack([a / four, big, d / four, e / four], -1),
            np.stack([b / four, d / four, big, f / four], -1),
            np.stack([c / four, e / four, f / four, big], -1)]
    q = np.choose(k[..., None], rows)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) (w, x, y, z) -> rotation matrices (..., 3, 3)."""
    w, x, y, z = np.moveaxis(np.asarray(q, dtype=np.float64), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation (..., 4) from q0 (t = 0) to q1 (t = 1) along the shorter arc;
    t broadcasts against the leading axes."""
    q0, q1 = np.asarray(q0, np.float64), np.asarray(q1, np.float64)
    t = np.asarray(t, np.float64)[..., None]
    dot = (q0 * q1).sum(-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)  # q and -q are the same rotation
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    sin = np.sin(theta)
    near = sin < 1e-9  # (almost) the same rotation: linear is exact enough
    safe = np.where(near, 1.0, sin)
    w0 = np.where(near, 1 - t, np.sin((1 - t) * theta) / safe)
    w1 = np.where(near, t, np.sin(t * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


@dataclass
class JointMotion:
    """A BVH recording in joint space at `fps` frames per second (see the module docstring)."""

    bvh: BVHFile
    quats: np.ndarray  # (T, J, 4) local rotations
    shifts: np.ndarray  # (T, J, 3) local translations, file units
    fps: float

    @classmethod
    def from_bvh(cls, bvh: BVHFile, first: int = 0, fps: float | None = None) -> JointMotion:
        rot, shift = local_transforms(bvh, slice(first, None))
        return cls(bvh, matrix_to_quat(rot), shift, float(fps or bvh.fps))

    def positions(self) -> np.ndarray:
        """World positions (T, J, 3) of every joint at the recorded frames."""
        return chain(self.bvh, quat_to_matrix(self.quats), self.shifts)

    def at(self, times) -> np.ndarray:
        """World positions (n, J, 3) at `times` (n,) seconds from the first frame (clamped to
        the recording): rotations slerped, translations interpolated linearly, then FK."""
        T = len(self.quats)
        pos = np.clip(np.asarray(times, dtype=np.float64) * self.fps, 0.0, T - 1)  # (n,)
        i0 = np.minimum(np.floor(pos).astype(np.int64), max(T - 2, 0))
        i1 = np.minimum(i0 + 1, T - 1)
        w = pos - i0  # (n,)
        quats = slerp(self.quats[i0], self.quats[i1], w[:, None])  # (n, J, 4)
        shifts = self.shifts[i0] * (1 - w)[:, None, None] + self.shifts[i1] * w[:, None, None]
        return chain(self.bvh, quat_to_matrix(quats), shifts)


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def is_tpose(h36m: np.ndarray) -> bool:
    """Whether one frame of H36M joints (17, 3), y up, is a T-pose (limits above)."""
    p = np.asarray(h36m, dtype=np.float64)
    across = p[11] - p[14]  # right shoulder -> left shoulder
    for shoulder, elbow, wrist, out in ((11, 12, 13, across), (14, 15, 16, -across)):
        arm = p[wrist] - p[shoulder]
        tilt = float(np.degrees(np.arcsin(min(abs(arm[1]) / max(np.linalg.norm(arm), 1e-12), 1.0))))
        if (180 - _angle(p[shoulder] - p[elbow], p[wrist] - p[elbow]) > TPOSE_MAX_BEND
                or _angle(arm, out) > TPOSE_MAX_ARM_OFF_LINE or tilt > TPOSE_MAX_ARM_TILT):
            return False
    return all(180 - _angle(p[hip] - p[knee], p[ankle] - p[knee]) <= TPOSE_MAX_BEND
               for hip, knee, ankle in ((1, 2, 3), (4, 5, 6)))


def first_frame_rest(bvh: BVHFile, h36m_frame0: np.ndarray) -> str:
    """'rest pose' (every non-root rotation channel 0 in frame 0), 'T-pose' (`is_tpose`), or ''."""
    if bvh.num_frames == 0:
        return ""
    rot_cols = [j.first_channel + c for j in bvh.joints if j.parent >= 0
                for c, ch in enumerate(j.channels) if ch.endswith("rotation")]
    if rot_cols and np.all(bvh.motion[0, rot_cols] == 0):
        return "rest pose"
    return "T-pose" if is_tpose(h36m_frame0) else ""
