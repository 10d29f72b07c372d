"""Motion-capture BVH files as a data source: `open_source("bvh:DIR")`.

Every `*.bvh` file under DIR (searched recursively; DIR may also be one file) is one
recording. Import (`load_bvh_motion`):
  parse (`bvh_parse`) -> forward kinematics -> H36M-17 (`bvh_mapping`: naming style
  detected from the joint names, or a user mapping) -> millimetres (the style's
  unit, else inferred from the leg length, or `units`) -> frame 0 dropped only when it
  is a rest pose (every joint rotation 0) or a T-pose (arms out level, knees straight:
  the frame cgspeed adds; `bvh_resample.first_frame_rest`) -> floor at y = 0 (the lower
  ankle's 5th-percentile height minus 80 mm) -> centred on the mean root x, z.
The world frame is the BVH one and `hummuss.data.camera`'s: y up, millimetres. The
recording's frame rate is the header's 1 / Frame Time unless `src_fps` says otherwise
(some CMU conversions state 30 fps for 120 Hz capture).

The source (`BVHSource`) resamples each recording from its rate to `fps` (default
50 Hz, H36M's) in joint space (`bvh_resample.JointMotion`): joint rotations slerped,
root translation interpolated linearly, then forward kinematics, so every bone inside
one BVH link keeps its length exactly (no repair step; `rigid_bones` remains as an
import option). It renders each recording
through `cameras` virtual H36M-like cameras (`camera_ring` around the recording,
each pushed back until the whole recording stays in its 1000 x 1000 image) with
the detection noise of `synthetic` (`render_sequence`). `rate` r renders at r * fps
from the file's own frames, so r = 0.5 equals keeping every second frame of r = 1
exactly, and r = 2 is interpolated from the 120 Hz recording.

Options, as keyword arguments or as a query after the path (`BVHSource("DIR?units=cm&fps=60")`;
`open_source("bvh:DIR?...")` needs its path-exists check to ignore the `?query` first):
  mapping  dict H36M joint -> BVH joint(s) (see bvh_mapping), or a JSON file of one;
           without it, DIR/bvh-mapping.json is used if present
  units    mm, cm, inch, cmu, m, or mm per file unit (default: from the style)
  fps      native frame rate of the source (default 50)
  src_fps  the files' true frame rate, overriding their headers' Frame Time (also a key
           "src_fps" of the mapping file)
  cameras  virtual cameras per recording (default 2)
  seed     cameras and detection noise (default 0)
  test     comma list of subjects for the test split (default: see below)

Split: the group of a file is its CMU subject (`02` for `02_01.bvh`, the part of the
name before the first `_` when it is a number) or else its name without suffix.
Groups are ordered by CRC-32 of their name; the first ceil(0.2 * n_groups) of them
are the test split (none when there is only one group). For the CMU folder in
../shared/data/cmu-mocap that is subjects 03, 07 and 13.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from hummuss.data.bvh_mapping import build_mapping, infer_unit_mm, parse_units
from hummuss.data.bvh_parse import BVHFile, forward_kinematics, read_bvh, rest_pose
from hummuss.data.bvh_resample import JointMotion, first_frame_rest
from hummuss.data.camera import VirtualCamera, camera_ring
from hummuss.data.clips import Sequence
from hummuss.data.render import render_sequence
from hummuss.data.skeleton import H36M_PARENTS, ROOT
from hummuss.data.source import MotionSource, check_rate

ANKLE_HEIGHT_MM = 80.0  # ankle joints above the floor in stance (CMU 01_01: ~100 mm; Daz files: 60-110)
FLOOR_PERCENTILE = 5.0  # floor = this percentile of the lower ankle's height - ANKLE_HEIGHT_MM
TEST_FRACTION = 0.2
IMAGE_MARGIN_PX = 20.0  # every joint of a recording stays this far inside the image
MAPPING_FILE = "bvh-mapping.json"
OPTIONS = ("mapping", "units", "fps", "src_fps", "cameras", "seed", "test")
MAPPING_SETTINGS = ("src_fps",)  # keys of a mapping (file) that are settings, not joints
_CMU_NAME = re.compile(r"^(\d+)_(\w+)$")


@dataclass
class BVHMotion:
    """One imported recording: H36M-17 world joints in mm at the recording's frame rate."""

    joints_mm: np.ndarray  # (T, 17, 3) float64: y up, floor y = 0, mean root x, z = 0
    fps: float  # the recording's frame rate: `src_fps` if given, else the header's 1 / Frame Time
    path: str
    style: str  # naming style, see bvh_mapping
    unit_mm: float  # mm per file unit used
    header_fps: float = 0.0  # 1 / Frame Time as the file states it
    first_frame: str = ""  # why file frame 0 was dropped ('T-pose', 'rest pose'), '' if kept
    joint_motion: JointMotion | None = None  # joint space, for resampling (None: positions only)
    weights: np.ndarray | None = None  # (17, J) BVH joints -> H36M (bvh_mapping)
    shift_mm: np.ndarray | None = None  # (3,) floor and centring shift added after mapping

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame."""
        return (len(self.joints_mm) - 1) / self.fps

    def sample_times(self, fps: float) -> np.ndarray:
        """Times (n,) seconds k / fps covering the recording, k = 0, 1, ..."""
        n = int(math.floor(self.duration * fps + 1e-6)) + 1
        return np.arange(n) / float(fps)

    def at(self, times) -> np.ndarray:
        """Joints (len(times), 17, 3) mm at `times` seconds: joint rotations slerped and the
        root translation interpolated linearly, then forward kinematics (bones stay rigid);
        without joint-space data (`rigid=True` imports), joint positions interpolated linearly."""
        if self.joint_motion is None:
            return interpolate_frames(self.joints_mm, self.fps, times)
        world = self.joint_motion.at(times)  # (n, J, 3) file units
        return np.einsum("kj,njc->nkc", self.weights, world) * self.unit_mm + self.shift_mm


def interpolate_frames(frames: np.ndarray, fps: float, times) -> np.ndarray:
    """Linear interpolation of frames (T, ...) sampled at k / fps, at `times` (n,) seconds.

    Times outside [0, (T - 1) / fps] are clamped to the ends.
    """
    frames = np.asarray(frames, dtype=np.float64)
    pos = np.clip(np.asarray(times, dtype=np.float64) * fps, 0.0, len(frames) - 1)  # (n,)
    i0 = np.minimum(np.floor(pos).astype(np.int64), max(len(frames) - 2, 0))
    i1 = np.minimum(i0 + 1, len(frames) - 1)
    w = (pos - i0).reshape(-1, *([1] * (frames.ndim - 1)))
    return frames[i0] * (1.0 - w) + frames[i1] * w


def load_mapping(mapping) -> dict | None:
    """A mapping dict, or a JSON file (path) holding one, or None."""
    if mapping is None or isinstance(mapping, dict):
        return mapping
    path = Path(mapping).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"BVH mapping file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected an object "
                         '{"<H36M joint>": "<BVH joint>", ...}') from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping H36M joints to BVH joints, "
                         f"got {type(data).__name__}")
    return data


def rigid_bones(joints: np.ndarray) -> np.ndarray:
    """Give every H36M bone of joints (T, 17, 3) its median length, keeping its direction.

    Walks the tree from the root: child' = parent' + median_length * unit(child - parent).
    Needed where an H36M bone spans two moving BVH links (the spine midpoint; CMU's
    Neck1 -> arm across the moving clavicle); joints move by millimetres.
    """
    joints = np.asarray(joints, dtype=np.float64)
    out = joints.copy()
    for child, parent in enumerate(H36M_PARENTS):
        if parent < 0:
            continue
        bone = joints[:, child] - joints[:, parent]  # (T, 3)
        length = np.linalg.norm(bone, axis=-1, keepdims=True)  # (T, 1)
        unit = bone / np.maximum(length, 1e-9)
        out[:, child] = out[:, parent] + np.median(length) * unit
    return out


def load_bvh_motion(path, mapping=None, units=None, drop_first="auto", rigid: bool = False,
                    bvh: BVHFile | None = None, src_fps: float | None = None) -> BVHMotion:
    """Import one BVH file as H36M-17 world joints in millimetres (see the module docstring).

    mapping: None (detect the naming style), a dict or a JSON file (see bvh_mapping).
    units: None (the style's unit, else inferred), a unit name or mm per file unit.
    drop_first: 'auto' drops frame 0 only when it is a rest pose or T-pose
    (`bvh_resample.first_frame_rest`); True / False always / never.
    rigid: give every bone its median length (`rigid_bones`; then `at` interpolates
    positions); by default bones inside one BVH link are rigid by construction.
    bvh: an already parsed file (then `path` is only used in messages).
    src_fps: the recording's true frame rate, overriding the header's Frame Time.
    """
    bvh = bvh if bvh is not None else read_bvh(path)
    fps = check_src_fps(src_fps) if src_fps is not None else bvh.fps
    joint_map = build_mapping(bvh.names, mapping_joints(load_mapping(mapping)), path=bvh.path)
    if units is not None:
        unit_mm = parse_units(units)
    else:
        unit_mm = joint_map.unit_mm or infer_unit_mm(joint_map.apply(rest_pose(bvh)))[1]
    rest = first_frame_rest(bvh, joint_map.apply(forward_kinematics(bvh, 0))[0]) if bvh.num_frames else ""
    if drop_first == "auto":
        drop = bool(rest)
    elif isinstance(drop_first, bool):
        drop, rest = drop_first, (rest or "asked") if drop_first else ""
    else:
        raise ValueError(f"drop_first must be 'auto', True or False, got {drop_first!r}")
    first = 1 if drop else 0
    if bvh.num_frames - first < 2:
        dropped = f" after dropping frame 0 ({rest})" if drop else ""
        raise ValueError(f"{bvh.path}: {bvh.num_frames} frame(s); expected at least 2{dropped}")
    moving = JointMotion.from_bvh(bvh, first, fps)
    joints = joint_map.apply(moving.positions()) * unit_mm  # (T, 17, 3)
    if rigid:
        joints = rigid_bones(joints)
    lower_ankle = np.minimum(joints[:, 3, 1], joints[:, 6, 1])  # (T,)
    shift = np.zeros(3)
    shift[1] = -(np.percentile(lower_ankle, FLOOR_PERCENTILE) - ANKLE_HEIGHT_MM)
    shift[[0, 2]] = -joints[:, ROOT, [0, 2]].mean(axis=0)
    return BVHMotion(joints_mm=joints + shift, fps=fps, path=bvh.path, style=joint_map.style,
                     unit_mm=float(unit_mm), header_fps=bvh.fps, first_frame=rest if drop else "",
                     joint_motion=None if rigid else moving, weights=joint_map.weights, shift_mm=shift)


def check_src_fps(value) -> float:
    """`src_fps` as a positive float, else ValueError."""
    try:
        fps = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"bvh source: src_fps must be a number of frames per second, got {value!r}") from None
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"bvh source: src_fps must be > 0, got {value!r}")
    return fps


def mapping_joints(mapping: dict | None) -> dict | None:
    """A mapping without its settings (MAPPING_SETTINGS keys such as src_fps)."""
    if mapping is None:
        return None
    return {k: v for k, v in mapping.items() if k not in MAPPING_SETTINGS}


def fit_cameras(joints_mm: np.ndarray, n: int, rng: np.random.Generator,
                margin_px: float = IMAGE_MARGIN_PX) -> list[VirtualCamera]:
    """`n` H36M-like cameras around a recording (T, 17, 3), each moved back along its
    line of sight (same target and pitch) until every joint of every frame projects
    at least `margin_px` inside its image."""
    target = (0.0, float(np.median(joints_mm[:, ROOT, 1])), 0.0)
    cams = []
    for cam in camera_ring(n, rng=rng, target_mm=target):
        eye, aim = cam.position, np.asarray(target)
        step = 0
        while not _fits(cam, joints_mm, margin_px):
            step += 1
            if step > 60:
                raise ValueError(f"cannot fit camera {cam.name!r} around a recording "
                                 f"{np.ptp(joints_mm, axis=(0, 1)).round()} mm wide")
            cam = VirtualCamera.looking_at(
                aim + (eye - aim) * 1.1**step, aim, fx=cam.fx, fy=cam.fy, cx=cam.cx, cy=cam.cy,
                width=cam.width, height=cam.height, name=cam.name)
        cams.append(cam)
    return cams


def _fits(cam: VirtualCamera, joints_mm: np.ndarray, margin_px: float) -> bool:
    depth = cam.to_camera(joints_mm)[..., 2]
    if not np.all(depth > 100.0):
        return False
    px, _ = cam.project(joints_mm)
    return bool(np.all((px >= margin_px) & (px <= [cam.width - margin_px, cam.height - margin_px])))


def recording_group(path: Path) -> str:
    """The split group of a file: its CMU subject id ('02' for 02_01.bvh) or its stem."""
    m = _CMU_NAME.match(path.stem)
    return m.group(1) if m else path.stem


def pick_test_groups(groups: list[str], fraction: float = TEST_FRACTION) -> set[str]:
    """The first ceil(fraction * n) distinct groups by CRC-32 of their name (none if n < 2)."""
    unique = sorted(set(groups), key=lambda g: (zlib.crc32(g.encode("utf-8")), g))
    if len(unique) < 2:
        return set()
    return set(unique[: math.ceil(fraction * len(unique))])


def _same_subject(a: str, b: str) -> bool:
    return a == b or (a.isdigit() and b.isdigit() and int(a) == int(b))


@dataclass
class _Recording:
    path: Path
    key: str  # path relative to the source root, without suffix
    group: str
    split: str


class BVHSource(MotionSource):
    """BVH motion capture rendered through virtual cameras (see the module docstring)."""

    name = "bvh"

    def __init__(self, path: str, mapping=None, units=None, fps: float | None = None,
                 cameras: int | None = None, seed: int | None = None, test=None,
                 src_fps: float | None = None):
        raw = str(path)
        query: dict[str, str] = {}
        if "?" in raw and not Path(raw).expanduser().exists():
            raw, _, qs = raw.partition("?")
            query = dict(parse_qsl(qs, keep_blank_values=True))
            unknown = sorted(set(query) - set(OPTIONS))
            if unknown:
                raise ValueError(f"unknown bvh option(s) {', '.join(unknown)} in {path!r}; "
                                 f"known: {', '.join(OPTIONS)}")
        root = Path(raw).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"bvh source: path not found: {root}")
        if root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".bvh" and p.is_file())
            if not files:
                raise FileNotFoundError(f"bvh source: no .bvh files under {root}")
            base = root
        else:
            files, base = [root], root.parent
        if mapping is None:
            mapping = query.get("mapping")
            if mapping is None and root.is_dir() and (root / MAPPING_FILE).is_file():
                mapping = root / MAPPING_FILE
        self.mapping = load_mapping(mapping)
        if src_fps is None:
            src_fps = query.get("src_fps", (self.mapping or {}).get("src_fps"))
        self.src_fps = check_src_fps(src_fps) if src_fps is not None else None
        self.units = units if units is not None else query.get("units")
        if self.units is not None:
            parse_units(self.units)  # validate early
        self.native_fps = float(fps if fps is not None else query.get("fps", 50.0))
        self.n_cameras = int(cameras if cameras is not None else query.get("cameras", 2))
        self.seed = int(seed if seed is not None else query.get("seed", 0))
        if not (self.native_fps > 0 and math.isfinite(self.native_fps)):
            raise ValueError(f"bvh source: fps must be > 0, got {self.native_fps}")
        if self.n_cameras < 1:
            raise ValueError(f"bvh source: cameras must be >= 1, got {self.n_cameras}")
        self.root = root
        self.spec = f"bvh:{path}"

        groups = [recording_group(f) for f in files]
        test = test if test is not None else query.get("test")
        if test is None:
            chosen = pick_test_groups(groups)
        else:
            wanted = [t.strip() for t in test.split(",")] if isinstance(test, str) else [str(t) for t in test]
            chosen = {g for g in groups if any(_same_subject(g, t) for t in wanted)}
            missing = [t for t in wanted if not any(_same_subject(g, t) for g in groups)]
            if missing:
                raise ValueError(f"bvh source: test subject(s) {', '.join(missing)} not found under "
                                 f"{root}; subjects: {', '.join(sorted(set(groups)))}")
        self.recordings = [
            _Recording(f, f.relative_to(base).with_suffix("").as_posix(), g,
                       "test" if g in chosen else "train")
            for f, g in zip(files, groups, strict=True)]
        self._motions: dict[str, BVHMotion] = {}
        self._cameras: dict[str, list[VirtualCamera]] = {}

    def motion(self, rec: _Recording) -> BVHMotion:
        """The imported recording (parsed once, then cached in memory)."""
        if rec.key not in self._motions:
            self._motions[rec.key] = load_bvh_motion(rec.path, self.mapping, self.units, src_fps=self.src_fps)
        return self._motions[rec.key]

    def cameras(self, rec: _Recording) -> list[VirtualCamera]:
        """The recording's virtual cameras: fixed by seed and file, the same at every rate."""
        if rec.key not in self._cameras:
            rng = np.random.default_rng([self.seed, zlib.crc32(rec.key.encode("utf-8")), 0])
            self._cameras[rec.key] = fit_cameras(self.motion(rec).joints_mm, self.n_cameras, rng)
        return self._cameras[rec.key]

    def sequences(self, split: str, rate: float = 1.0) -> list[Sequence]:
        """One Sequence per recording of `split` and camera, at rate * fps."""
        split, rate = self.check_split(split), check_rate(rate)
        fps = self.native_fps * rate
        out = []
        for rec in self.recordings:
            if rec.split != split:
                continue
            motion = self.motion(rec)
            times = motion.sample_times(fps)
            joints = motion.at(times)  # (T, 17, 3) mm
            for i, cam in enumerate(self.cameras(rec)):
                rng = np.random.default_rng([self.seed, zlib.crc32(rec.key.encode("utf-8")), 1, i])
                meta = {"subject": rec.group, "action": rec.path.stem, "camera": cam.name,
                        "source": f"{rec.key}/{cam.name}", "file": str(rec.path),
                        "style": motion.style, "unit_mm": motion.unit_mm, "header_fps": motion.header_fps,
                        "src_fps": motion.fps, "first_frame_dropped": motion.first_frame or "no"}
                out.append(render_sequence(joints, times, fps, cam, rng, meta))
        return out
