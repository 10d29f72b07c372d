"""Human3.6M as MotionBERT uses it: the LCN pickle and MotionBERT's per-clip folders.

`h36m:PATH.pkl` reads `h36m_sh_conf_cam_source_final.pkl`:
    {"train": {joint_2d (N,17,2) px, confidence (N,17[,1]) (optional: ones), joint3d_image (N,17,3),
               camera_name (N,), source (N,)},
     "test":  {... the same, plus joints_2.5d_image (N,17,3) mm, 2.5d_factor (N,), action (N,)}}
Normalisation per camera resolution (w, h) (54138969, 60457274: 1000 x 1002; 55011271,
58860488: 1000 x 1000): xy_n = xy / w * 2 - [1, h / w], z_n = z / w * 2. A sequence is a
run of frames with one `source` id. Test sequences carry extras["valid"], False for the
three S9 sequences MotionBERT excludes, extras["mm_per_unit"] = w / 2 * 2.5d_factor, and
extras["labels_mm"] = joints_2.5d_image (mm): the ground truth evaluation scores against, as
MotionBERT's `evaluate` does (equal to the denormalised labels x factor when the file is
consistent).
Train has no 2.5D factor: its mm_per_unit is estimated from H36M's mean bone lengths
(meta "mm_per_unit" = "estimated").

`motionbert-clips:DIR` reads MotionBERT's `DIR/{train,test}/*.pkl`, each a dict with
data_input (F,17,3) (None for 3D-only data: GT 2D with confidence 1 is used) and
data_label (F,17,3), already normalised; one Sequence per file, mm_per_unit estimated.

Pickles are unpickled only under the path the user named, once: the arrays are cached
(`hummuss.data.cache`) and later runs read the cache.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hummuss.data.cache import cached_arrays, safe_unpickle
from hummuss.data.clips import Sequence
from hummuss.data.render import normalise_pixels
from hummuss.data.skeleton import H36M_BONES, H36M_MEAN_BONE_MM, NUM_JOINTS
from hummuss.data.source import RecordedSource, checked_array

H36M_FPS = 50.0
H36M_RESOLUTION: dict[str, tuple[int, int]] = {
    "54138969": (1000, 1002), "55011271": (1000, 1000),
    "58860488": (1000, 1000), "60457274": (1000, 1002),
}
# skipped entirely (all cameras) by MotionBERT's evaluation
EXCLUDED_TEST: tuple[str, ...] = ("s_09_act_05_subact_02", "s_09_act_10_subact_02", "s_09_act_13_subact_01")
TRAIN_KEYS: tuple[str, ...] = ("joint_2d", "joint3d_image", "camera_name", "source")
TEST_KEYS: tuple[str, ...] = TRAIN_KEYS + ("joints_2.5d_image", "2.5d_factor", "action")


def estimate_mm_per_unit(labels: np.ndarray) -> np.ndarray:
    """Per-frame mm per normalised unit (T,) from bone lengths: sum of H36M's mean bone
    lengths / sum of the labels' bone lengths. An estimate for data without a 2.5D factor."""
    labels = np.asarray(labels, dtype=np.float64)
    parents = [p for p, _ in H36M_BONES]
    children = [c for _, c in H36M_BONES]
    total = np.linalg.norm(labels[..., children, :] - labels[..., parents, :], axis=-1).sum(-1)
    return (sum(H36M_MEAN_BONE_MM) / np.maximum(total, 1e-9)).astype(np.float32)


def video_id(source_id: str) -> str:
    """A test source id without its camera suffix: 's_09_act_05_subact_02_ca_01' -> 's_09_act_05_subact_02'."""
    return re.sub(r"_ca(m)?_\d+$", "", source_id)


def _subject(source_id: str) -> str:
    m = re.match(r"s_?(\d+)", source_id, flags=re.IGNORECASE)
    return f"S{int(m.group(1))}" if m else ""


def _strings(value, file, key: str, n: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{file}: key {key!r}: expected shape ({n},) of names, got {arr.shape}")
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()])


def convert_h36m_pickle(data, file) -> dict[str, np.ndarray]:
    """The LCN/MotionBERT pickle's dict -> flat arrays '{split}.{key}' (validated)."""
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a dict with keys 'train' and 'test', got {type(data).__name__}")
    out: dict[str, np.ndarray] = {}
    for split, keys in (("train", TRAIN_KEYS), ("test", TEST_KEYS)):
        if split not in data:
            raise ValueError(f"{file}: missing key {split!r}; expected 'train' and 'test'")
        part = data[split]
        if not isinstance(part, dict):
            raise ValueError(f"{file}: key {split!r}: expected a dict of arrays, got {type(part).__name__}")
        for key in keys:
            if key not in part:
                raise ValueError(f"{file}: missing key {split}/{key}; expected keys: {', '.join(keys)}")
        where = f"{split}/"
        j2d = checked_array(part["joint_2d"], file, where + "joint_2d", (NUM_JOINTS, 2))
        n = len(j2d)
        conf = part.get("confidence")
        if conf is None:
            conf = np.ones((n, NUM_JOINTS))
        else:
            conf = np.asarray(conf)
            conf = conf[..., 0] if conf.ndim == 3 and conf.shape[-1] == 1 else conf
            conf = checked_array(conf, file, where + "confidence", (NUM_JOINTS,), n)
        out[f"{split}.joint_2d"] = j2d.astype(np.float32)
        out[f"{split}.confidence"] = conf.astype(np.float32)
        out[f"{split}.joint3d_image"] = checked_array(
            part["joint3d_image"], file, where + "joint3d_image", (NUM_JOINTS, 3), n).astype(np.float32)
        cams = _strings(part["camera_name"], file, where + "camera_name", n)
        unknown = sorted(set(cams) - set(H36M_RESOLUTION))
        if unknown:
            raise ValueError(f"{file}: key {where}camera_name: unknown cameras {unknown[:5]}; "
                             f"expected one of {', '.join(H36M_RESOLUTION)}")
        out[f"{split}.camera_name"] = cams
        out[f"{split}.source"] = _strings(part["source"], file, where + "source", n)
        if split == "test":
            out["test.factor"] = checked_array(
                part["2.5d_factor"], file, where + "2.5d_factor", (), n).astype(np.float64)
            out["test.joints_2.5d_image"] = checked_array(
                part["joints_2.5d_image"], file, where + "joints_2.5d_image", (NUM_JOINTS, 3), n
            ).astype(np.float32)
            out["test.action"] = _strings(part["action"], file, where + "action", n)
    return out


def _runs(ids: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of equal consecutive ids."""
    if len(ids) == 0:
        return []
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(ids)]])
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


class H36MSource(RecordedSource):
    """Human3.6M from the LCN/MotionBERT pickle (see the module docstring)."""

    name = "h36m"
    native_fps = H36M_FPS

    def __init__(self, path, exclude: bool = True):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"h36m: pickle file not found: {self.path}")
        self.exclude = exclude
        self.spec = f"h36m:{path}"
        self._arrays: dict[str, np.ndarray] | None = None
        super().__init__()

    def arrays(self) -> dict[str, np.ndarray]:
        """The converted pickle (from the cache after the first read)."""
        if self._arrays is None:
            self._arrays = cached_arrays(
                self.path, "h36m", lambda: convert_h36m_pickle(safe_unpickle(self.path, self.path), self.path))
        return self._arrays

    def _native(self, split: str) -> list[Sequence]:
        a = self.arrays()
        cams, sources = a[f"{split}.camera_name"], a[f"{split}.source"]
        res = np.array([H36M_RESOLUTION[c] for c in cams], dtype=np.float64).reshape(-1, 2)
        w, h = res[:, 0], res[:, 1]
        inputs = np.concatenate([normalise_pixels(a[f"{split}.joint_2d"], w[:, None], h[:, None]),
                                 a[f"{split}.confidence"][..., None]], axis=-1).astype(np.float32)
        j3d = a[f"{split}.joint3d_image"].astype(np.float64)
        labels = np.concatenate([normalise_pixels(j3d[..., :2], w[:, None], h[:, None]),
                                 (j3d[..., 2] / w[:, None] * 2)[..., None]], axis=-1).astype(np.float32)
        seqs = []
        for start, stop in _runs(sources):
            sid = str(sources[start])
            meta = {"subject": _subject(sid), "camera": str(cams[start]), "source": sid,
                    "video": video_id(sid), "width": int(w[start]), "height": int(h[start])}
            if split == "test":
                meta["action"] = str(a["test.action"][start])
                mm = (w[start:stop] / 2 * a["test.factor"][start:stop]).astype(np.float32)
                excluded = self.exclude and video_id(sid) in EXCLUDED_TEST
                extras = {"mm_per_unit": mm, "valid": np.full(stop - start, not excluded),
                          "labels_mm": a["test.joints_2.5d_image"][start:stop]}
                meta["excluded"] = bool(excluded)
            else:
                m = re.search(r"act_(\d+)", sid)
                meta["action"] = f"act_{m.group(1)}" if m else ""
                meta["mm_per_unit"] = "estimated"
                extras = {"mm_per_unit": estimate_mm_per_unit(labels[start:stop])}
            seqs.append(Sequence(inputs=inputs[start:stop], labels=labels[start:stop], fps=H36M_FPS,
                                 times=np.arange(stop - start) / H36M_FPS, meta=meta, extras=extras))
        return seqs


class MotionBERTClipsSource(RecordedSource):
    """MotionBERT's per-clip pickles: DIR/train/*.pkl and DIR/test/*.pkl (see the module docstring)."""

    name = "motionbert-clips"
    native_fps = H36M_FPS

    def __init__(self, path, fps: float = H36M_FPS):
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise FileNotFoundError(f"motionbert-clips: folder not found: {self.path}")
        missing = [s for s in self.splits if not (self.path / s).is_dir()]
        if missing:
            raise FileNotFoundError(f"motionbert-clips: {self.path} has no {', '.join(missing)} folder; "
                                    "expected DIR/train/*.pkl and DIR/test/*.pkl")
        self.native_fps = float(fps)
        self.spec = f"motionbert-clips:{path}"
        super().__init__()

    def files(self, split: str) -> list[Path]:
        files = sorted((self.path / split).glob("*.pkl"))
        if not files:
            raise ValueError(f"motionbert-clips: {self.path / split} is empty; expected *.pkl clip files")
        return files

    def _convert(self, split: str, files: list[Path]) -> dict[str, np.ndarray]:
        inputs, labels, lengths, gt2d = [], [], [], []
        for f in files:
            clip = safe_unpickle(f, self.path)
            if not isinstance(clip, dict):
                raise ValueError(f"{f}: expected a dict with data_input and data_label, got {type(clip).__name__}")
            if "data_label" not in clip:
                raise ValueError(f"{f}: missing key 'data_label'; expected data_input and data_label (F, 17, 3)")
            label = checked_array(clip["data_label"], f, "data_label", (NUM_JOINTS, 3))
            if clip.get("data_input") is None:
                inp = np.concatenate([label[..., :2], np.ones_like(label[..., :1])], axis=-1)
                gt2d.append(True)
            else:
                inp = checked_array(clip["data_input"], f, "data_input", (NUM_JOINTS, 3), len(label))
                gt2d.append(False)
            inputs.append(inp.astype(np.float32))
            labels.append(label.astype(np.float32))
            lengths.append(len(label))
        return {"inputs": np.concatenate(inputs), "labels": np.concatenate(labels),
                "lengths": np.array(lengths, dtype=np.int64), "gt_2d": np.array(gt2d),
                "names": np.array([f.stem for f in files])}

    def _native(self, split: str) -> list[Sequence]:
        files = self.files(split)
        a = cached_arrays(self.path / split, "motionbert-clips", lambda: self._convert(split, files), files)
        seqs, start = [], 0
        for name, n, gt2d in zip(a["names"], a["lengths"], a["gt_2d"], strict=True):
            lab = a["labels"][start:start + n]
            seqs.append(Sequence(
                inputs=a["inputs"][start:start + n], labels=lab, fps=self.native_fps,
                times=np.arange(n) / self.native_fps,
                meta={"subject": "", "action": "", "camera": "", "source": f"{split}/{name}",
                      "gt_2d": bool(gt2d), "mm_per_unit": "estimated"},
                extras={"mm_per_unit": estimate_mm_per_unit(lab)}))
            start += n
        return seqs
