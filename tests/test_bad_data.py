"""Bad data files and a bad checkpoint stop a command before anything is logged: exit code
2, one line naming the file and what is wrong, no traceback, no run in the store and no
checkpoints/ folder. Every file here is a real bad file written to disk."""

import pickle

import numpy as np
import pytest

from hummuss.data.validate import DataError, validate_source
from suite.cli import main
from tests.test_bvh import write_toy


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("HUMMUSS_CACHE_DIR", str(d))
    return d


def _poses(rng, n):
    return {"data_2d": rng.uniform(0, 2048, size=(n, 17, 2)),
            "data_3d": rng.normal(0, 400, size=(n, 17, 3)) + [0, 0, 4000]}


def _mpi3dhp(root, n_train=120, n_test=90, edit=None):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    tr = {"S1 Seq1": [{"0": _poses(rng, n_train)}, 25], "S2 Seq1": [{"0": _poses(rng, n_train)}, 25]}
    te = {"TS1": {**_poses(rng, n_test), "valid": np.ones(n_test)}}
    if edit:
        edit(tr, te)
    np.savez_compressed(root / "data_train_3dhp.npz", data=tr)
    np.savez_compressed(root / "data_test_3dhp.npz", data=te)
    return root


def _h36m(path, n=60, edit=None):
    rng = np.random.default_rng(0)

    def part(test):
        p = {"joint_2d": rng.uniform(0, 1000, size=(n, 17, 2)), "confidence": np.ones((n, 17, 1)),
             "joint3d_image": rng.uniform(0, 1000, size=(n, 17, 3)),
             "camera_name": np.repeat(["54138969"], n), "source": np.repeat(["s_01_act_02_ca_01"], n)}
        if test:
            p.update({"2.5d_factor": np.full(n, 4.0), "joints_2.5d_image": p["joint3d_image"] * 4,
                      "action": np.repeat(["act"], n)})
        return p

    data = {"train": part(False), "test": part(True)}
    if edit:
        edit(data)
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return path


def _flip_byte(path, where=0.5):
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * where)] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate(path, keep=0.5):
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])


def _random_bytes(path, n=4096):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(1).bytes(n))
    return path


def _bvh_dir(root, edit=None, names=("01_01", "02_01", "03_01", "05_01", "07_01")):
    for name in names:
        write_toy(root / f"{name}.bvh", n_frames=61)
    if edit:
        path = root / f"{names[0]}.bvh"
        path.write_text(edit(path.read_text()))
    return root


def _clips_dir(root):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        clip = {"data_input": None, "data_label": rng.uniform(-1, 1, size=(81, 17, 3)).astype(np.float32)}
        with open(root / split / "00000000.pkl", "wb") as fh:
            pickle.dump(clip, fh)
    _random_bytes(root / "test" / "00000001.pkl")
    return root


def _nan_h36m(d):
    d["train"]["joint_2d"][7, 3, 1] = np.nan


def _zero_frames_3dhp(tr, te):
    for key in ("data_2d", "data_3d"):
        tr["S1 Seq1"][0]["0"][key] = tr["S1 Seq1"][0]["0"][key][:0]


# (name, make(tmp) -> data spec, words the one-line message must hold)
PROBES = {
    "truncated-npz": (lambda t: f"mpi3dhp:{_truncated_npz(t)}", ["data_train_3dhp.npz", "cannot read npz"]),
    "byte-flipped-npz": (lambda t: f"mpi3dhp:{_flipped_npz(t)}", ["data_train_3dhp.npz", "cannot read npz"]),
    "random-pkl-h36m": (lambda t: f"h36m:{_random_bytes(t / 'h36m.pkl')}", ["h36m.pkl", "cannot read pickle"]),
    "random-pkl-clips": (lambda t: f"motionbert-clips:{_clips_dir(t / 'clips')}",
                         ["00000001.pkl", "cannot read pickle"]),
    "garbage-bvh": (lambda t: f"bvh:{_bvh_dir(t / 'bvh', lambda s: 'garbage ' * 50)}", ["01_01.bvh"]),
    "truncated-motion": (lambda t: f"bvh:{_bvh_dir(t / 'bvh', lambda s: s[:len(s) * 3 // 4])}",
                         ["01_01.bvh", "frame"]),
    "nan-values": (lambda t: f"h36m:{_h36m(t / 'nan.pkl', edit=_nan_h36m)}", ["nan.pkl", "non-finite"]),
    "nan-bvh": (lambda t: f"bvh:{_bvh_dir(t / 'bvh', lambda s: s.replace('0.000000', 'nan', 3))}",
                ["01_01.bvh", "non-finite"]),
    "zero-frames-h36m": (lambda t: f"h36m:{_h36m(t / 'zero.pkl', n=0)}", ["zero.pkl", "empty"]),
    "zero-frames-3dhp": (lambda t: f"mpi3dhp:{_mpi3dhp(t / '3dhp', edit=_zero_frames_3dhp)}",
                         ["S1 Seq1", "no frames"]),
    "zero-frames-bvh": (lambda t: f"bvh:{_bvh_dir(t / 'bvh', _no_frames)}", ["01_01.bvh", "frame"]),
}


def _no_frames(text):
    head = text.split("Frames:")[0]
    return head + "Frames: 0\nFrame Time: 0.00833333\n"


def _truncated_npz(tmp):
    root = _mpi3dhp(tmp / "3dhp")
    _truncate(root / "data_train_3dhp.npz")
    return root


def _flipped_npz(tmp):
    root = _mpi3dhp(tmp / "3dhp")
    _flip_byte(root / "data_train_3dhp.npz")
    return root


def _assert_refused(store, capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.startswith("hummuss-suite: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    assert not (store / "mlruns.db").exists(), "the store was opened"
    assert not (store / "checkpoints").exists() and not (store / "mlartifacts").exists()
    return err


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_run_refuses_a_bad_data_file_before_logging(suite_store, capsys, probe):
    make, words = PROBES[probe]
    spec = make(suite_store)
    _assert_refused(suite_store, capsys, ["run", "context-length", "--scale", "smoke", "--data", spec], words)


@pytest.mark.parametrize("probe", ["random-pkl-h36m", "byte-flipped-npz", "nan-values", "random-pkl-clips"])
def test_evaluate_refuses_a_bad_data_file_before_logging(suite_store, capsys, probe):
    make, words = PROBES[probe]
    if probe == "nan-values":  # evaluate reads only the test split: put the NaN there
        spec = f"h36m:{_h36m(suite_store / 'nan.pkl', edit=lambda d: d['test']['joint3d_image'].__setitem__(0, np.nan))}"
    elif probe == "byte-flipped-npz":
        root = _mpi3dhp(suite_store / "3dhp")
        _flip_byte(root / "data_test_3dhp.npz")
        spec, words = f"mpi3dhp:{root}", ["data_test_3dhp.npz", "cannot read npz"]
    else:
        spec = make(suite_store)
    _assert_refused(suite_store, capsys, ["evaluate", "--checkpoint", str(_checkpoint(suite_store)),
                                          "--data", spec, "--frames", "27"], words)


def test_evaluate_refuses_an_empty_test_split(suite_store, capsys):
    """One bvh file is one subject: everything is training data and the test split is empty."""
    root = _bvh_dir(suite_store / "one", names=("01_01",))
    _assert_refused(suite_store, capsys, ["evaluate", "--checkpoint", str(_checkpoint(suite_store)),
                                          "--data", f"bvh:{root}", "--frames", "27"],
                    [f"bvh:{root}", "test split is empty"])


def _checkpoint(store, config_edit=None):
    from hummuss.checkpoint import CHECKPOINT_FORMAT, save_atomic
    from hummuss.model import HumMUSS, HumMUSSConfig

    model = HumMUSS(HumMUSSConfig.preset("smoke"))
    config = model.config.to_dict()
    if config_edit:
        config_edit(config)
    path = store / "model.pt"
    save_atomic({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "model_config": config,
                 "model_class": "HumMUSS"}, path)
    return path


@pytest.mark.parametrize("edit", [
    lambda c: c.__setitem__("dim", c["dim"] * 2),
    lambda c: c.__setitem__("depth", c["depth"] + 1),
])
def test_evaluate_refuses_a_checkpoint_whose_config_does_not_match_its_weights(suite_store, capsys, edit):
    path = _checkpoint(suite_store, edit)
    err = _assert_refused(suite_store, capsys, ["evaluate", "--checkpoint", str(path), "--data",
                                                "synthetic:scale=smoke", "--frames", "27"],
                          [str(path), "config does not match its weights"])
    assert len(err) < 600


def test_good_files_pass_validation(tmp_path):
    for spec in (f"mpi3dhp:{_mpi3dhp(tmp_path / '3dhp')}", f"h36m:{_h36m(tmp_path / 'h.pkl')}",
                 f"bvh:{_bvh_dir(tmp_path / 'bvh')}"):
        assert validate_source(spec).sequences("test")
    with pytest.raises(DataError, match="test split is empty"):
        validate_source(f"bvh:{_bvh_dir(tmp_path / 'one', names=('01_01',))}", ("test",))


def test_sweep_refuses_a_bad_data_file_before_logging(suite_store, capsys, monkeypatch):
    """A study whose smoke scale reads a truncated npz: the sweep stops before any store or trial."""
    import dataclasses

    import suite.registry as registry
    from suite.cli.sweep import main as sweep_main
    from suite.sweep import config as sweep_config

    root = _mpi3dhp(suite_store / "3dhp")
    _truncate(root / "data_test_3dhp.npz")
    study = registry.get_study("context-length")
    bad = dataclasses.replace(study, scales={**study.scales, "smoke": dataclasses.replace(
        study.scales["smoke"], data=f"mpi3dhp:{root}")})
    monkeypatch.setattr(sweep_config, "get_study", lambda name: bad)
    monkeypatch.setattr(registry, "get_study", lambda name: bad)
    with pytest.raises(SystemExit) as info:
        sweep_main(["context-length", "--scale", "smoke", "--trials", "1"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert "data_test_3dhp.npz: cannot read npz" in err
    assert sorted(p.name for p in suite_store.iterdir()) == ["3dhp", "cache", "mlflow.yaml"]
