"""A numpy BVH (Biovision hierarchy) parser and vectorised forward kinematics.

A BVH file has a HIERARCHY (joints with an OFFSET from their parent, CHANNELS, and
End Sites) and a MOTION block (`Frames:`, `Frame Time:`, then one row of channel
values per frame). Conventions implemented here:

- rotation channels are in degrees and compose in the order they appear:
  `Zrotation Xrotation Yrotation` gives R_local = Rz @ Rx @ Ry;
- p_child = p_parent + R_parent_world @ (OFFSET_child + position channels of the child),
  R_child_world = R_parent_world @ R_child_local (the root's parent is the identity at 0);
- End Sites become extra leaf joints named `<parent>_End` (no channels);
- `Frames:` / `Frame Time:` are split on any whitespace; `.0083333` is accepted.

Positions come out in file units (the file does not say which; see bvh_mapping).
Every parse error names the file and the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_CHANNELS = ("xposition", "yposition", "zposition", "xrotation", "yrotation", "zrotation")


@dataclass(frozen=True)
class BVHJoint:
    """One joint of the hierarchy; joints are stored parents-first."""

    name: str
    parent: int  # index into BVHFile.joints, -1 for a root
    offset: np.ndarray  # (3,) file units
    channels: tuple[str, ...]  # lower-case, e.g. ("zrotation", "xrotation", "yrotation")
    first_channel: int  # column of channels[0] in BVHFile.motion
    end_site: bool = False


@dataclass
class BVHFile:
    """A parsed BVH file."""

    path: str  # for messages; "<string>" when parsed from text
    joints: list[BVHJoint]
    motion: np.ndarray  # (T, C) float64 channel values, T = `Frames:`
    frame_time: float  # seconds per frame

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def num_frames(self) -> int:
        return len(self.motion)

    def index(self, name: str) -> int:
        """Index of the joint called `name` (exact match)."""
        for i, j in enumerate(self.joints):
            if j.name == name:
                return i
        raise ValueError(f"{self.path}: no joint {name!r}; joints: {', '.join(self.names)}")


class _Tokens:
    """Whitespace tokens of the hierarchy with their 1-based line numbers."""

    def __init__(self, lines: list[str], path: str):
        self.path = path
        self.items: list[tuple[str, int]] = [
            (tok, n + 1) for n, line in enumerate(lines) for tok in line.split()]
        self.pos = 0

    def error(self, message: str, line: int | None = None) -> ValueError:
        if line is None:
            line = self.items[min(self.pos, len(self.items) - 1)][1] if self.items else 1
        return ValueError(f"{self.path}, line {line}: {message}")

    def peek(self) -> str | None:
        return self.items[self.pos][0] if self.pos < len(self.items) else None

    def next(self, what: str) -> tuple[str, int]:
        if self.pos >= len(self.items):
            raise self.error(f"unexpected end of the hierarchy; expected {what}")
        self.pos += 1
        return self.items[self.pos - 1]

    def expect(self, word: str) -> int:
        tok, line = self.next(f"{word!r}")
        if tok.upper() != word.upper():
            raise self.error(f"expected {word!r}, found {tok!r}", line)
        return line

    def number(self, what: str) -> float:
        tok, line = self.next(what)
        try:
            return float(tok)
        except ValueError:
            raise self.error(f"expected a number for {what}, found {tok!r}", line) from None


def _parse_joint(toks: _Tokens, parent: int, joints: list[BVHJoint], ncol: list[int]) -> None:
    """Parse `NAME { OFFSET .. CHANNELS .. children }` after ROOT/JOINT was consumed."""
    name_parts = []
    while toks.peek() not in (None, "{"):
        name_parts.append(toks.next("a joint name")[0])
    if not name_parts:
        raise toks.error("expected a joint name before '{'")
    name = " ".join(name_parts)
    toks.expect("{")
    toks.expect("OFFSET")
    offset = np.array([toks.number(f"the OFFSET of {name!r}") for _ in range(3)])
    channels: tuple[str, ...] = ()
    if (toks.peek() or "").upper() == "CHANNELS":
        toks.next("CHANNELS")
        n = toks.number(f"the channel count of {name!r}")
        if n != int(n) or n < 0:
            raise toks.error(f"channel count of {name!r} must be a non-negative integer, got {n}")
        chans = []
        for _ in range(int(n)):
            tok, line = toks.next(f"a channel name of {name!r}")
            if tok.lower() not in _CHANNELS:
                raise toks.error(
                    f"unknown channel {tok!r} of joint {name!r}; known: Xposition, Yposition, "
                    "Zposition, Xrotation, Yrotation, Zrotation", line)
            chans.append(tok.lower())
        channels = tuple(chans)
    index = len(joints)
    joints.append(BVHJoint(name, parent, offset, channels, ncol[0]))
    ncol[0] += len(channels)
    while True:
        tok, line = toks.next(f"JOINT, End Site or '}}' closing {name!r}")
        up = tok.upper()
        if up == "}":
            return
        if up == "JOINT":
            _parse_joint(toks, index, joints, ncol)
        elif up == "END":
            toks.expect("Site")
            toks.expect("{")
            toks.expect("OFFSET")
            end_offset = np.array([toks.number(f"the End Site OFFSET of {name!r}") for _ in range(3)])
            toks.expect("}")
            joints.append(BVHJoint(f"{name}_End", index, end_offset, (), ncol[0], end_site=True))
        else:
            raise toks.error(f"expected JOINT, End Site or '}}' in joint {name!r}, found {tok!r}", line)


def _parse_motion(lines: list[str], start: int, n_channels: int, path: str):
    """Parse the MOTION block; `start` is the 0-based index of the line after MOTION."""
    header = {}
    i = start
    for key in ("frames:", "frame time:"):
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines):
            raise ValueError(f"{path}, line {i + 1}: unexpected end of file; expected {key!r}")
        words = lines[i].split()
        label = " ".join(w.lower() for w in words[: key.count(" ") + 1])
        if label != key or len(words) != key.count(" ") + 2:
            raise ValueError(f"{path}, line {i + 1}: expected '{key} <value>', found {lines[i].strip()!r}")
        try:
            header[key] = float(words[-1])
        except ValueError:
            raise ValueError(f"{path}, line {i + 1}: {key!r} value {words[-1]!r} is not a number") from None
        i += 1
    frames, frame_time = header["frames:"], header["frame time:"]
    if frames != int(frames) or frames < 0:
        raise ValueError(f"{path}, line {i - 1}: 'Frames:' must be a non-negative integer, got {frames:g}")
    if not frame_time > 0:
        raise ValueError(f"{path}, line {i}: 'Frame Time:' must be > 0 seconds, got {frame_time:g}")
    frames = int(frames)
    body = lines[i:]
    values = None
    try:  # fast path: one conversion of the whole block
        values = np.array(" ".join(body).split(), dtype=np.float64)
    except ValueError:
        pass
    if values is not None and values.size == frames * n_channels:
        motion = values.reshape(frames, n_channels)
    else:  # slow path, only to find the offending line
        rows = []
        for k, line in enumerate(body):
            words = line.split()
            if not words:
                continue
            where = f"{path}, line {i + k + 1}"
            if len(rows) == frames:
                raise ValueError(f"{where}: more motion rows than 'Frames: {frames}'")
            if len(words) != n_channels:
                raise ValueError(
                    f"{where}: frame {len(rows)} has {len(words)} values; expected {n_channels} "
                    "(one per channel in the hierarchy)")
            try:
                rows.append(np.array(words, dtype=np.float64))
            except ValueError:
                bad = next(w for w in words if not _is_number(w))
                raise ValueError(f"{where}: frame {len(rows)}: {bad!r} is not a number") from None
        if len(rows) != frames:
            raise ValueError(
                f"{path}, line {len(lines)}: file ends after {len(rows)} motion rows; "
                f"'Frames:' says {frames}")
        motion = np.array(rows).reshape(frames, n_channels)
    if not np.all(np.isfinite(motion)):
        bad_frame = int(np.argwhere(~np.isfinite(motion))[0, 0])
        raise ValueError(f"{path}: frame {bad_frame} has a non-finite channel value; expected finite numbers")
    return motion, frame_time


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def parse_bvh_text(text: str, path: str = "<string>") -> BVHFile:
    """Parse the contents of a BVH file. `path` is only used in messages."""
    lines = text.splitlines()
    try:
        motion_line = next(n for n, line in enumerate(lines) if line.strip().upper() == "MOTION")
    except StopIteration:
        raise ValueError(f"{path}, line {len(lines)}: no MOTION line; expected a HIERARCHY then MOTION") from None
    toks = _Tokens(lines[:motion_line], path)
    toks.expect("HIERARCHY")
    joints: list[BVHJoint] = []
    ncol = [0]
    while toks.peek() is not None:
        tok, line = toks.next("ROOT")
        if tok.upper() != "ROOT":
            raise toks.error(f"expected ROOT, found {tok!r}", line)
        _parse_joint(toks, -1, joints, ncol)
    if not joints:
        raise ValueError(f"{path}, line {motion_line + 1}: the HIERARCHY has no ROOT joint")
    names = [j.name for j in joints]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{path}: joint names must be unique; repeated: {', '.join(dupes)}")
    motion, frame_time = _parse_motion(lines, motion_line + 1, ncol[0], path)
    return BVHFile(path=path, joints=joints, motion=motion, frame_time=frame_time)


def read_bvh(path) -> BVHFile:
    """Parse the BVH file at `path`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BVH file not found: {path}")
    return parse_bvh_text(path.read_text(encoding="utf-8", errors="replace"), str(path))


def _axis_rotations(axis: str, degrees: np.ndarray) -> np.ndarray:
    """Rotation matrices (T, 3, 3) about one axis ('x', 'y' or 'z') by `degrees` (T,)."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    R = np.zeros((len(a), 3, 3))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]  # the rotated plane, right-handed
    k = 3 - i - j
    R[:, k, k] = 1.0
    R[:, i, i] = c
    R[:, j, j] = c
    R[:, i, j] = -s
    R[:, j, i] = s
    return R


def local_transforms(bvh: BVHFile, frames=None) -> tuple[np.ndarray, np.ndarray]:
    """Each joint's rotation (T, J, 3, 3) relative to its parent, and its translation
    (T, J, 3) in the parent's frame (OFFSET + position channels), in file units.

    frames: optional index or slice into the motion rows (default all).
    """
    motion = bvh.motion if frames is None else np.atleast_2d(bvh.motion[frames])
    T = len(motion)
    rot = np.broadcast_to(np.eye(3), (T, len(bvh.joints), 3, 3)).copy()  # (T, J, 3, 3)
    shift = np.broadcast_to([j.offset for j in bvh.joints], (T, len(bvh.joints), 3)).copy()  # (T, J, 3)
    for j, joint in enumerate(bvh.joints):
        for c, channel in enumerate(joint.channels):
            values = motion[:, joint.first_channel + c]  # (T,)
            axis = channel[0]
            if channel.endswith("position"):
                shift[:, j, "xyz".index(axis)] += values
            else:
                rot[:, j] = rot[:, j] @ _axis_rotations(axis, values)
    return rot, shift


def chain(bvh: BVHFile, rot: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """World positions (T, J, 3) from local rotations (T, J, 3, 3) and translations (T, J, 3):
    p_child = p_parent + R_parent_world @ shift_child, R_child_world = R_parent_world @ R_child."""
    T = len(rot)
    pos = np.zeros((T, len(bvh.joints), 3))  # (T, J, 3)
    world = np.zeros((T, len(bvh.joints), 3, 3))  # (T, J, 3, 3) world rotations
    for j, joint in enumerate(bvh.joints):
        if joint.parent < 0:
            pos[:, j] = shift[:, j]
            world[:, j] = rot[:, j]
        else:
            parent_rot = world[:, joint.parent]
            pos[:, j] = pos[:, joint.parent] + np.einsum("tab,tb->ta", parent_rot, shift[:, j])
            world[:, j] = parent_rot @ rot[:, j]
    return pos


def forward_kinematics(bvh: BVHFile, frames=None) -> np.ndarray:
    """World positions (T, J, 3) of every joint (End Sites included), in file units.

    frames: optional index or slice into the motion rows (default all).
    Vectorised over frames: one pass over the J joints.
    """
    return chain(bvh, *local_transforms(bvh, frames))


def rest_pose(bvh: BVHFile) -> np.ndarray:
    """Positions (J, 3) with every channel at zero (the skeleton's OFFSETs only)."""
    zero = BVHFile(bvh.path, bvh.joints, np.zeros((1, bvh.motion.shape[1])), bvh.frame_time)
    return forward_kinematics(zero)[0]
