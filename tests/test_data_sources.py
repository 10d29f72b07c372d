"""The shared data interface: open_source, clip slicing, cameras, rendering, cache, inspect."""

import os

import numpy as np
import pytest

import hummuss.data.cache as cache
from hummuss.data import SOURCES, open_source, parse_options
from hummuss.data.cache import cached_arrays, load_arrays, save_arrays
from hummuss.data.camera import VirtualCamera, camera_ring, look_at
from hummuss.data.clips import Sequence
from hummuss.data.inspect import count_clips, summarise
from hummuss.data.render import denormalise_pixels, normalise_pixels
from hummuss.data.source import RATES, clip_windows, resample_recorded, stack_clips


def test_open_source_errors():
    assert set(SOURCES) == {"synthetic", "h36m", "motionbert-clips", "mpi3dhp", "bvh"}
    with pytest.raises(ValueError, match="unknown data source 'h37m'; known: bvh, h36m, motionbert-clips"):
        open_source("h37m:/x")
    with pytest.raises(FileNotFoundError, match="/no/such/dir"):
        open_source("mpi3dhp:/no/such/dir")
    with pytest.raises(ValueError, match="needs a path"):
        open_source("h36m")
    assert parse_options("scale=smoke, seed=3") == {"scale": "smoke", "seed": "3"}
    with pytest.raises(ValueError, match="expected key=value"):
        parse_options("smoke")


def test_clip_windows_follow_split_clips():
    rng = np.random.default_rng(0)
    windows = clip_windows(500, 243, 81, rng)
    assert [int(w[0]) for w in windows] == [0, 81, 162, 243]  # tail 486..499 dropped
    assert all(np.array_equal(w, np.arange(w[0], w[0] + 243)) for w in windows)
    assert len(clip_windows(500, 243, 243, rng)) == 2
    (short,) = clip_windows(100, 243, 81, rng)  # shorter than a clip: resampled to 243 indices
    assert len(short) == 243 and short.min() == 0 and short.max() == 99
    even = np.linspace(0, 100, 243, endpoint=False)  # each index is the floor or ceil of its position
    assert np.all(np.diff(short) >= 0) and np.all((short >= np.floor(even)) & (short <= np.ceil(even)))
    again = clip_windows(100, 243, 81, np.random.default_rng(5))[0]
    assert np.array_equal(again, clip_windows(100, 243, 81, np.random.default_rng(5))[0])
    assert clip_windows(0, 243, 81, rng) == []
    assert count_clips([500, 100, 0], 243, 81) == 5


def _seq(n, fps=50.0, source="a"):
    x = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 17, 3), np.float32)
    return Sequence(inputs=x, labels=-x, fps=fps, times=np.arange(n) / fps,
                    meta={"subject": "S1", "action": "walk", "camera": "c", "source": source},
                    extras={"mm_per_unit": np.full(n, 2.0, np.float32)})


def test_stack_clips_keeps_frames_meta_and_extras():
    clips = stack_clips([_seq(300, source="a"), _seq(50, source="b")], 81, 81)
    assert clips.inputs.shape == (3 + 1, 81, 17, 3)
    assert list(clips.meta["source"]) == ["a", "a", "a", "b"]
    assert list(clips.meta["start"]) == [0, 81, 162, 0]
    assert list(clips.meta["resampled"]) == [False, False, False, True]
    np.testing.assert_array_equal(clips.inputs[1, :, 0, 0], np.arange(81, 162))
    np.testing.assert_array_equal(clips.extras["frame"][2], np.arange(162, 243))
    np.testing.assert_allclose(clips.extras["times"][1], np.arange(81, 162) / 50.0)
    assert clips.extras["mm_per_unit"].shape == (4, 81) and np.all(clips.fps == 50.0)
    bad = _seq(100)
    bad.extras["valid"] = np.ones(100, bool)
    with pytest.raises(ValueError, match="extras"):
        stack_clips([_seq(100), bad], 81)


def test_recorded_rates():
    seq = _seq(17)
    for rate, n, fps in ((0.5, 9, 25.0), (0.25, 5, 12.5), (0.125, 3, 6.25), (2.0, 33, 100.0)):
        out = resample_recorded(seq, rate)
        assert (len(out), out.fps) == (n, fps)
        assert out.extras["mm_per_unit"].shape == (n,)
    np.testing.assert_array_equal(resample_recorded(seq, 0.25).inputs[:, 0, 0], [0, 4, 8, 12, 16])
    np.testing.assert_allclose(resample_recorded(seq, 2.0).inputs[:4, 0, 0], [0, 0.5, 1, 1.5])
    assert RATES == (0.125, 0.25, 0.5, 1.0, 2.0)
    with pytest.raises(ValueError, match="unsupported rate 0.3"):
        resample_recorded(seq, 0.3)


def test_camera_projection_and_ring():
    cam = VirtualCamera.looking_at([0, 1000, -5000], [0, 1000, 0])
    px, depth = cam.project(np.array([[0.0, 1000, 0], [500, 1000, 0], [0, 500, 0]]))
    np.testing.assert_allclose(depth, [5000, 5000, 5000])
    np.testing.assert_allclose(px[0], [500, 500])
    # OpenCV frame: world +x (the left of someone facing this camera... from behind) -> image left
    np.testing.assert_allclose(px[1], [500 - 1145 * 500 / 5000, 500])
    np.testing.assert_allclose(px[2], [500, 500 + 1145 * 500 / 5000])  # lower in the world = further down
    rot, trans = look_at([1, 2, 3], [4, 5, 6])
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    cams = camera_ring(4, 5000.0, 1500.0, rng=np.random.default_rng(0))
    assert [c.name for c in cams] == ["cam0", "cam1", "cam2", "cam3"]
    for c in cams:
        assert 4400 < np.linalg.norm(c.position[[0, 2]]) < 5600 and 1000 < c.position[1] < 2000
        assert 1135 < c.fx < 1155 and abs(c.cx - 500) <= 15
        centre, _ = c.project(np.array([[0.0, 900, 0]]))
        np.testing.assert_allclose(centre[0], [c.cx, c.cy], atol=1e-6)  # aimed at the target
    with pytest.raises(ValueError, match="behind the camera"):
        cam.project(np.array([[0.0, 1000, -6000]]))


def test_normalise_roundtrip():
    xy = np.random.default_rng(0).uniform(0, 1000, size=(5, 17, 2))
    w = np.array([1000.0, 1000, 1000, 2048, 1920])[:, None]
    h = np.array([1002.0, 1000, 1000, 2048, 1080])[:, None]
    np.testing.assert_allclose(denormalise_pixels(normalise_pixels(xy, w, h), w, h), xy)


def test_cache_is_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("HUMMUSS_CACHE_DIR", str(tmp_path / "c"))
    src = tmp_path / "data.bin"
    src.write_bytes(b"123")

    def failing():
        raise ValueError("broken input")

    with pytest.raises(ValueError, match="broken input"):
        cached_arrays(src, "kind", failing)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())
    with pytest.raises(ValueError, match="object array"):
        save_arrays(tmp_path / "c" / "x.npz", {"a": np.array([{"x": 1}], dtype=object)})

    def write_half_then_fail(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache.np, "savez", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        cached_arrays(src, "kind", lambda: {"a": np.arange(3)})
    assert not list((tmp_path / "c").iterdir())  # neither the entry nor a temp file
    monkeypatch.undo()
    monkeypatch.setenv("HUMMUSS_CACHE_DIR", str(tmp_path / "c"))
    calls = []
    first = cached_arrays(src, "kind", lambda: calls.append(1) or {"a": np.arange(3), "s": np.array(["x"])})
    second = cached_arrays(src, "kind", lambda: calls.append(1) or {"a": np.zeros(3)})
    assert calls == [1] and np.array_equal(second["a"], first["a"]) and second["s"][0] == "x"
    os.utime(src, ns=(1, 1))  # a changed file gets a new entry
    third = cached_arrays(src, "kind", lambda: {"a": np.zeros(3)})
    assert np.all(third["a"] == 0) and len(list((tmp_path / "c").glob("kind-*.npz"))) == 2
    assert set(load_arrays(next((tmp_path / "c").glob("kind-*.npz")))) <= {"a", "s"}


def test_inspect_summarises_each_split():
    src = open_source("synthetic:scale=smoke")
    df = summarise(src)
    assert list(df.index) == ["train", "test"]
    row = df.loc["train"]
    assert row["sequences"] == 6 and row["frames"] == 1800 and row["fps_values"] == "60"
    assert row["clips_243"] == len(src.clips("train", 243, 81))
    assert row["clips_81"] == len(src.clips("train", 81, 27))
    assert -1.5 < row["input_x_min"] < row["input_x_max"] < 1.5
    assert 0 <= row["input_conf_min"] < row["input_conf_max"] <= 1
    assert 1000 < row["mm_per_unit_min"] < row["mm_per_unit_max"] < 4000
    assert df.loc["test", "subjects"] == 1


def test_validation_clips_are_held_out_training_sequences():
    """Every 10th training sequence validates (non-overlapping clips); none is trained on, none is a test one."""
    from hummuss.data import open_source

    src = open_source("synthetic")
    seqs = src.sequences("train")
    train, val = src.training_clips(27, 9)
    held = [seqs[i] for i in range(9, len(seqs), 10)]
    assert len(held) == 8
    key = lambda clips: {(m.subject, m.action, m.camera) for m in clips.meta.itertuples()}  # noqa: E731
    assert key(val) == {(s.meta["subject"], s.meta["action"], s.meta["camera"]) for s in held}
    assert not key(val) & key(train)
    assert len(val) == sum(len(s) // 27 for s in held)  # stride = F: no frame validated twice
    test = src.clips("test", 27, 27)
    assert not np.isin(val.inputs[:, 0, 0, 0], test.inputs[:, 0, 0, 0]).any()
    one = type(src).__new__(type(src))
    one.sequences = lambda split, rate=1.0: seqs[:1]
    assert one.training_clips(27, 9)[1] is None
