"""Virtual pinhole cameras: H36M-like intrinsics, look-at poses, projection.

World frame used by every generated or imported motion in this package:
right-handed, **y up**, ground plane y = 0, millimetres (the BVH convention).
Camera frame is OpenCV's: x right, y down, z forward; p_cam = R @ p_world + t.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Human3.6M's four cameras have fx ~ 1145-1150 px and principal points within
# ~20 px of the centre of a 1000 x 1000 image.
H36M_FOCAL_PX = 1145.0
WORLD_UP = np.array([0.0, 1.0, 0.0])


def look_at(eye_mm, target_mm, up=WORLD_UP) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (3, 3) and translation (3,) of a camera at `eye_mm` looking at `target_mm`."""
    eye = np.asarray(eye_mm, dtype=np.float64)
    forward = np.asarray(target_mm, dtype=np.float64) - eye
    norm = np.linalg.norm(forward)
    if norm == 0:
        raise ValueError(f"look_at: eye {eye.tolist()} equals target; expected distinct points")
    forward /= norm
    right = np.cross(forward, up)  # x_cam = y_cam x z_cam with y_cam = -up
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    return rotation, -rotation @ eye


@dataclass
class VirtualCamera:
    """A pinhole camera without distortion.

    rotation/translation map world millimetres to camera millimetres:
    p_cam = rotation @ p_world + translation.
    """

    fx: float = H36M_FOCAL_PX
    fy: float = H36M_FOCAL_PX
    cx: float = 500.0
    cy: float = 500.0
    width: int = 1000
    height: int = 1000
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # (3, 3)
    translation: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 5000.0]))  # (3,) mm
    name: str = "cam0"

    def __post_init__(self):
        self.rotation = np.asarray(self.rotation, dtype=np.float64)
        self.translation = np.asarray(self.translation, dtype=np.float64)
        if self.rotation.shape != (3, 3):
            raise ValueError(f"camera {self.name!r}: rotation must be (3, 3), got {self.rotation.shape}")
        if self.translation.shape != (3,):
            raise ValueError(f"camera {self.name!r}: translation must be (3,), got {self.translation.shape}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera {self.name!r}: resolution must be positive, got {self.width}x{self.height}")

    @classmethod
    def looking_at(cls, eye_mm, target_mm, **kwargs) -> VirtualCamera:
        """A camera at `eye_mm` aimed at `target_mm` (world mm, y up)."""
        rotation, translation = look_at(eye_mm, target_mm)
        return cls(rotation=rotation, translation=translation, **kwargs)

    @property
    def position(self) -> np.ndarray:
        """Camera centre in world mm, (3,)."""
        return -self.rotation.T @ self.translation

    def to_camera(self, joints_world_mm) -> np.ndarray:
        """World (..., 3) mm -> camera frame (..., 3) mm."""
        x = np.asarray(joints_world_mm, dtype=np.float64)
        return x @ self.rotation.T + self.translation

    def project(self, joints_world_mm) -> tuple[np.ndarray, np.ndarray]:
        """Project world points (..., 17, 3) mm to pixels (..., 17, 2) and depth (..., 17) mm.

        Raises ValueError if any point is at or behind the camera plane.
        """
        x = np.asarray(joints_world_mm, dtype=np.float64)
        if x.shape[-1] != 3:
            raise ValueError(f"project expects points (..., 3), got shape {x.shape}")
        cam = self.to_camera(x)  # (..., 3)
        depth = cam[..., 2]
        if not np.all(depth > 1.0):
            raise ValueError(
                f"camera {self.name!r}: {int(np.sum(depth <= 1.0))} points at or behind the camera "
                f"(min depth {float(depth.min()):.1f} mm); expected all depths > 1 mm")
        u = self.fx * cam[..., 0] / depth + self.cx
        v = self.fy * cam[..., 1] / depth + self.cy
        return np.stack([u, v], axis=-1), depth


def camera_ring(
    n: int,
    distance_mm: float = 5000.0,
    height_mm: float = 1500.0,
    rng: np.random.Generator | None = None,
    target_mm=(0.0, 900.0, 0.0),
    width: int = 1000,
    height: int = 1000,
    focal_px: float = H36M_FOCAL_PX,
    prefix: str = "cam",
) -> list[VirtualCamera]:
    """`n` H36M-like cameras evenly spaced around the y axis, all aimed at `target_mm`.

    Without `rng` the ring starts at yaw 0 (camera on the -z side looking along +z)
    and every camera has the nominal intrinsics. With `rng` the ring gets a random
    start yaw, and each camera small jitters: yaw +-10 deg, distance +-10 %,
    height +-150 mm, focal length +-0.5 %, principal point +-15 px (H36M's spread).
    """
    if n < 1:
        raise ValueError(f"camera_ring: n must be >= 1, got {n}")
    if distance_mm <= 0:
        raise ValueError(f"camera_ring: distance_mm must be > 0, got {distance_mm}")
    target = np.asarray(target_mm, dtype=np.float64)
    start = 0.0 if rng is None else rng.uniform(0.0, 2 * np.pi)
    cams = []
    for i in range(n):
        yaw = start + 2 * np.pi * i / n
        dist, h, f, dcx, dcy = distance_mm, height_mm, focal_px, 0.0, 0.0
        if rng is not None:
            yaw += np.deg2rad(rng.uniform(-10, 10))
            dist *= rng.uniform(0.9, 1.1)
            h += rng.uniform(-150, 150)
            f *= rng.uniform(0.995, 1.005)
            dcx, dcy = rng.uniform(-15, 15, size=2)
        eye = np.array([target[0] - dist * np.sin(yaw), h, target[2] - dist * np.cos(yaw)])
        rotation, translation = look_at(eye, target)
        cams.append(VirtualCamera(
            fx=float(f), fy=float(f), cx=width / 2 + float(dcx), cy=height / 2 + float(dcy),
            width=width, height=height, rotation=rotation, translation=translation,
            name=f"{prefix}{i}"))
    return cams
