"""BVH import: parser, forward kinematics, H36M mapping, units, the `bvh:DIR` source.

Small BVH files written here check numbers and errors exactly; tests/test_bvh_cmu.py
checks the import end to end on the real CMU files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hummuss.data import open_source
from hummuss.data.augment import subsample
from hummuss.data.bvh import (
    ANKLE_HEIGHT_MM,
    BVHSource,
    interpolate_frames,
    load_bvh_motion,
    pick_test_groups,
    recording_group,
)
from hummuss.data.bvh_mapping import CMU_UNIT_MM, build_mapping, infer_unit_mm
from hummuss.data.bvh_parse import forward_kinematics, parse_bvh_text, read_bvh
from hummuss.data.skeleton import H36M_JOINTS, NUM_JOINTS, bone_lengths

J = {name: i for i, name in enumerate(H36M_JOINTS)}

# ---------------------------------------------------------------------------------------
# small files written by the tests

CHAIN = """HIERARCHY
ROOT root
{
\tOFFSET 0 0 0
\tCHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
\tJOINT a
\t{
\t\tOFFSET 0 10 0
\t\tCHANNELS 3 Zrotation Xrotation Yrotation
\t\tEnd Site
\t\t{
\t\t\tOFFSET 0 5 0
\t\t}
\t}
\tJOINT b
\t{
\t\tOFFSET 2 0 0
\t\tCHANNELS 4 Xposition Zrotation Yrotation Xrotation
\t}
}
MOTION
Frames:\t3
Frame Time: .0083333
1 2 3 90 0 0 0 90 0 0 0 0 0
0 0 0 0 0 0 90 90 0 1 0 0 0
0 0 0 0 90 0 0 0 0 0 0 0 0
"""


def test_parse_hierarchy_and_header():
    bvh = parse_bvh_text(CHAIN)
    assert bvh.names == ["root", "a", "a_End", "b"]
    assert [j.parent for j in bvh.joints] == [-1, 0, 1, 0]
    assert bvh.joints[1].channels == ("zrotation", "xrotation", "yrotation")
    assert [j.first_channel for j in bvh.joints] == [0, 6, 9, 9]
    assert bvh.joints[2].end_site and bvh.joints[2].channels == ()
    assert bvh.motion.shape == (3, 13)
    assert bvh.frame_time == pytest.approx(0.0083333)  # no leading zero, tab after "Frames:"
    assert bvh.fps == pytest.approx(120.0005, abs=1e-3)


def test_forward_kinematics_hand_computed():
    pos = forward_kinematics(parse_bvh_text(CHAIN))  # (3, 4, 3): root, a, a_End, b
    # frame 0: root at (1, 2, 3) turned Rz(90) (+y -> -x); a turned Rz(0) Rx(90) (+y -> +z)
    np.testing.assert_allclose(pos[0], [[1, 2, 3], [-9, 2, 3], [-9, 2, 8], [1, 4, 3]], atol=1e-12)
    # frame 1: a has Z = 90 then X = 90: R = Rz Rx maps +y to +z (Rx Rz would give -x);
    # b's Xposition channel adds 1 to its OFFSET x
    np.testing.assert_allclose(pos[1], [[0, 0, 0], [0, 10, 0], [0, 10, 5], [3, 0, 0]], atol=1e-12)
    # frame 2: root Ry(90) maps +x to -z
    np.testing.assert_allclose(pos[2, 3], [0, 0, -2], atol=1e-12)
    # one frame on its own gives the same as the batch
    np.testing.assert_allclose(forward_kinematics(parse_bvh_text(CHAIN), 1)[0], pos[1])


@pytest.mark.parametrize("edit, line, words", [
    (("CHANNELS 3 Zrotation Xrotation Yrotation", "CHANNELS 3 Zrotation Xrotation Wrotation"), 9,
     ["unknown channel 'Wrotation'", "joint 'a'"]),
    (("OFFSET 0 10 0", "OFFSET 0 ten 0"), 8, ["expected a number", "'ten'"]),
    (("\t\tEnd Site\n", "\t\tEnd Sight\n"), 10, ["expected 'Site'", "'Sight'"]),
    (("1 2 3 90 0 0 0 90 0 0 0 0 0", "1 2 3 90 0 0 0 90 0 0 0 0"), 24,
     ["frame 0 has 12 values; expected 13"]),
    (("0 0 0 0 0 0 90 90 0 1 0 0 0", "0 0 0 0 0 0 90 90 0 x 0 0 0"), 25, ["'x' is not a number"]),
    (("Frames:\t3", "Frames:\t4"), 26, ["ends after 3 motion rows", "says 4"]),
    (("Frames:\t3", "Frames:\t2"), 26, ["more motion rows than 'Frames: 2'"]),
    (("Frame Time: .0083333", "Frame Time: 0"), 23, ["'Frame Time:' must be > 0"]),
    (("Frame Time: .0083333", "FrameTime: .0083333"), 23, ["expected 'frame time: <value>'"]),
    (("MOTION\n", "MOTON\n"), 26, ["no MOTION line"]),
])
def test_malformed_files_name_file_and_line(tmp_path, edit, line, words):
    path = tmp_path / "bad.bvh"
    path.write_text(CHAIN.replace(*edit))
    with pytest.raises(ValueError) as err:
        read_bvh(path)
    message = str(err.value)
    assert f"{path}, line {line}:" in message
    for word in words:
        assert word in message


def test_missing_file_and_non_finite_values(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bvh"):
        read_bvh(tmp_path / "nope.bvh")
    with pytest.raises(ValueError, match="frame 2 has a non-finite"):
        parse_bvh_text(CHAIN.replace("0 0 0 0 90 0 0 0 0 0 0 0 0", "0 0 0 0 90 0 0 0 0 nan 0 0 0"))


# A small humanoid with cgspeed-MotionBuilder names; offsets in CMU units (56.444 mm).
_U = CMU_UNIT_MM


def _joint(name, offset, children="", channels="CHANNELS 3 Zrotation Yrotation Xrotation", end=None):
    end_site = f"End Site\n{{\nOFFSET {' '.join(map(str, end))}\n}}\n" if end else ""
    return f"JOINT {name}\n{{\nOFFSET {' '.join(map(str, offset))}\n{channels}\n{children}{end_site}}}\n"


def _leg(side, sx):
    foot = _joint(f"{side}Foot", (0, -430 / _U, 0), end=(0, -60 / _U, 120 / _U))
    return _joint(f"{side}UpLeg", (sx * 90 / _U, -60 / _U, 0),
                  _joint(f"{side}Leg", (0, -420 / _U, 0), foot))


def _arm(side, sx):
    hand = _joint(f"{side}Hand", (sx * 250 / _U, 0, 0), end=(sx * 60 / _U, 0, 0))
    return _joint(f"{side}Arm", (sx * 180 / _U, 40 / _U, 0),
                  _joint(f"{side}ForeArm", (sx * 280 / _U, 0, 0), hand))


TOY_NAMES = ["Hips", "LeftUpLeg", "LeftLeg", "LeftFoot", "RightUpLeg", "RightLeg", "RightFoot",
             "Spine", "Spine1", "Neck1", "Head", "LeftArm", "LeftForeArm", "LeftHand",
             "RightArm", "RightForeArm", "RightHand"]  # channel-bearing joints, in file order
TOY_HIERARCHY = (
    "HIERARCHY\nROOT Hips\n{\nOFFSET 0 0 0\n"
    "CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation\n"
    + _leg("Left", 1) + _leg("Right", -1)
    + _joint("Spine", (0, 120 / _U, 0), _joint("Spine1", (0, 250 / _U, 0),
             _joint("Neck1", (0, 150 / _U, 0), _joint("Head", (0, 110 / _U, 0), end=(0, 110 / _U, 0)))
             + _arm("Left", 1) + _arm("Right", -1)))
    + "}\n")
N_CHANNELS = 6 + 3 * (len(TOY_NAMES) - 1)


def toy_motion(n_frames: int, speed_mm_s: float = 1000.0, fps: float = 120.0) -> np.ndarray:
    """Walk-like motion along +z (facing +z): root moving at `speed`, hips swinging.

    Frame 0 is a T-pose-like frame far from the rest (it must be dropped).
    """
    t = np.arange(n_frames) / fps
    m = np.zeros((n_frames, N_CHANNELS))
    m[:, 1] = 930 / _U  # root height
    m[:, 2] = speed_mm_s * t / _U
    col = {name: 6 + 3 * (i - 1) for i, name in enumerate(TOY_NAMES) if i > 0}
    swing = 25 * np.sin(2 * np.pi * 1.5 * t)
    m[:, col["LeftUpLeg"] + 2] = swing  # Xrotation
    m[:, col["RightUpLeg"] + 2] = -swing
    m[:, col["LeftLeg"] + 2] = 20 + 20 * np.sin(2 * np.pi * 1.5 * t)
    m[:, col["LeftArm"]] = -70 + 5 * np.sin(2 * np.pi * 1.5 * t)  # Zrotation: arms down
    m[:, col["RightArm"]] = 70
    m[0] = 0.0
    m[0, 0] = 3000 / _U  # the T-pose frame stands elsewhere
    return m


def write_toy(path: Path, n_frames: int = 61, frame_time: float = 1 / 120, **kwargs) -> Path:
    rows = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in toy_motion(n_frames, **kwargs))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{TOY_HIERARCHY}MOTION\nFrames: {n_frames}\nFrame Time: {frame_time:.8f}\n{rows}\n")
    return path


def test_toy_import_units_tpose_floor_and_mapping(tmp_path):
    path = write_toy(tmp_path / "01_01.bvh")
    motion = load_bvh_motion(path)
    assert motion.style == "cgspeed-motionbuilder" and motion.unit_mm == pytest.approx(56.444, abs=1e-3)
    assert motion.joints_mm.shape == (60, NUM_JOINTS, 3)  # T-pose frame 0 dropped
    # the first imported frame is file frame 1, in mm (before the floor/centre shift)
    bvh = read_bvh(path)
    raw = forward_kinematics(bvh, 1)[0] * CMU_UNIT_MM
    rel = motion.joints_mm[0] - motion.joints_mm[0, 0]
    hips = (raw[bvh.index("LeftUpLeg")] + raw[bvh.index("RightUpLeg")]) / 2
    np.testing.assert_allclose(rel[J["r_wrist"]], raw[bvh.index("RightHand")] - hips, atol=1e-9)
    np.testing.assert_allclose(rel[J["head"]], raw[bvh.index("Head_End")] - hips, atol=1e-9)
    np.testing.assert_allclose(rel[J["thorax"]], raw[bvh.index("Neck1")] - hips, atol=1e-9)
    np.testing.assert_allclose(bone_lengths(motion.joints_mm)[0, [1, 2]], [420, 430], atol=1e-9)
    # floor: the planted right ankle (never lifted) sits at ANKLE_HEIGHT_MM; root x, z centred
    assert np.percentile(np.minimum(motion.joints_mm[:, 3, 1], motion.joints_mm[:, 6, 1]), 5) \
        == pytest.approx(ANKLE_HEIGHT_MM)
    np.testing.assert_allclose(motion.joints_mm[:, 0, [0, 2]].mean(0), 0, atol=1e-9)
    # units given explicitly win over the style's
    assert load_bvh_motion(path, units="cm").unit_mm == 10.0


def test_resampling_is_linear_in_time(tmp_path):
    motion = load_bvh_motion(write_toy(tmp_path / "walk.bvh", n_frames=121))  # 1 s after frame 0
    times = motion.sample_times(50.0)
    assert len(times) == 50 and times[-1] == pytest.approx(0.98)  # duration (119 / 120) s
    z = motion.at(times)[:, 0, 2]  # root z moves at 1000 mm/s
    np.testing.assert_allclose(np.diff(z), 1000.0 / 50, atol=1e-4)  # 6-decimal file
    frames = np.arange(5.0)[:, None] * [1.0, -2.0]  # (5, 2)
    np.testing.assert_allclose(interpolate_frames(frames, 2.0, [0.25, 1.0, 9.0]),
                               [[0.5, -1.0], [2.0, -4.0], [4.0, -8.0]])


@pytest.mark.parametrize("names, style", [
    (["Hips", "LeftUpLeg", "LeftLeg", "LeftFoot", "RightUpLeg", "RightLeg", "RightFoot", "Spine1",
      "Neck", "Neck1", "Head", "Head_End", "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand",
      "RightShoulder", "RightArm", "RightForeArm", "RightHand"], "cgspeed-motionbuilder"),
    (["hip", "abdomen", "chest", "neck", "head", "lCollar", "lShldr", "lForeArm", "lHand", "rCollar",
      "rShldr", "rForeArm", "rHand", "lButtock", "lThigh", "lShin", "lFoot", "rButtock", "rThigh",
      "rShin", "rFoot"], "daz"),
    (["mixamorig:Hips", "mixamorig:LeftUpLeg", "mixamorig:LeftLeg", "mixamorig:LeftFoot",
      "mixamorig:RightUpLeg", "mixamorig:RightLeg", "mixamorig:RightFoot", "mixamorig:Neck",
      "mixamorig:Head", "mixamorig:HeadTop_End", "mixamorig:LeftArm", "mixamorig:LeftForeArm",
      "mixamorig:LeftHand", "mixamorig:RightArm", "mixamorig:RightForeArm", "mixamorig:RightHand"],
     "mixamo"),
    (["Hips", "LeftHip", "LeftKnee", "LeftAnkle", "RightHip", "RightKnee", "RightAnkle", "Chest",
      "Neck", "Head", "LeftCollar", "LeftShoulder", "LeftElbow", "LeftWrist", "RightCollar",
      "RightShoulder", "RightElbow", "RightWrist"], "3dsmax"),
    (["root", "lfemur", "ltibia", "lfoot", "rfemur", "rtibia", "rfoot", "thorax", "upperneck",
      "head", "lhumerus", "lradius", "lwrist", "rhumerus", "rradius", "rwrist"], "cmu-asf"),
])
def test_naming_styles_detected(names, style):
    mapping = build_mapping(names)
    assert mapping.style == style
    np.testing.assert_allclose(mapping.weights.sum(axis=1), 1.0)
    assert mapping.weights.shape == (NUM_JOINTS, len(names))


def test_motionbuilder_traps_and_daz_head():
    mb = build_mapping(["Hips", "LeftUpLeg", "LeftLeg", "LeftFoot", "RightUpLeg", "RightLeg",
                        "RightFoot", "Neck", "Neck1", "Head", "Head_End", "LeftShoulder", "LeftArm",
                        "LeftForeArm", "LeftHand", "RightShoulder", "RightArm", "RightForeArm",
                        "RightHand"]).combos
    assert mb["l_shoulder"] == {"LeftArm": 1.0} and mb["thorax"] == {"Neck1": 1.0}  # not the clavicle
    assert mb["pelvis"] == {"LeftUpLeg": 0.5, "RightUpLeg": 0.5}
    assert mb["spine"] == {"LeftUpLeg": 0.25, "RightUpLeg": 0.25, "Neck1": 0.5}
    daz = build_mapping(["hip", "neck", "head", "lShldr", "lForeArm", "lHand", "rShldr", "rForeArm",
                         "rHand", "lThigh", "lShin", "lFoot", "rThigh", "rShin", "rFoot"]).combos
    assert daz["head"] == pytest.approx({"head": 1.9, "neck": -0.9})  # head + 0.9 (head - neck)


def test_unmappable_skeleton_names_missing_joints_and_found_names(tmp_path):
    path = tmp_path / "odd.bvh"
    path.write_text(CHAIN)
    with pytest.raises(ValueError) as err:
        load_bvh_motion(path)
    message = str(err.value)
    assert str(path) in message
    assert "missing pelvis, r_hip, r_knee, r_ankle" in message
    assert "Joints found: root, a, a_End, b" in message


def test_user_mapping(tmp_path):
    ref_path = write_toy(tmp_path / "ref.bvh", n_frames=31)
    path = tmp_path / "custom" / "clip.bvh"
    path.parent.mkdir()
    path.write_text(ref_path.read_text().replace("LeftUpLeg", "thigh_L")
                    .replace("RightUpLeg", "thigh_R").replace("Neck1", "NeckBase"))
    with pytest.raises(ValueError, match="missing pelvis, r_hip, l_hip, spine, thorax .closest naming style "
                       "'cgspeed-motionbuilder' lacks r_hip, l_hip, thorax"):
        load_bvh_motion(path)
    user = {"RHip": "thigh_R", "l_hip": "thigh_L", "Thorax": "NeckBase"}  # reference or our names
    motion = load_bvh_motion(path, mapping=user)
    assert motion.style == "cgspeed-motionbuilder+user"
    reference = load_bvh_motion(ref_path)
    np.testing.assert_allclose(motion.joints_mm, reference.joints_mm, atol=1e-9)
    # a JSON file in the folder is picked up by the source
    (path.parent / "bvh-mapping.json").write_text(json.dumps(user))
    seqs = BVHSource(str(path.parent)).sequences("train")
    assert len(seqs) == 2 and seqs[0].meta["style"] == "cgspeed-motionbuilder+user"
    with pytest.raises(ValueError, match="unknown H36M joint 'elbow'"):
        load_bvh_motion(path, mapping={**user, "elbow": "LeftForeArm"})
    with pytest.raises(ValueError, match="'LeftElbow' that the file does not have; joints found: Hips"):
        load_bvh_motion(path, mapping={**user, "l_elbow": "LeftElbow"})
    (path.parent / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        BVHSource(str(path.parent), mapping=path.parent / "broken.json")


def test_unit_inference():
    rest = np.zeros((NUM_JOINTS, 3))
    for _hip, knee, ankle in ((1, 2, 3), (4, 5, 6)):
        rest[knee, 1], rest[ankle, 1] = -0.42, -0.85  # a 0.85 m leg
    assert infer_unit_mm(rest)[0] == "m"
    assert infer_unit_mm(rest * 100)[0] == "cm"
    assert infer_unit_mm(rest * 1000 / CMU_UNIT_MM)[0] == "cmu"
    assert infer_unit_mm(rest / 0.0254)[0] == "inch"


# ---------------------------------------------------------------------------------------
# the source


def test_source_splits_rates_and_rendering(tmp_path):
    for name in ("01_01", "01_02", "02_01", "05_03", "07_01"):
        write_toy(tmp_path / "mocap" / name[:2] / f"{name}.bvh", n_frames=61)
    src = open_source(f"bvh:{tmp_path / 'mocap'}")
    assert isinstance(src, BVHSource) and src.native_fps == 50.0
    split = {r.key: r.split for r in src.recordings}
    # 4 subjects: ceil(0.2 * 4) = 1 test subject, the first by CRC-32 (07, 02, 05, 01)
    assert split == {"01/01_01": "train", "01/01_02": "train", "02/02_01": "train",
                     "05/05_03": "train", "07/07_01": "test"}
    train = src.sequences("train")
    assert len(train) == 8 and {s.meta["camera"] for s in train} == {"cam0", "cam1"}
    seq = train[0]
    assert seq.meta["subject"] == "01" and seq.meta["source"] == "01/01_01/cam0"
    assert seq.inputs.shape == (25, NUM_JOINTS, 3) and seq.fps == 50.0  # 0.5 s at 50 Hz
    assert seq.extras["mm_per_unit"].shape == (25,)
    # every ground-truth joint stays inside the 1000 x 1000 image: |x_n| < 1
    assert np.abs(np.concatenate([s.labels[..., :2] for s in train])).max() < 1.0
    # rate 0.5 renders exactly the frames that subsampling keeps; rate 2 passes through them
    half = src.sequences("train", rate=0.5)
    double = src.sequences("train", rate=2.0)
    for s1, s05, s2 in zip(train, half, double, strict=True):
        kept = subsample(s1, 2)
        np.testing.assert_allclose(s05.inputs, kept.inputs, atol=1e-6)
        np.testing.assert_allclose(s05.labels, kept.labels, atol=1e-6)
        np.testing.assert_allclose(s2.labels[::2], s1.labels, atol=1e-6)
        assert s05.fps == 25.0 and s2.fps == 100.0
    # same seed -> same data; another seed -> other cameras
    again = BVHSource(str(tmp_path / "mocap")).sequences("train")
    np.testing.assert_array_equal(again[3].inputs, train[3].inputs)
    other = BVHSource(str(tmp_path / "mocap"), seed=1).sequences("train")
    assert not np.allclose(other[3].labels, train[3].labels)
    clips = src.clips("test", n_frames=16, stride=8)
    assert clips.inputs.shape == (2 * 2, 16, NUM_JOINTS, 3)
    assert set(clips.meta["subject"]) == {"07"}
    # options in the path
    assert len(BVHSource(f"{tmp_path / 'mocap'}?cameras=3&test=1,5").sequences("test")) == 9


def test_split_rule():
    assert recording_group(Path("x/13_42.bvh")) == "13" and recording_group(Path("walk.bvh")) == "walk"
    subjects = ["01", "02", "03", "05", "06", "07", "08", "09", "10", "12", "13"]
    assert pick_test_groups(subjects) == {"03", "07", "13"}  # documented for the CMU folder
    assert pick_test_groups(["01", "01"]) == set()


def test_source_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"no .bvh files under {tmp_path / 'empty'}"):
        BVHSource(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="path not found"):
        BVHSource(str(tmp_path / "missing"))
    write_toy(tmp_path / "one" / "01_01.bvh")
    with pytest.raises(ValueError, match="unknown bvh option.s. colour in .*; known: mapping, units"):
        BVHSource(f"{tmp_path / 'one'}?colour=red")
    with pytest.raises(ValueError, match="test subject.s. 9 not found"):
        BVHSource(str(tmp_path / "one"), test="9")
    with pytest.raises(ValueError, match="unknown BVH units 'feet'"):
        BVHSource(str(tmp_path / "one"), units="feet")
    with pytest.raises(ValueError, match="unsupported rate 3"):
        BVHSource(str(tmp_path / "one")).sequences("train", rate=3)
    (tmp_path / "one" / "02_01.bvh").write_text(CHAIN)  # a second, unmappable file
    with pytest.raises(ValueError, match="02_01.bvh: cannot map the BVH skeleton"):
        BVHSource(str(tmp_path / "one"), test="1").sequences("train")
