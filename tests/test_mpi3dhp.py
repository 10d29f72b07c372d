"""MPI-INF-3DHP in the P-STMO npz layout."""

import numpy as np
import pytest

from hummuss.data import open_source
from hummuss.data.mpi3dhp import MPI3DHPSource
from hummuss.data.skeleton import MPI3DHP_ROOT, MPI3DHP_TO_H36M


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("HUMMUSS_CACHE_DIR", str(d))
    return d


def _poses(rng, n, w=2048, h=2048):
    return {"data_2d": rng.uniform(0, [w, h], size=(n, 17, 2)),
            "data_3d": rng.normal(0, 400, size=(n, 17, 3)) + [0, 0, 4000]}


def _write(root, train=True, test=True, edit=None):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    tr = {"S1 Seq1": [{"0": _poses(rng, 120), "2": _poses(rng, 120)}, 25],
          "S3 Seq2": [{"8": _poses(rng, 200)}, 50]}
    te = {"TS1": {**_poses(rng, 150), "valid": (np.arange(150) % 3 != 0).astype(float)},
          "TS5": {**_poses(rng, 90, 1920, 1080), "valid": np.ones(90)}}
    if edit:
        edit(tr, te)
    if train:
        np.savez_compressed(root / "data_train_3dhp.npz", data=tr)
    if test:
        np.savez_compressed(root / "data_test_3dhp.npz", data=te)
    return root, tr, te


def test_npz_layout_read_reordered_and_normalised(tmp_path):
    root, tr, te = _write(tmp_path / "3dhp")
    src = open_source(f"mpi3dhp:{root}")
    assert isinstance(src, MPI3DHPSource)
    train = src.sequences("train")
    assert [(s.meta["subject"], s.meta["action"], s.meta["camera"], len(s), s.fps) for s in train] == [
        ("S1", "Seq1", "0", 120, 25.0), ("S1", "Seq1", "2", 120, 25.0), ("S3", "Seq2", "8", 200, 50.0)]
    raw = tr["S1 Seq1"][0]["2"]
    seq = train[1]
    order = list(MPI3DHP_TO_H36M)
    assert order[0] == MPI3DHP_ROOT  # H36M pelvis is 3DHP's root
    np.testing.assert_allclose(seq.inputs[..., :2], raw["data_2d"][:, order] / 2048 * 2 - 1, atol=1e-6)
    assert np.all(seq.inputs[..., 2] == 1.0)
    d3 = raw["data_3d"][:, order]
    np.testing.assert_allclose(seq.labels, (d3 - d3[:, :1]) / 2048 * 2, atol=1e-6)
    np.testing.assert_allclose((seq.labels - seq.labels[:, :1]) * seq.extras["mm_per_unit"][:, None, None],
                               d3 - d3[:, :1], atol=0.05)
    # H36M head top (10) is 3DHP head_top (0); H36M left wrist (13) is 3DHP l_wrist (7)
    np.testing.assert_allclose(seq.inputs[:, 10, :2], raw["data_2d"][:, 0] / 1024 - 1, atol=1e-6)
    np.testing.assert_allclose(seq.inputs[:, 13, :2], raw["data_2d"][:, 7] / 1024 - 1, atol=1e-6)

    test = src.sequences("test")
    ts1, ts5 = test
    assert (ts1.fps, ts5.fps) == (25.0, 50.0) and ts5.meta["fps_assumed"]
    np.testing.assert_array_equal(ts1.extras["valid"], np.arange(150) % 3 != 0)
    w, h = 1920, 1080
    raw5 = te["TS5"]
    np.testing.assert_allclose(ts5.inputs[..., 1], raw5["data_2d"][:, order, 1] / w * 2 - h / w, atol=1e-6)
    assert np.all(ts5.extras["mm_per_unit"] == 960.0) and (ts5.meta["width"], ts5.meta["height"]) == (w, h)
    clips = src.clips("test", n_frames=81, stride=27)
    assert clips.extras["valid"].shape == (len(clips), 81) and clips.extras["valid"].dtype == bool
    up = src.sequences("test", rate=2.0)[1]
    assert len(up) == 179 and up.fps == 100.0


def test_bad_npz_errors(tmp_path, cache_dir):
    def drop_valid(tr, te):
        del te["TS1"]["valid"]

    def bad_shape(tr, te):
        tr["S1 Seq1"][0]["0"]["data_3d"] = np.zeros((120, 16, 3))

    def nan(tr, te):
        te["TS5"]["data_2d"][3, 4, 0] = np.inf

    for i, (edit, split, message) in enumerate([
            (drop_valid, "test", r"missing key TS1/valid"),
            (bad_shape, "train", r"S1 Seq1/0/data_3d.*expected shape \(120, 17, 3\)"),
            (nan, "test", r"TS5/data_2d.*non-finite")]):
        root, _, _ = _write(tmp_path / f"d{i}", edit=edit)
        with pytest.raises(ValueError, match=message) as err:
            MPI3DHPSource(root).sequences(split)
        assert "3dhp.npz" in str(err.value)
    assert not cache_dir.exists() or not list(cache_dir.iterdir())
    root, _, _ = _write(tmp_path / "only-test", train=False)
    with pytest.raises(FileNotFoundError, match="data_train_3dhp.npz"):
        MPI3DHPSource(root).sequences("train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has neither"):
        MPI3DHPSource(tmp_path / "empty")


def test_cached_after_first_read(tmp_path, cache_dir, monkeypatch):
    root, _, _ = _write(tmp_path / "c")
    a = MPI3DHPSource(root).sequences("train")
    assert len(list(cache_dir.glob("mpi3dhp-train-*.npz"))) == 1
    import hummuss.data.mpi3dhp as reader

    monkeypatch.setattr(reader, "load_object_npz", lambda *a, **k: pytest.fail("read the npz again"))
    b = MPI3DHPSource(root).sequences("train")
    np.testing.assert_array_equal(a[2].labels, b[2].labels)
