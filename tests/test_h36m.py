"""Human3.6M readers: the LCN/MotionBERT pickle and MotionBERT's per-clip folders."""

import pickle

import numpy as np
import pytest

import hummuss.data.cache as cache
from hummuss.data import open_source
from hummuss.data.h36m import EXCLUDED_TEST, H36MSource, MotionBERTClipsSource

CAMS = ["54138969", "55011271", "58860488", "60457274"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("HUMMUSS_CACHE_DIR", str(d))
    return d


def _part(rng, sources, cams, n_each, test=False):
    n = n_each * len(sources)
    j3d = rng.uniform(0, 1000, size=(n, 17, 3))
    j3d[..., 2] -= j3d[:, :1, 2]  # LCN's image-space depth is root-relative
    part = {
        "joint_2d": rng.uniform(0, 1000, size=(n, 17, 2)),
        "confidence": rng.uniform(0, 1, size=(n, 17, 1)),
        "joint3d_image": j3d,
        "camera_name": np.repeat(cams, n_each),
        "source": np.repeat(sources, n_each),
    }
    if test:
        part["2.5d_factor"] = rng.uniform(3, 6, size=n)
        part["joints_2.5d_image"] = j3d * part["2.5d_factor"][:, None, None]
        part["action"] = np.repeat([f"act{i}" for i in range(len(sources))], n_each)
    return part


def _write(path, data):
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path


@pytest.fixture
def h36m_data():
    rng = np.random.default_rng(0)
    train = _part(rng, ["s_01_act_02_cam_01", "s_01_act_02_cam_02"], CAMS[:2], 300)
    test_ids = ["s_09_act_05_subact_02_ca_01", "s_09_act_02_subact_01_ca_04", "s_11_act_03_subact_01_ca_03"]
    test = _part(rng, test_ids, [CAMS[0], CAMS[3], CAMS[2]], 250, test=True)
    return {"train": train, "test": test}


def test_pickle_normalised_as_documented(tmp_path, h36m_data):
    src = open_source(f"h36m:{_write(tmp_path / 'h36m.pkl', h36m_data)}")
    assert isinstance(src, H36MSource) and src.native_fps == 50.0
    train, test = src.sequences("train"), src.sequences("test")
    assert [len(s) for s in train] == [300, 300] and [len(s) for s in test] == [250, 250, 250]
    raw = h36m_data["test"]
    for k, (seq, w, h) in enumerate(zip(test, (1000, 1000, 1000), (1002, 1002, 1000), strict=True)):
        sl = slice(250 * k, 250 * (k + 1))
        np.testing.assert_allclose(seq.inputs[..., 0], raw["joint_2d"][sl, :, 0] / w * 2 - 1, atol=1e-6)
        np.testing.assert_allclose(seq.inputs[..., 1], raw["joint_2d"][sl, :, 1] / w * 2 - h / w, atol=1e-6)
        np.testing.assert_allclose(seq.inputs[..., 2], raw["confidence"][sl, :, 0], atol=1e-6)
        np.testing.assert_allclose(seq.labels[..., :2], raw["joint3d_image"][sl, :, :2] / w * 2
                                   - np.array([1, h / w]), atol=1e-6)
        np.testing.assert_allclose(seq.labels[..., 2], raw["joint3d_image"][sl, :, 2] / w * 2, atol=1e-6)
        # MotionBERT's scoring: denormalise, times the 2.5D factor, root-relative = joints_2.5d_image
        mm = (seq.labels - seq.labels[:, :1]) * seq.extras["mm_per_unit"][:, None, None]
        gt = raw["joints_2.5d_image"][sl] - raw["joints_2.5d_image"][sl, :1]
        np.testing.assert_allclose(mm, gt, atol=0.05)
    assert [s.meta["subject"] for s in test] == ["S9", "S9", "S11"]
    assert test[0].meta["video"] == "s_09_act_05_subact_02" and test[0].meta["video"] in EXCLUDED_TEST
    assert [bool(s.extras["valid"].any()) for s in test] == [False, True, True]
    assert test[1].meta["action"] == "act1" and test[1].meta["camera"] == CAMS[3]
    assert train[0].meta["mm_per_unit"] == "estimated" and train[0].extras["mm_per_unit"].shape == (300,)

    clips = src.clips("train", n_frames=243, stride=81)  # one window of 243 in 300 frames per sequence
    assert clips.inputs.shape == (2, 243, 17, 3)
    half = src.clips("test", n_frames=81, rate=0.5)  # 125 frames -> 1 clip per sequence
    assert len(half) == 3 and np.all(half.fps == 25.0)
    np.testing.assert_array_equal(half.inputs[0], test[0].inputs[::2][:81])


def test_second_read_uses_cache_and_never_unpickles(tmp_path, h36m_data, cache_dir, monkeypatch):
    path = _write(tmp_path / "h36m.pkl", h36m_data)
    first = H36MSource(path).sequences("test")
    entries = list(cache_dir.glob("h36m-*.npz"))
    assert len(entries) == 1 and not list(cache_dir.glob("*.tmp"))

    def refuse(*args, **kwargs):
        raise AssertionError("unpickled although a cache entry exists")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(cache, "safe_unpickle", refuse)
    again = H36MSource(path).sequences("test")
    np.testing.assert_array_equal(first[2].labels, again[2].labels)
    with np.load(entries[0], allow_pickle=False) as data:  # the cache itself needs no pickle
        assert "test.joint_2d" in data.files


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["test"].pop("2.5d_factor"), r"missing key test/2\.5d_factor"),
    (lambda d: d["train"].__setitem__("joint_2d", np.zeros((600, 17, 3))), r"train/joint_2d.*\(N, 17, 2\)"),
    (lambda d: d["test"]["joint3d_image"].__setitem__((5, 3, 0), np.nan), r"test/joint3d_image.*non-finite"),
    (lambda d: d.pop("test"), r"missing key 'test'"),
    (lambda d: d["train"].__setitem__("camera_name", np.repeat(["123"], 600)), r"unknown cameras"),
])
def test_bad_pickle_names_file_and_key_and_caches_nothing(tmp_path, h36m_data, cache_dir, edit, message):
    edit(h36m_data)
    path = _write(tmp_path / "broken.pkl", h36m_data)
    with pytest.raises(ValueError, match=message) as err:
        H36MSource(path).sequences("train")
    assert "broken.pkl" in str(err.value)
    assert not cache_dir.exists() or not list(cache_dir.iterdir())  # nothing half-written


def test_missing_path_and_refused_unpickle(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pkl"):
        open_source(f"h36m:{tmp_path / 'nothere.pkl'}")
    outside = _write(tmp_path / "other.pkl", {"x": 1})
    (tmp_path / "named").mkdir()
    with pytest.raises(ValueError, match="refusing to unpickle"):
        cache.safe_unpickle(outside, tmp_path / "named")


def _clips_dir(root, rng, n_train=3, n_test=2, frames=243):
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            clip = {"data_input": rng.uniform(-1, 1, size=(frames, 17, 3)).astype(np.float32),
                    "data_label": rng.uniform(-1, 1, size=(frames, 17, 3)).astype(np.float32)}
            if split == "train" and i == 0:
                clip["data_input"] = None  # 3D-only data (AMASS)
            _write(root / split / f"{i:08d}.pkl", clip)
    return root


def test_motionbert_clip_folders(tmp_path, cache_dir):
    rng = np.random.default_rng(1)
    root = _clips_dir(tmp_path / "H36M-SH", rng)
    src = open_source(f"motionbert-clips:{root}")
    assert isinstance(src, MotionBERTClipsSource)
    clips = src.clips("train")
    assert clips.inputs.shape == (3, 243, 17, 3)
    with open(root / "train" / "00000001.pkl", "rb") as fh:
        raw = pickle.load(fh)
    np.testing.assert_array_equal(clips.inputs[1], raw["data_input"])
    np.testing.assert_array_equal(clips.labels[1], raw["data_label"])
    np.testing.assert_array_equal(clips.inputs[0, ..., :2], clips.labels[0, ..., :2])  # GT 2D
    assert np.all(clips.inputs[0, ..., 2] == 1) and bool(clips.meta["gt_2d"][0])
    assert list(clips.meta["source"]) == ["train/00000000", "train/00000001", "train/00000002"]
    assert len(src.clips("test", n_frames=81)) == 2 * 3
    assert len(list(cache_dir.glob("motionbert-clips-*.npz"))) == 2


def test_motionbert_clip_folder_errors(tmp_path):
    rng = np.random.default_rng(2)
    root = _clips_dir(tmp_path / "d", rng, n_test=0)
    with pytest.raises(ValueError, match="is empty; expected \\*.pkl"):
        MotionBERTClipsSource(root).sequences("test")
    with pytest.raises(FileNotFoundError, match="has no train, test folder"):
        MotionBERTClipsSource(_clips_dir(tmp_path / "e", rng) / "train")
    _write(root / "train" / "00000009.pkl", {"data_input": np.zeros((243, 17, 3)),
                                             "data_label": np.zeros((243, 16, 3))})
    with pytest.raises(ValueError, match=r"00000009\.pkl: key 'data_label': expected shape \(N, 17, 3\)"):
        MotionBERTClipsSource(root).sequences("train")
