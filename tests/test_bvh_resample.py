"""Motion capture at its true rate: `src_fps`, resampling in joint space (slerp + FK), and
dropping frame 0 only when it is a rest pose / T-pose. Small files written by tests/test_bvh.py's
toy writer; tests/test_bvh_cmu.py checks the same on the real CMU files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hummuss.data import open_source
from hummuss.data.bvh import interpolate_frames, load_bvh_motion
from hummuss.data.bvh_resample import is_tpose, matrix_to_quat, quat_to_matrix, slerp
from hummuss.data.inspect import summarise
from hummuss.data.skeleton import H36M_BONES, bone_lengths
from tests.test_bvh import TOY_HIERARCHY, toy_motion, write_toy

# bones that are one BVH link in the toy (all but the spine midpoint's two and thorax -> arms)
ONE_LINK = [b for b, bone in enumerate(H36M_BONES) if bone not in {(0, 7), (7, 8), (8, 11), (8, 14)}]


def _z_rotation(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def test_quaternions_round_trip_and_slerp_takes_the_short_arc_at_constant_speed():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(200, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q[0] = [0, 1, 0, 0]  # a half turn: w = 0
    R = quat_to_matrix(q)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-12)
    q0, q1 = matrix_to_quat(_z_rotation(0.0)), matrix_to_quat(_z_rotation(90.0))
    for t in (0.25, 0.5, 0.9):  # 22.5, 45, 81 degrees: the angle moves linearly in t
        np.testing.assert_allclose(quat_to_matrix(slerp(q0, q1, t)), _z_rotation(90.0 * t), atol=1e-12)
        np.testing.assert_allclose(quat_to_matrix(slerp(q0, -q1, t)), _z_rotation(90.0 * t), atol=1e-12)
    # 170 -> -170 degrees (as Euler channels wrap) passes through 180, not through 0
    a, b = matrix_to_quat(_z_rotation(170.0)), matrix_to_quat(_z_rotation(-170.0))
    np.testing.assert_allclose(quat_to_matrix(slerp(a, b, 0.5)), _z_rotation(180.0), atol=1e-12)


def test_src_fps_overrides_the_header_rate(tmp_path):
    # captured at 120 Hz (root at 1000 mm/s in capture time), header says 30 fps
    folder = tmp_path / "mocap"
    write_toy(folder / "01_01.bvh", n_frames=121, frame_time=1 / 30)
    header = open_source(f"bvh:{folder}")
    true = open_source(f"bvh:{folder}?src_fps=120")
    m_header, m_true = header.motion(header.recordings[0]), true.motion(true.recordings[0])
    assert m_header.header_fps == m_true.header_fps == pytest.approx(30.0, rel=1e-6)
    assert m_true.fps == 120.0 and m_true.duration == pytest.approx(119 / 120)  # frame 0 dropped
    assert m_header.duration == pytest.approx(119 / 30)  # 4x too slow
    seqs = true.sequences("train")
    assert len(seqs[0]) == 50 and seqs[0].fps == 50.0  # 0.99 s at 50 Hz
    assert len(header.sequences("train")[0]) == 199
    z = m_true.at(m_true.sample_times(50.0))[:, 0, 2]
    np.testing.assert_allclose(np.diff(z), 1000.0 / 50, atol=1e-3)
    assert seqs[0].meta["src_fps"] == 120.0 and seqs[0].meta["header_fps"] == pytest.approx(30.0)
    # the same from the mapping file
    (folder / "bvh-mapping.json").write_text(json.dumps({"src_fps": 120}))
    mapped = open_source(f"bvh:{folder}")
    assert mapped.motion(mapped.recordings[0]).fps == 120.0 and len(mapped.sequences("train")[0]) == 50
    with pytest.raises(ValueError, match="src_fps must be > 0"):
        open_source(f"bvh:{folder}?src_fps=0")
    with pytest.raises(ValueError, match="src_fps must be a number"):
        open_source(f"bvh:{folder}?src_fps=fast")


def test_resampled_bones_are_rigid_without_repair(tmp_path):
    # fast motion (1.5 Hz swings sampled at 30 fps) makes linear position interpolation shrink bones
    path = write_toy(tmp_path / "01_01.bvh", n_frames=61, frame_time=1 / 30, fps=30.0)
    motion = load_bvh_motion(path)
    times = motion.sample_times(50.0)
    bones = bone_lengths(motion.at(times))[:, ONE_LINK]  # (T, bones) mm at 50 Hz
    assert np.ptp(bones, axis=0).max() < 0.1
    np.testing.assert_allclose(bones, np.broadcast_to(bones[0], bones.shape), atol=1e-9)
    # the recorded frames themselves come back unchanged
    np.testing.assert_allclose(motion.at(np.arange(len(motion.joints_mm)) / motion.fps), motion.joints_mm,
                               atol=1e-9)
    linear = bone_lengths(interpolate_frames(motion.joints_mm, motion.fps, times))[:, ONE_LINK]
    assert np.ptp(linear, axis=0).max() > 1.0  # what interpolating positions did


def test_first_frame_dropped_only_when_it_is_a_rest_pose(tmp_path):
    rest_first = load_bvh_motion(write_toy(tmp_path / "a" / "01_01.bvh", n_frames=31))
    assert rest_first.first_frame == "rest pose" and len(rest_first.joints_mm) == 30
    moving = toy_motion(31)[1:]  # no rest frame: every frame is captured motion
    rows = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in moving)
    path = tmp_path / "b" / "01_01.bvh"
    path.parent.mkdir()
    path.write_text(f"{TOY_HIERARCHY}MOTION\nFrames: 30\nFrame Time: 0.00833333\n{rows}\n")
    kept = load_bvh_motion(path)
    assert kept.first_frame == "" and len(kept.joints_mm) == 30
    assert len(load_bvh_motion(path, drop_first=True).joints_mm) == 29
    assert len(load_bvh_motion(tmp_path / "a" / "01_01.bvh", drop_first=False).joints_mm) == 31
    # data inspect says so
    table = summarise(f"bvh:{tmp_path / 'a'}")
    assert table.loc["train", "first_frame_dropped"] == "1 of 1 recordings (1 rest pose)"
    assert table.loc["train", "recorded_fps"] == "120"
    assert summarise(f"bvh:{tmp_path / 'b'}").loc["train", "first_frame_dropped"] == "0 of 1 recordings"


def test_tpose_detector():
    # H36M joints (mm, y up, facing +z, left = +x): a T-pose, then arms down, then elbows bent
    t = np.zeros((17, 3))
    t[[1, 2, 3], 0], t[[4, 5, 6], 0] = -100, 100
    t[[1, 4], 1], t[[2, 5], 1], t[[3, 6], 1] = 900, 480, 80
    t[0, 1], t[7, 1], t[8, 1], t[9, 1], t[10, 1] = 900, 1150, 1400, 1520, 1650
    t[[11, 12, 13], 1] = t[[14, 15, 16], 1] = 1400
    t[[11, 12, 13], 0] = [180, 460, 710]
    t[[14, 15, 16], 0] = [-180, -460, -710]
    assert is_tpose(t)
    down = t.copy()
    down[[12, 13], 0], down[[12, 13], 1] = 180, [1120, 870]
    assert not is_tpose(down)
    bent = t.copy()
    bent[13] = [460, 1400, 250]  # forearm pointing forward
    assert not is_tpose(bent)
    crouch = t.copy()
    crouch[[2, 5], 2] = 250  # knees forward
    assert not is_tpose(crouch)
