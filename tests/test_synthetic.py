"""The generated data set: exact in continuous time, seeded, plausible, split by subject."""

import numpy as np
import pytest

from hummuss.data import open_source
from hummuss.data.camera import H36M_FOCAL_PX
from hummuss.data.detections import simulate_detections
from hummuss.data.motion import ACTIONS
from hummuss.data.render import normalise_pixels
from hummuss.data.skeleton import ROOT, bone_lengths
from hummuss.data.synthetic import SyntheticConfig, SyntheticSource


@pytest.fixture(scope="module")
def smoke():
    return SyntheticSource(scale="smoke")


def test_bone_lengths_constant_and_human(smoke):
    for subject in smoke.subject_names:
        for action in ACTIONS:
            motion = smoke.motion(subject, action)
            joints = motion(np.arange(0, 6, 1 / 60))
            bl = bone_lengths(joints)
            assert (bl.std(0) / bl.mean(0)).max() < 1e-6
            assert 350 < bl[:, 1].mean() < 550  # thigh, mm
            assert 1450 < smoke.body(subject).height_mm < 2000
            assert joints[..., 1].min() > 0  # nothing under the floor


def test_60fps_every_second_frame_equals_30fps(smoke):
    full, half = smoke.sequences("train", 1.0), smoke.sequences("train", 0.5)
    at30 = SyntheticSource(scale="smoke", fps=30).sequences("train")
    for a, b, c in zip(full, half, at30, strict=True):
        assert len(b) == (len(a) + 1) // 2 and b.fps == 30.0
        for x, y in ((a.inputs[::2], b.inputs), (a.labels[::2], b.labels), (b.inputs, c.inputs),
                     (a.extras["mm_per_unit"][::2], b.extras["mm_per_unit"]), (b.labels, c.labels)):
            np.testing.assert_array_equal(x, y)  # bit-identical
    up = smoke.sequences("train", 2.0)[0]
    assert up.fps == 120.0
    np.testing.assert_array_equal(up.inputs[::2], full[0].inputs)


def test_irregular_timestamps_are_exact(smoke):
    times = np.arange(0, 5, 1 / 60)
    keep = np.sort(np.random.default_rng(0).choice(len(times), 100, replace=False))
    full = smoke.render("S1", "walking", 0, times)
    part = smoke.render("S1", "walking", 0, times[keep])
    np.testing.assert_array_equal(part.inputs, full.inputs[keep])
    np.testing.assert_array_equal(part.labels, full.labels[keep])


def test_same_seed_same_data_other_seed_other_data():
    a = SyntheticSource(scale="smoke", seed=5).sequences("test")
    b = SyntheticSource(scale="smoke", seed=5).sequences("test")
    c = SyntheticSource(scale="smoke", seed=6).sequences("test")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.inputs, y.inputs)
        np.testing.assert_array_equal(x.labels, y.labels)
    assert not np.allclose(a[0].labels, c[0].labels)


def test_split_by_subject_and_sizes(smoke):
    train = {s.meta["subject"] for s in smoke.sequences("train")}
    test = {s.meta["subject"] for s in smoke.sequences("test")}
    assert train == {"S1", "S2"} and test == {"S3"}
    assert len(smoke.sequences("train")) == 2 * 3 * 1
    cpu = SyntheticConfig.preset("cpu")
    assert (cpu.subjects, len(cpu.actions), cpu.cameras, cpu.test_subjects) == (7, 8, 2, 2)
    assert set(cpu.actions) >= {"walking", "running", "jumping", "squatting", "waving", "turning",
                                "sitting", "reaching"}
    assert all(len(s) == 300 for s in smoke.sequences("train"))  # 5 s at 60 fps
    clips = smoke.clips("train", n_frames=81, stride=27)  # (300 - 81) // 27 + 1 = 9 per sequence
    assert clips.inputs.shape == (6 * 9, 81, 17, 3) and clips.inputs.dtype == np.float32
    assert set(clips.meta.columns) >= {"subject", "action", "camera", "source", "start"}
    assert clips.extras["mm_per_unit"].shape == (54, 81)


def test_normalisation_follows_the_formulas(smoke):
    times = np.arange(0, 2, 1 / 60)
    seq = smoke.render("S2", "squatting", 0, times)
    cam = smoke.cameras[0]
    joints = smoke.motion("S2", "squatting")(times)
    pixels, depth = cam.project(joints)
    np.testing.assert_allclose(seq.labels[..., :2], pixels / 1000 * 2 - 1, atol=1e-6)
    # z: root-relative depth in pixels at the root's scale (fx / depth_root), / w * 2
    z_img = (depth - depth[:, :1]) * cam.fx / depth[:, :1]
    np.testing.assert_allclose(seq.labels[..., 2], z_img / 1000 * 2, atol=1e-6)
    # mm_per_unit turns root-relative depth back into millimetres
    z_mm = (seq.labels[..., 2] - seq.labels[:, ROOT:ROOT + 1, 2]) * seq.extras["mm_per_unit"][:, None]
    np.testing.assert_allclose(z_mm, depth - depth[:, :1], atol=0.5)
    assert seq.meta["width"] == 1000 and abs(cam.fx - H36M_FOCAL_PX) < 10


def test_motion_is_varied_with_a_moving_root(smoke):
    t = np.arange(0, 5, 1 / 60)
    walk = smoke.motion("S1", "walking")(t)
    path = np.linalg.norm(np.diff(walk[:, ROOT, [0, 2]], axis=0), axis=-1).sum()
    assert path > 3000  # mm in 5 s
    poses = {a: smoke.motion("S1", a)(t) for a in ACTIONS}
    rel = {a: p - p[:, :1] for a, p in poses.items()}
    for a in ACTIONS:
        assert rel[a].std(0).mean() > 10  # the pose moves
        for b in ACTIONS:
            if a < b:
                assert np.abs(rel[a] - rel[b]).mean() > 20, (a, b)


def test_detections_noisy_with_gross_errors_and_falling_confidence():
    pose = np.random.default_rng(1).uniform(300, 700, size=(17, 2))
    pixels = np.broadcast_to(pose, (60 * 120, 17, 2))  # two minutes of a still pose
    noisy, conf = simulate_detections(pixels, 60.0, np.random.default_rng(0))
    err = np.linalg.norm(noisy - pixels, axis=-1)
    assert 2 < np.median(err) < 10
    assert 0.002 < (err > 30).mean() < 0.1  # occasional gross errors
    assert np.corrcoef(err.ravel(), conf.ravel())[0, 1] < -0.5
    assert conf.min() >= 0 and conf.max() <= 1
    # temporally correlated: consecutive errors agree far more than random pairs
    d = noisy - pixels
    lag1 = np.corrcoef(d[1:, :, 0].ravel(), d[:-1, :, 0].ravel())[0, 1]
    assert lag1 > 0.9


def test_normalise_pixels_non_square():
    xy = np.array([[1920.0, 1080.0], [0.0, 0.0]])
    np.testing.assert_allclose(normalise_pixels(xy, 1920, 1080), [[1.0, 1080 / 1920], [-1.0, -1080 / 1920]])


def test_spec_options_and_errors():
    src = open_source("synthetic:scale=smoke,seed=3,seconds=4,cameras=2")
    assert src.config.seed == 3 and src.config.seconds == (4.0, 4.0) and len(src.cameras) == 2
    assert src.spec == "synthetic:scale=smoke,seed=3,seconds=4,cameras=2"
    assert len(src.sequences("test")[0]) == 240
    with pytest.raises(ValueError, match="unknown synthetic option 'colour'"):
        open_source("synthetic:colour=red")
    with pytest.raises(ValueError, match="unknown synthetic scale 'huge'; known: smoke, cpu"):
        open_source("synthetic:scale=huge")
    with pytest.raises(ValueError, match="seed"):
        open_source("synthetic:seed=abc")
    with pytest.raises(ValueError, match="unsupported rate 3"):
        src.sequences("train", rate=3)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        src.clips("val")
