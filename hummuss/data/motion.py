"""Generated human motion in continuous time: actions, blending, forward kinematics.

A `Motion` holds parameters drawn once from a random generator; `motion(times)`
evaluates world joints (T, 17, 3) mm at any times (seconds). Every quantity is a
closed-form function of t (no integration over frames, no per-sequence
normalisation), so sampling at 60 fps and keeping every second frame is exactly
sampling at 30 fps.

World frame (see `camera.py`): y up, ground y = 0, mm. At heading 0 a subject
faces +z and its left is +x. Joint rotations act on bones (each bone = the
segment from a joint's parent to the joint, in H36M-17 order), so bone lengths
are exactly constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hummuss.data.skeleton import H36M_MEAN_BONE_MM, H36M_PARENTS, NUM_JOINTS

ACTIONS: tuple[str, ...] = (
    "walking", "running", "jumping", "squatting", "waving", "turning", "sitting", "reaching")

# mean H36M bone lengths (mm), indexed by child joint (H36M_BONES is ordered by child)
_BONE_MM = np.array([0.0, *H36M_MEAN_BONE_MM])
# unit directions of each bone in the rest pose (subject facing +z, left = +x)
_BONE_DIR = np.array([
    [0, 0, 0], [-1, 0, 0], [0, -1, 0], [0, -1, 0], [1, 0, 0], [0, -1, 0], [0, -1, 0],
    [0, 1, 0], [0, 1, 0], [0, 0.85, 0.5], [0, 0.95, -0.3],
    [1, -0.1, 0], [0, -1, 0], [0, -1, 0], [-1, -0.1, 0], [0, -1, 0], [0, -1, 0]], dtype=np.float64)
_BONE_DIR /= np.maximum(np.linalg.norm(_BONE_DIR, axis=1, keepdims=True), 1e-12)
_MIRROR_BONE = (0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13)
ANKLE_HEIGHT_MM = 75.0

# degrees of freedom: name -> (bone, axis 0=pitch about x / 1=yaw about y / 2=roll about z, sign)
# signs make positive values mean: hip/shoulder flexion forward, knee/elbow flexion,
# abduction away from the body, trunk/head leaning forward.
DOFS: dict[str, tuple[int, int, float]] = {
    "root_pitch": (0, 0, 1.0), "root_roll": (0, 2, 1.0),
    "lumbar_pitch": (7, 0, 1.0), "lumbar_yaw": (7, 1, 1.0), "lumbar_roll": (7, 2, 1.0),
    "thorax_pitch": (8, 0, 1.0), "neck_pitch": (9, 0, 1.0), "neck_yaw": (9, 1, 1.0),
    "head_pitch": (10, 0, 1.0),
    "r_hip_flex": (2, 0, -1.0), "r_hip_abd": (2, 2, -1.0), "r_hip_rot": (2, 1, -1.0),
    "l_hip_flex": (5, 0, -1.0), "l_hip_abd": (5, 2, 1.0), "l_hip_rot": (5, 1, 1.0),
    "r_knee": (3, 0, 1.0), "l_knee": (6, 0, 1.0),
    "r_sh_flex": (15, 0, -1.0), "r_sh_abd": (15, 2, -1.0),
    "l_sh_flex": (12, 0, -1.0), "l_sh_abd": (12, 2, 1.0),
    "r_elbow": (16, 0, -1.0), "l_elbow": (13, 0, -1.0),
}
_DOF_NAMES = tuple(DOFS)


@dataclass
class Body:
    """A subject: bone offsets (17, 3) mm in the rest pose (row 0 unused)."""

    name: str
    offsets: np.ndarray  # (17, 3)
    scale: float = 1.0  # overall size relative to H36M's mean subject

    @property
    def bone_lengths(self) -> np.ndarray:
        return np.linalg.norm(self.offsets[1:], axis=1)  # (16,)

    @property
    def height_mm(self) -> float:
        """Standing height: ankle height + legs + trunk + head (rest pose, vertical parts)."""
        o = self.offsets
        return float(ANKLE_HEIGHT_MM * self.scale + -o[2, 1] - o[3, 1] + o[7, 1] + o[8, 1] + o[9, 1] + o[10, 1])


def random_body(rng: np.random.Generator, name: str = "S") -> Body:
    """Bone lengths in human ranges: overall scale 0.88-1.10 of H36M's mean (about
    1.5-1.9 m tall) times a per-bone factor 0.94-1.06, the same on both sides."""
    scale = rng.uniform(0.88, 1.10)
    per_bone = rng.uniform(0.94, 1.06, size=NUM_JOINTS)
    per_bone = np.array([per_bone[min(j, _MIRROR_BONE[j])] for j in range(NUM_JOINTS)])
    return Body(name, _BONE_DIR * (_BONE_MM * scale * per_bone)[:, None], float(scale))


def _rot(axis: int, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) about world axis 0/1/2 (x/y/z)."""
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    if axis == 0:
        rows = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == 1:
        rows = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        rows = [[c, -s, z], [s, c, z], [z, z, o]]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., 3, 3) @ (..., 3, 3 or 1) as an explicit per-element sum (same bits for any batch size)."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(axis=-2)


def forward_kinematics(offsets: np.ndarray, angles: np.ndarray, heading: np.ndarray,
                       root: np.ndarray) -> np.ndarray:
    """World joints (T, 17, 3) from bone offsets (17, 3), bone Euler angles (T, 17, 3)
    (pitch, yaw, roll; bone rotation R = Ry @ Rx @ Rz), heading (T,) rad about y and
    root position (T, 3)."""
    local = _matmul(_matmul(_rot(1, angles[..., 1]), _rot(0, angles[..., 0])), _rot(2, angles[..., 2]))
    world = [None] * NUM_JOINTS
    pos = [None] * NUM_JOINTS
    world[0] = _matmul(_rot(1, heading), local[:, 0])
    pos[0] = root
    for j in range(1, NUM_JOINTS):
        p = H36M_PARENTS[j]
        world[j] = _matmul(world[p], local[:, j])
        pos[j] = pos[p] + _matmul(world[j], np.broadcast_to(offsets[j][:, None], (3, 1)))[..., 0]
    return np.stack(pos, axis=1)


def _bump(x):
    """Smooth non-negative bump of a phase: ((1 + cos x) / 2) ** 2, in [0, 1]."""
    return (0.5 + 0.5 * np.cos(x)) ** 2


@dataclass
class ActionParams:
    """Per-sequence draws for one action (all fixed numbers; no arrays over time)."""

    name: str
    freq: float  # Hz of the action's main cycle
    phase: float
    amp: float  # amplitude multiplier
    side: float  # +1 left / -1 right, for one-sided actions
    speed_mm_s: float  # forward speed along the loop (locomotion only)
    yaw_rate: float  # extra heading rate, rad/s (turning only)
    extra: float  # an action-specific extra (jump height, reach variety, ...)


def draw_action(name: str, rng: np.random.Generator) -> ActionParams:
    """Random parameters of `name` (always the same number of draws)."""
    if name not in ACTIONS:
        raise ValueError(f"unknown action {name!r}; known: {', '.join(ACTIONS)}")
    u = rng.uniform(size=6)
    freq_range = {"walking": (0.85, 1.0), "running": (1.3, 1.5), "jumping": (0.6, 0.9),
                  "squatting": (0.25, 0.4), "waving": (1.2, 2.0), "turning": (0.8, 1.1),
                  "sitting": (0.12, 0.2), "reaching": (0.2, 0.4)}[name]
    speed = {"walking": (1100, 1500), "running": (2600, 3400)}.get(name, (0.0, 0.0))
    return ActionParams(
        name=name,
        freq=freq_range[0] + u[0] * (freq_range[1] - freq_range[0]),
        phase=2 * np.pi * u[1],
        amp=0.85 + 0.3 * u[2],
        side=1.0 if u[3] < 0.5 else -1.0,
        speed_mm_s=speed[0] + u[4] * (speed[1] - speed[0]),
        yaw_rate=(0.7 + 0.7 * u[5]) * (1.0 if u[3] < 0.5 else -1.0) if name == "turning" else 0.0,
        extra=u[5],
    )


def action_pose(p: ActionParams, t: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Joint angles of action `p` at times t (T,): (dofs name -> (T,), air (T,) mm, forward (T,) mm)."""
    ph = 2 * np.pi * p.freq * t + p.phase
    a = p.amp
    z = np.zeros_like(t)
    d: dict[str, np.ndarray] = {}
    air, forward = z, z
    if p.name in ("walking", "running"):
        run = p.name == "running"
        hip, knee, arm = (0.75, 1.2, 0.6) if run else (0.45, 0.6, 0.35)
        d["l_hip_flex"] = a * hip * np.sin(ph) + (0.15 if run else 0.05)
        d["r_hip_flex"] = -a * hip * np.sin(ph) + (0.15 if run else 0.05)
        d["l_knee"] = (0.3 if run else 0.1) + a * knee * _bump(ph + 0.3)
        d["r_knee"] = (0.3 if run else 0.1) + a * knee * _bump(ph + np.pi + 0.3)
        d["l_sh_flex"] = -a * arm * np.sin(ph)
        d["r_sh_flex"] = a * arm * np.sin(ph)
        d["l_elbow"] = (1.4 if run else 0.25) + 0.1 * np.sin(ph)
        d["r_elbow"] = (1.4 if run else 0.25) - 0.1 * np.sin(ph)
        d["lumbar_yaw"] = 0.08 * np.sin(ph)
        d["root_roll"] = 0.04 * np.sin(ph)
        d["lumbar_pitch"] = z + (0.18 if run else 0.05)
        if run:
            air = 50.0 * np.maximum(0.0, np.cos(2 * ph) - 0.3)
    elif p.name == "jumping":
        s = np.sin(ph)
        crouch = (0.5 - 0.5 * s) ** 2
        air = (150.0 + 150.0 * p.extra) * np.maximum(0.0, s) ** 2
        for side in "lr":
            d[f"{side}_hip_flex"] = a * 1.0 * crouch
            d[f"{side}_knee"] = a * 1.6 * crouch
            d[f"{side}_sh_flex"] = 2.6 * np.maximum(0.0, s) - 0.6 * crouch
            d[f"{side}_elbow"] = z + 0.3
        d["lumbar_pitch"] = 0.4 * crouch
    elif p.name == "squatting":
        depth = (0.7 + 0.3 * p.extra) * (0.5 - 0.5 * np.cos(ph))
        for side in "lr":
            d[f"{side}_hip_flex"] = 1.7 * depth
            d[f"{side}_knee"] = 2.1 * depth
            d[f"{side}_hip_abd"] = 0.15 * depth
            d[f"{side}_sh_flex"] = a * 1.4 * depth
            d[f"{side}_elbow"] = z + 0.2
        d["lumbar_pitch"] = 0.45 * depth
    elif p.name == "waving":
        s = "l" if p.side > 0 else "r"
        d[f"{s}_sh_abd"] = 2.3 + 0.1 * np.sin(0.5 * ph)
        d[f"{s}_sh_flex"] = z + 0.3
        d[f"{s}_elbow"] = 0.9 + a * 0.5 * np.sin(ph)
        d["neck_yaw"] = z + 0.2 * p.side
        d["root_roll"] = z - 0.03 * p.side
    elif p.name == "turning":
        d["l_hip_flex"] = 0.3 * a * np.maximum(0.0, np.sin(ph))
        d["r_hip_flex"] = 0.3 * a * np.maximum(0.0, -np.sin(ph))
        d["l_knee"] = 0.6 * a * np.maximum(0.0, np.sin(ph))
        d["r_knee"] = 0.6 * a * np.maximum(0.0, -np.sin(ph))
        d["neck_yaw"] = z + 0.25 * np.sign(p.yaw_rate)
        d["lumbar_yaw"] = z + 0.1 * np.sign(p.yaw_rate)
    elif p.name == "sitting":
        x = 0.5 - 0.5 * np.cos(ph)
        seat = x * x * (3 - 2 * x)  # smoothstep: 0 standing, 1 seated
        for side in "lr":
            d[f"{side}_hip_flex"] = 1.5 * seat
            d[f"{side}_knee"] = 1.55 * seat
            d[f"{side}_sh_flex"] = 0.4 * seat
            d[f"{side}_elbow"] = 0.5 * seat
        d["lumbar_pitch"] = 0.5 * np.sin(ph) ** 2 + 0.1 * seat
        forward = -300.0 * seat
    elif p.name == "reaching":
        left = 0.5 - 0.5 * np.cos(ph)
        right = 0.5 - 0.5 * np.cos(ph + np.pi)
        for s, r, k in (("l", left, 0.37), ("r", right, 0.53)):
            d[f"{s}_sh_flex"] = r * (1.3 + 0.5 * np.sin(k * ph + 6 * p.extra))
            d[f"{s}_sh_abd"] = 0.1 + r * 0.3 * np.sin(1.3 * k * ph)
            d[f"{s}_elbow"] = 1.2 - 1.0 * r
        d["lumbar_pitch"] = 0.35 * (left + right) / 2
        d["lumbar_yaw"] = 0.25 * (right - left)
        forward = 100.0 * (left + right)
    return d, air, forward


class _RandomFunctions:
    """n unit-variance smooth random functions of time (sums of sinusoids)."""

    def __init__(self, rng: np.random.Generator, n: int, band=(0.1, 1.0), k: int = 6):
        self.freq = np.exp(rng.uniform(np.log(band[0]), np.log(band[1]), size=(n, k)))
        self.phase = rng.uniform(0, 2 * np.pi, size=(n, k))
        self.amp = rng.standard_normal(size=(n, k)) * np.sqrt(2.0 / k)

    def __call__(self, t: np.ndarray) -> np.ndarray:  # (T,) -> (T, n)
        return np.sum(self.amp * np.sin(2 * np.pi * self.freq * t[:, None, None] + self.phase), axis=-1)


class Motion:
    """A subject performing a primary action blended with a secondary one, moving on a loop.

    weights: primary 1 - b(t), secondary b(t) = b_max * (1 - cos(2 pi f_b t + phi)) / 2.
    Root path: a circle of radius r around `centre`, angle theta(t) = theta0 +
    (speed / r) integrated over the blend weights in closed form; heading is the
    path tangent plus the integrated turning rate.
    """

    def __init__(self, body: Body, action: str, rng: np.random.Generator, secondary: str | None = None):
        self.body = body
        self.action = action
        others = [a for a in ACTIONS if a != action]
        pick = others[int(rng.integers(len(others)))]
        self.secondary = secondary if secondary is not None else pick
        self.primary_params = draw_action(action, rng)
        self.secondary_params = draw_action(self.secondary, rng)
        self.blend_max = rng.uniform(0.15, 0.45)
        self.blend_freq = rng.uniform(0.05, 0.15)
        self.blend_phase = rng.uniform(0, 2 * np.pi)
        self.radius = rng.uniform(1000.0, 1500.0)
        self.centre = rng.uniform(-200.0, 200.0, size=2)
        self.theta0 = rng.uniform(0, 2 * np.pi)
        self.heading0 = rng.uniform(-0.5, 0.5)
        self.idle = _RandomFunctions(rng, len(_DOF_NAMES))
        self.idle_amp = rng.uniform(0.03, 0.06)
        self.sway = _RandomFunctions(rng, 2, band=(0.05, 0.3))

    def _blend(self, t):
        """Secondary weight b(t) and its integral B(t) = int_0^t b."""
        w = 2 * np.pi * self.blend_freq
        b = self.blend_max * (0.5 - 0.5 * np.cos(w * t + self.blend_phase))
        integral = self.blend_max * (0.5 * t - (np.sin(w * t + self.blend_phase) - np.sin(self.blend_phase)) / (2 * w))
        return b, integral

    def __call__(self, times) -> np.ndarray:
        """World joints (T, 17, 3) mm at `times` (T,) seconds."""
        t = np.asarray(times, dtype=np.float64)
        b, b_int = self._blend(t)
        weights = ((1 - b, t - b_int), (b, b_int))  # (weight, integral of weight)
        angles = np.zeros((len(t), NUM_JOINTS, 3))
        base = {"l_elbow": 0.15, "r_elbow": 0.15, "l_sh_abd": 0.1, "r_sh_abd": 0.1}
        idle = self.idle(t) * self.idle_amp  # (T, n_dofs)
        for i, name in enumerate(_DOF_NAMES):
            bone, axis, sign = DOFS[name]
            angles[:, bone, axis] += sign * (base.get(name, 0.0) + idle[:, i])
        air = np.zeros_like(t)
        forward = np.zeros_like(t)
        theta = np.full_like(t, self.theta0)
        heading = np.full_like(t, self.heading0)
        loco = np.zeros_like(t)  # share of locomotion: stationary actions stay near the centre
        for params, (w, w_int) in zip((self.primary_params, self.secondary_params), weights, strict=True):
            dofs, a_air, a_fwd = action_pose(params, t)
            for name, value in dofs.items():
                bone, axis, sign = DOFS[name]
                angles[:, bone, axis] += sign * w * value
            air = air + w * a_air
            forward = forward + w * a_fwd
            theta = theta + params.speed_mm_s / self.radius * w_int
            heading = heading + params.yaw_rate * w_int
            loco = loco + (w if params.speed_mm_s > 0 else 0.0)
        heading = heading + theta + np.pi / 2  # tangent of the loop (x = sin, z = cos)
        sway = self.sway(t) * 40.0  # (T, 2) mm
        radius = self.radius * (0.3 + 0.7 * loco)
        root = np.zeros((len(t), 3))
        root[:, 0] = self.centre[0] + radius * np.sin(theta) + forward * np.sin(heading) + sway[:, 0]
        root[:, 2] = self.centre[1] + radius * np.cos(theta) + forward * np.cos(heading) + sway[:, 1]
        joints = forward_kinematics(self.body.offsets, angles, heading, root)
        # feet on the ground: the lower ankle at ankle height, plus flight
        lowest = np.minimum(joints[:, 3, 1], joints[:, 6, 1])
        joints[..., 1] += (ANKLE_HEIGHT_MM * self.body.scale + air - lowest)[:, None]
        return joints
