"""MPI-INF-3DHP in the P-STMO npz layout (`mpi3dhp:DIR`).

DIR/data_train_3dhp.npz: key "data" -> {"S{1..8} Seq{1,2}": [{camera id: {"data_2d" (F,17,2) px,
    "data_3d" (F,17,3) mm}}, fps]}, 2048 x 2048 images.
DIR/data_test_3dhp.npz: key "data" -> {"TS1".."TS6": {"data_2d" (N,17,2), "data_3d" (N,17,3),
    "valid" (N,)}}; TS1-TS4 2048 x 2048, TS5-TS6 1920 x 1080.
Joints are reordered from 3DHP's order to H36M-17 (`skeleton.MPI3DHP_TO_H36M`).
Inputs are the GT 2D (confidence 1) normalised per sequence resolution; labels follow
MotionAGFormer: xy / w * 2 - [1, h / w], z / w * 2, then made root-relative, so
extras["mm_per_unit"] = w / 2. Test sequences carry extras["valid"] (scored frames).
The test npz stores no frame rate: TS1-TS4 are taken as 25 fps, TS5-TS6 as 50 fps (the
usual, unverified statement; meta "fps_assumed" = True; override with `test_fps=`).
The npz files hold pickled objects: they are read only under DIR, once, then cached.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hummuss.data.cache import cached_arrays, load_object_npz
from hummuss.data.clips import Sequence
from hummuss.data.render import normalise_pixels
from hummuss.data.skeleton import MPI3DHP_TO_H36M, NUM_JOINTS, ROOT
from hummuss.data.source import RecordedSource, checked_array

FILES = {"train": "data_train_3dhp.npz", "test": "data_test_3dhp.npz"}
TRAIN_RESOLUTION = (2048, 2048)
TEST_RESOLUTION = {"TS1": (2048, 2048), "TS2": (2048, 2048), "TS3": (2048, 2048),
                   "TS4": (2048, 2048), "TS5": (1920, 1080), "TS6": (1920, 1080)}
TEST_FPS = {"TS1": 25.0, "TS2": 25.0, "TS3": 25.0, "TS4": 25.0, "TS5": 50.0, "TS6": 50.0}
TEST_SCENE = {"TS1": "studio-greenscreen", "TS2": "studio-greenscreen", "TS3": "studio",
              "TS4": "studio", "TS5": "outdoor", "TS6": "outdoor"}


def _pose_arrays(entry, file, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(entry, dict):
        raise ValueError(f"{file}: {where}: expected a dict with data_2d and data_3d, got {type(entry).__name__}")
    for key in ("data_2d", "data_3d"):
        if key not in entry:
            raise ValueError(f"{file}: missing key {where}/{key}; expected data_2d (F, 17, 2) and data_3d (F, 17, 3)")
    d2 = checked_array(entry["data_2d"], file, f"{where}/data_2d", (NUM_JOINTS, 2))
    d3 = checked_array(entry["data_3d"], file, f"{where}/data_3d", (NUM_JOINTS, 3), len(d2))
    return d2, d3


def convert_train(data, file) -> dict[str, np.ndarray]:
    """The train npz's dict -> concatenated arrays with per-sequence names, fps and lengths."""
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{file}: key 'data': expected a non-empty dict of 'S<i> Seq<j>' entries")
    d2s, d3s, names, cams, fps, lengths = [], [], [], [], [], []
    for seq in sorted(data):
        value = data[seq]
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not isinstance(value[0], dict):
            raise ValueError(f"{file}: key {seq!r}: expected [camera dict, fps], got {type(value).__name__}")
        cam_dict, seq_fps = value
        try:
            seq_fps = float(np.asarray(seq_fps).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"{file}: key {seq!r}: fps must be a number, got {seq_fps!r}") from None
        if not np.isfinite(seq_fps) or seq_fps <= 0:
            raise ValueError(f"{file}: key {seq!r}: fps must be a positive number, got {seq_fps}")
        for cam in sorted(cam_dict, key=str):
            d2, d3 = _pose_arrays(cam_dict[cam], file, f"{seq}/{cam}")
            d2s.append(d2.astype(np.float32))
            d3s.append(d3.astype(np.float32))
            names.append(str(seq))
            cams.append(str(cam))
            fps.append(seq_fps)
            lengths.append(len(d2))
    return {"data_2d": np.concatenate(d2s), "data_3d": np.concatenate(d3s), "names": np.array(names),
            "cameras": np.array(cams), "fps": np.array(fps), "lengths": np.array(lengths, dtype=np.int64)}


def convert_test(data, file) -> dict[str, np.ndarray]:
    """The test npz's dict -> concatenated arrays with names, lengths and valid flags."""
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{file}: key 'data': expected a non-empty dict of 'TS<i>' entries")
    d2s, d3s, valids, names, lengths = [], [], [], [], []
    for seq in sorted(data):
        if seq not in TEST_RESOLUTION:
            raise ValueError(f"{file}: unknown test sequence {seq!r}; expected one of {', '.join(TEST_RESOLUTION)}")
        d2, d3 = _pose_arrays(data[seq], file, seq)
        if "valid" not in data[seq]:
            raise ValueError(f"{file}: missing key {seq}/valid; expected valid ({len(d2)},) frame flags")
        valid = checked_array(np.asarray(data[seq]["valid"]).reshape(-1), file, f"{seq}/valid", (), len(d2))
        d2s.append(d2.astype(np.float32))
        d3s.append(d3.astype(np.float32))
        valids.append(valid > 0)
        names.append(seq)
        lengths.append(len(d2))
    return {"data_2d": np.concatenate(d2s), "data_3d": np.concatenate(d3s), "valid": np.concatenate(valids),
            "names": np.array(names), "lengths": np.array(lengths, dtype=np.int64)}


def normalise_3dhp(d2: np.ndarray, d3: np.ndarray, width: float, height: float):
    """(F,17,2) px and (F,17,3) mm in H36M order -> inputs and labels (F,17,3) float32."""
    inputs = np.concatenate([normalise_pixels(d2, width, height), np.ones((*d2.shape[:2], 1))], axis=-1)
    labels = np.concatenate([normalise_pixels(d3[..., :2], width, height), d3[..., 2:] / width * 2], axis=-1)
    labels = labels - labels[:, ROOT:ROOT + 1]
    return inputs.astype(np.float32), labels.astype(np.float32)


class MPI3DHPSource(RecordedSource):
    """MPI-INF-3DHP from DIR/data_train_3dhp.npz and DIR/data_test_3dhp.npz."""

    name = "mpi3dhp"

    def __init__(self, path, test_fps: dict[str, float] | None = None):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise FileNotFoundError(f"mpi3dhp: folder not found: {self.path}")
        if not any((self.path / f).is_file() for f in FILES.values()):
            raise FileNotFoundError(f"mpi3dhp: {self.path} has neither {' nor '.join(FILES.values())}")
        self.test_fps = {**TEST_FPS, **(test_fps or {})}
        self.spec = f"mpi3dhp:{path}"
        super().__init__()

    def _load(self, split: str) -> dict[str, np.ndarray]:
        file = self.path / FILES[split]
        if not file.is_file():
            raise FileNotFoundError(f"mpi3dhp: {file} not found; the {split} split needs it")
        convert = convert_train if split == "train" else convert_test
        return cached_arrays(file, f"mpi3dhp-{split}", lambda: convert(load_object_npz(file, self.path), file))

    def _native(self, split: str) -> list[Sequence]:
        a = self._load(split)
        order = list(MPI3DHP_TO_H36M)
        seqs, start = [], 0
        for i, (name, n) in enumerate(zip(a["names"], a["lengths"], strict=True)):
            name = str(name)
            sl = slice(start, start + int(n))
            start += int(n)
            if split == "train":
                w, h = TRAIN_RESOLUTION
                fps = float(a["fps"][i])
                cam = str(a["cameras"][i])
                subject, _, action = name.partition(" ")
                meta = {"subject": subject, "action": action, "camera": cam, "source": f"{name} cam{cam}"}
                extras = {}
            else:
                w, h = TEST_RESOLUTION[name]
                fps = float(self.test_fps[name])
                meta = {"subject": name, "action": TEST_SCENE[name], "camera": "", "source": name,
                        "fps_assumed": True}
                extras = {"valid": a["valid"][sl].copy()}
            inputs, labels = normalise_3dhp(a["data_2d"][sl][:, order], a["data_3d"][sl][:, order], w, h)
            meta.update(width=w, height=h)
            extras["mm_per_unit"] = np.full(int(n), w / 2, dtype=np.float32)
            seqs.append(Sequence(inputs=inputs, labels=labels, fps=fps, times=np.arange(int(n)) / fps,
                                 meta=meta, extras=extras))
        return seqs
