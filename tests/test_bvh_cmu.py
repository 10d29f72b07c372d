"""BVH import end to end on the real CMU motion capture in ../shared/data/cmu-mocap (or
$HUMMUSS_CMU_MOCAP): every file imports, bones stay rigid, left is left, the source renders.
Skipped when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hummuss.data.bvh import ANKLE_HEIGHT_MM, BVHSource, load_bvh_motion
from hummuss.data.bvh_parse import forward_kinematics, read_bvh
from hummuss.data.camera import VirtualCamera
from hummuss.data.skeleton import H36M_BONES, H36M_JOINTS, NUM_JOINTS, bone_lengths

J = {name: i for i, name in enumerate(H36M_JOINTS)}


def _cmu_dir() -> Path:
    env = os.environ.get("HUMMUSS_CMU_MOCAP")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu-mocap"


CMU = _cmu_dir()
needs_cmu = pytest.mark.skipif(not CMU.is_dir(), reason=f"CMU BVH folder not found: {CMU}")
WALKS = {"02_01", "02_02", "02_03", "05_01", "06_01", "07_01", "07_04", "07_12", "08_01", "08_05",
         "08_07", "09_01", "09_03", "09_05", "09_08", "09_11", "12_01", "12_02", "12_03"}


def _facing(bvh, pos):
    """Unit horizontal facing (T, 3) from both feet (ankle -> toe end), independent of L/R,
    and whether the feet are near level (T,) bool (not pointing down, as in a jump)."""
    toes = [n for n in bvh.names if n.endswith("_End") and ("Foot" in n or "Toe" in n)]
    ankles = [n.replace("ToeBase_End", "Foot").replace("Foot_End", "Foot") for n in toes]
    f = sum(pos[:, bvh.index(t)] - pos[:, bvh.index(a)] for t, a in zip(toes, ankles, strict=True))
    level = np.linalg.norm(f[:, [0, 2]], axis=-1) > 0.7 * np.linalg.norm(f, axis=-1)
    f[:, 1] = 0
    return f / np.linalg.norm(f, axis=-1, keepdims=True), level


@pytest.fixture(scope="module")
def cmu():
    src = BVHSource(str(CMU))
    return src, [(rec, src.motion(rec)) for rec in src.recordings]


def _flexible(style):
    """H36M bones spanning two moving BVH links: the midpoint spine; CMU's Neck1 -> arm."""
    spine = {H36M_BONES.index((0, 7)), H36M_BONES.index((7, 8))}
    clavicle = {H36M_BONES.index((8, 11)), H36M_BONES.index((8, 14))}
    return spine | (clavicle if style == "cgspeed-motionbuilder" else set())


@needs_cmu
def test_cmu_every_file_imports(cmu):
    src, motions = cmu
    assert len(motions) == 31
    assert {r.group for r in src.recordings if r.split == "test"} == {"03", "07", "13"}
    report = []
    for rec, motion in motions:
        assert motion.first_frame == "T-pose", rec.key  # cgspeed's added frame 0, detected
        joints = motion.at(motion.sample_times(50.0))  # (T, 17, 3) mm at 50 Hz, no rigid-bone repair
        assert joints.shape[1:] == (NUM_JOINTS, 3) and np.all(np.isfinite(joints))
        bones = bone_lengths(joints)
        one_link = [b for b in range(len(H36M_BONES)) if b not in _flexible(motion.style)]
        spread = np.ptp(bones[:, one_link], axis=0)  # mm
        assert spread.max() < 0.1, (rec.key, spread)
        rel_std = bones.std(axis=0) / bones.mean(axis=0)
        assert rel_std.max() < 0.05, (rec.key, rel_std)  # two-link bones move with the capture
        # standing height: head top above the floor in upright frames
        upright = joints[:, J["head"], 1] - np.minimum(joints[:, 3, 1], joints[:, 6, 1])
        height = np.percentile(upright, 90) + ANKLE_HEIGHT_MM
        assert 1400 < height < 2000, (rec.key, height)
        report.append(f"{rec.path.stem} {motion.style} {len(joints)} frames height {height:.0f} mm "
                      f"one-link bone spread {spread.max():.1e} mm, two-link rel std max {100 * rel_std.max():.2f}%")
    print("\n" + "\n".join(report))


@needs_cmu
def test_cmu_forward_kinematics_is_rigid(cmu):
    """Every H36M bone inside one BVH link is exactly constant at the recorded frames; the
    optional bone-length repair (`rigid=True`) moves root-relative joints by a few cm at most."""
    _, motions = cmu
    worst = {}
    for rec, motion in motions:
        bones = bone_lengths(motion.joints_mm)
        rel_std = bones.std(axis=0) / bones.mean(axis=0)
        rigid = [b for b in range(len(H36M_BONES)) if b not in _flexible(motion.style)]
        assert rel_std[rigid].max() < 1e-9, (rec.key, rel_std)
        worst[rec.path.stem] = 100 * rel_std.max()
        fixed = load_bvh_motion(rec.path, rigid=True).joints_mm
        shift = np.linalg.norm(fixed - fixed[:, :1] - (motion.joints_mm - motion.joints_mm[:, :1]), axis=-1)
        assert shift.max() < 70.0, (rec.key, shift.max())
    print("\nraw two-link bone rel std max %: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(worst.items())))


@needs_cmu
def test_cmu_src_fps_gives_the_true_duration(tmp_path):
    """A CMU file whose header is rewritten to say 30 fps plays 4x slow unless src_fps=120."""
    original = next(CMU.rglob("13_42.bvh"))
    text = original.read_text()
    slow = tmp_path / "13" / "13_42.bvh"
    slow.parent.mkdir()
    slow.write_text(text.replace("Frame Time:\t0.00833333", "Frame Time:\t0.0333333"))
    assert "Frame Time:\t0.0333333" in slow.read_text()
    frames = read_bvh(original).num_frames - 1  # 400 after the T-pose
    header = BVHSource(str(tmp_path))
    fixed = BVHSource(f"{tmp_path}?src_fps=120")
    assert header.motion(header.recordings[0]).duration == pytest.approx((frames - 1) / 30, rel=1e-5)
    true = fixed.motion(fixed.recordings[0])
    assert true.duration == pytest.approx((frames - 1) / 120)
    assert len(fixed.sequences("train")[0]) == int((frames - 1) / 120 * 50 + 1e-6) + 1
    ref = BVHSource(str(original)).motion(BVHSource(str(original)).recordings[0])
    times = ref.sample_times(50.0)
    np.testing.assert_allclose(true.at(times), ref.at(times * 120 / ref.fps), atol=1e-6)


@needs_cmu
def test_cmu_left_is_left(cmu):
    """Left hip and shoulder are on the subject's left of the facing the feet point to,
    and walkers move the way they face (rotations composed the right way round)."""
    _, motions = cmu
    for rec, motion in motions:
        bvh = read_bvh(rec.path)
        facing, level = _facing(bvh, forward_kinematics(bvh, slice(1, None)))  # (T, 3), (T,)
        left = np.cross([0.0, 1.0, 0.0], facing)  # y up: left = up x forward
        j = motion.joints_mm
        for l_joint, r_joint in (("l_hip", "r_hip"), ("l_shoulder", "r_shoulder")):
            side = np.einsum("tc,tc->t", j[:, J[l_joint]] - j[:, J[r_joint]], left)
            assert np.mean(side[level] > 0) > 0.97, (rec.key, l_joint, np.mean(side[level] > 0))
        if rec.path.stem in WALKS:
            velocity = np.gradient(j[:, 0], axis=0)[:, [0, 2]]
            heading = velocity / (np.linalg.norm(velocity, axis=-1, keepdims=True) + 1e-9)
            agree = np.einsum("tc,tc->t", heading, facing[:, [0, 2]])
            assert np.median(agree) > 0.8, (rec.key, np.median(agree))


@needs_cmu
def test_cmu_left_shoulder_on_image_right_from_the_front(cmu):
    _, motions = cmu
    for rec, motion in motions[::5]:
        bvh = read_bvh(rec.path)
        facing, level = _facing(bvh, forward_kinematics(bvh, slice(1, None)))
        t = int(np.flatnonzero(level)[len(np.flatnonzero(level)) // 2])
        root = motion.joints_mm[t, 0]
        eye = root + 4000 * facing[t] + [0, 600, 0]  # 4 m in front of the subject
        cam = VirtualCamera.looking_at(eye, root)
        pixels, _ = cam.project(motion.joints_mm[t])
        assert pixels[J["l_shoulder"], 0] > pixels[J["r_shoulder"], 0], rec.key
        assert pixels[J["l_hip"], 0] > pixels[J["r_hip"], 0], rec.key


@needs_cmu
def test_cmu_source_renders(cmu):
    src, _ = cmu
    test = src.sequences("test")
    assert len(test) == 2 * 12
    labels = np.concatenate([s.labels for s in test])
    assert np.abs(labels[..., :2]).max() < 1.0  # cameras keep every joint in the image
    mm = np.concatenate([(s.labels - s.labels[:, :1]) * s.extras["mm_per_unit"][:, None, None]
                         for s in test])
    thigh = np.linalg.norm(mm[:, J["r_knee"]] - mm[:, J["r_hip"]], axis=-1)
    assert np.median(thigh) == pytest.approx(368, rel=0.02)  # the Daz figure's thigh, 0.368 m
