"""Data files are read without running code: a crafted pickle is refused by every loader
and command, with exit code 2, a one-line error naming the file and the forbidden
object, and no code run (each crafted pickle would create a file; it must not exist)."""

import pickle
import re
import zipfile

import numpy as np
import pytest

from hummuss.data import open_source
from hummuss.data.cache import load_object_npz, safe_unpickle
from hummuss.data.safe_pickle import read_npz_member, read_pickle
from suite.cli import main


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("HUMMUSS_CACHE_DIR", str(d))
    return d


class Crafted:
    """Unpickling this calls open(marker, "w"): the file appearing means code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)
    return path


def _h36m_bare(tmp_path, marker):
    return f"h36m:{_dump(tmp_path / 'bare.pkl', Crafted(marker))}"


def _h36m_in_dict(tmp_path, marker):
    data = {"train": {"joint_2d": np.zeros((3, 17, 2)), "source": Crafted(marker)},
            "test": {"joint_2d": np.zeros((3, 17, 2))}}
    return f"h36m:{_dump(tmp_path / 'dict.pkl', data)}"


def _clips(tmp_path, marker):
    root = tmp_path / "clips"
    clip = {"data_input": None, "data_label": np.zeros((27, 17, 3), np.float32)}
    for split in ("train", "test"):  # in both, since `evaluate` reads only the test split
        _dump(root / split / "00000000.pkl", {**clip, "extra": Crafted(marker)})
    return f"motionbert-clips:{root}"


def _mpi3dhp(tmp_path, marker):
    root = tmp_path / "3dhp"
    root.mkdir()
    poses = {"data_2d": np.zeros((30, 17, 2)), "data_3d": np.zeros((30, 17, 3))}
    np.savez(root / "data_train_3dhp.npz", data={"S1 Seq1": [{"0": poses}, Crafted(marker)]})
    np.savez(root / "data_test_3dhp.npz", data={"TS1": {**poses, "valid": np.ones(30), "x": Crafted(marker)}})
    return f"mpi3dhp:{root}"


CRAFTED = {"h36m-bare": _h36m_bare, "h36m-in-dict": _h36m_in_dict, "motionbert-clips": _clips,
           "mpi3dhp-npz": _mpi3dhp}


def test_the_crafted_files_do_run_code_under_plain_pickle(tmp_path):
    """The files of these tests are real exploits: plain pickle.load runs them."""
    marker = tmp_path / "ran"
    spec = _h36m_in_dict(tmp_path, marker)
    with open(spec.split(":", 1)[1], "rb") as fh:
        pickle.load(fh)
    assert marker.exists()
    marker.unlink()
    root = _mpi3dhp(tmp_path, marker).split(":", 1)[1]
    with np.load(f"{root}/data_train_3dhp.npz", allow_pickle=True) as data:
        data["data"]
    assert marker.exists()


@pytest.mark.parametrize("kind", sorted(CRAFTED))
@pytest.mark.parametrize("command", ["run", "evaluate", "data inspect"])
def test_a_crafted_pickle_is_refused_by_every_command_without_running_code(suite_store, capsys, kind, command):
    marker = suite_store / "ran"
    spec = CRAFTED[kind](suite_store, marker)
    argv = {"run": ["run", "context-length", "--scale", "smoke", "--data", spec],
            "evaluate": ["evaluate", "--checkpoint", str(suite_store / "x.pt"), "--data", spec],
            "data inspect": ["data", "inspect", spec]}[command]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(r"refusing to load it: it references (io|_io|builtins)\.open,", err)
    assert not marker.exists()
    assert not (suite_store / "mlruns.db").exists() and not (suite_store / "checkpoints").exists()


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_every_loader_refuses_a_crafted_pickle(tmp_path, kind):
    marker = tmp_path / "ran"
    source = open_source(CRAFTED[kind](tmp_path, marker))
    for split in source.splits:
        try:
            source.sequences(split)
        except ValueError as err:
            assert "refusing to load it" in str(err) and str(tmp_path) in str(err)
            break
    else:
        pytest.fail("no split refused the crafted pickle")
    assert not marker.exists()


def test_numpy_data_and_plain_values_load_under_every_protocol(tmp_path):
    value = {"a": np.arange(6.0).reshape(2, 3), "s": np.array(["ab", "c"]), "b": np.array([b"x"]),
             "o": np.array([{"x": np.ones(2, np.float32)}, None], dtype=object), "f": np.float64(1.5),
             "i": np.int64(3), "t": (1, 2.0, "x", b"y", None, True), "d": np.dtype([("x", "<f4")]),
             "fortran": np.asfortranarray(np.arange(6).reshape(2, 3))}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        back = read_pickle(path)
        assert back.keys() == value.keys()
        np.testing.assert_array_equal(back["a"], value["a"])
        np.testing.assert_array_equal(back["fortran"], value["fortran"])
        assert back["s"].tolist() == ["ab", "c"] and back["b"].tolist() == [b"x"]
        np.testing.assert_array_equal(back["o"][0]["x"], np.ones(2))
        assert back["f"] == 1.5 and back["i"] == 3 and back["t"] == value["t"] and back["d"] == value["d"]
    assert safe_unpickle(path, tmp_path)["i"] == 3


def test_npz_object_arrays_load_without_allow_pickle(tmp_path):
    path = tmp_path / "x.npz"
    np.savez_compressed(path, data={"k": [np.ones((2, 2)), 3]}, plain=np.arange(4))
    assert load_object_npz(path, tmp_path)["k"][1] == 3
    np.testing.assert_array_equal(read_npz_member(path, "plain"), np.arange(4))
    with pytest.raises(ValueError, match="missing key 'nope'; found data, plain"):
        read_npz_member(path, "nope")


@pytest.mark.parametrize("forbidden", [
    ("os", "system"), ("builtins", "eval"), ("numpy", "load"), ("numpy.lib.npyio", "load"),
    ("numpy.testing._private.utils", "runstring"), ("builtins", "getattr"), ("_codecs", "decode"),
])
def test_anything_but_numpy_data_is_refused_by_name(tmp_path, forbidden):
    module, name = forbidden
    path = tmp_path / "g.pkl"
    path.write_bytes(f"c{module}\n{name}\n(S'x'\ntR.".encode())  # protocol 0: GLOBAL, call with ('x',)
    with pytest.raises(ValueError, match=f"g.pkl: refusing to load it: it references {module}.{name},"):
        read_pickle(path)


def test_codecs_encode_only_for_latin1_bytes(tmp_path):
    path = tmp_path / "c.pkl"
    path.write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")
    with pytest.raises(ValueError, match="refusing to load it: it references _codecs.encode with encoding 'rot13'"):
        read_pickle(path)


def test_corrupt_files_are_one_line_value_errors(tmp_path):
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="junk.pkl: cannot read pickle"):
        read_pickle(junk)
    good = tmp_path / "g.npz"
    np.savez(good, data={"k": np.ones(100)})
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="flipped.npz: cannot read npz") as err:
        read_npz_member(flipped, "data")
    assert "\n" not in str(err.value)
    short = tmp_path / "short.npz"
    short.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="short.npz: cannot read npz"):
        read_npz_member(short, "data")
    assert zipfile.is_zipfile(good)


class _RawObjectArray:
    """numpy.ndarray((1,), "O", buffer): an object array whose pointer the file chose."""

    def __reduce__(self):
        return (np.ndarray, ((1,), np.dtype("O"), b"\x41" * 8))


# NEWOBJ: ndarray.__new__(ndarray, (1,), "O", b"AAAAAAAA"), written opcode by opcode (pickle
# itself refuses to write it): PROTO 3, GLOBAL, (1,), 'O', bytes, TUPLE3, NEWOBJ, STOP
_NEWOBJ_RAW = b"\x80\x03cnumpy\nndarray\nK\x01\x85X\x01\x00\x00\x00OC\x08" + b"A" * 8 + b"\x87\x81."


@pytest.mark.parametrize("crafted, message", [
    (_RawObjectArray(), "numpy.ndarray called directly"),
    (_NEWOBJ_RAW, "cannot read pickle"),  # NEWOBJ needs a class; numpy.ndarray is not handed out
])
def test_an_object_array_over_raw_bytes_is_refused(tmp_path, crafted, message):
    path = tmp_path / "raw.pkl"
    path.write_bytes(crafted if isinstance(crafted, bytes) else pickle.dumps({"x": crafted}, protocol=4))
    with pytest.raises(ValueError, match=message):
        read_pickle(path)


class _FlaglessDtype:
    """A structured dtype with an object field whose pickled flags deny holding objects."""

    def __reduce__(self):
        fields = {"a": (np.dtype("f8"), 0), "b": (np.dtype("O"), 8)}
        return (np.dtype, ("V16", False, True), (3, "|", None, ("a", "b"), fields, 16, 1, 0))


class _ArrayOverRawBytes:
    """An array of that dtype whose state is 16 raw bytes: its field b is a pointer 0x4141..."""

    def __reduce__(self):
        reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
        return (reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), _FlaglessDtype(), False, b"A" * 16))


def test_a_dtype_whose_flags_deny_its_objects_is_refused(tmp_path):
    data = pickle.dumps({"x": _ArrayOverRawBytes()}, protocol=3)
    built = pickle.loads(data)["x"]  # plain pickle builds it: an object field numpy treats as bytes
    assert built.dtype.fields["b"][0] == np.dtype("O") and not built.dtype.hasobject
    path = tmp_path / "flags.pkl"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="flags.pkl: refusing to load it: it holds a numpy dtype .* whose pickled "
                                         "flags or size disagree with its layout"):
        read_pickle(path)


class _DtypeFromDict:
    def __reduce__(self):
        return (np.dtype, ({"names": ["a"], "formats": ["f8"]},))


def test_numpy_dtype_only_as_numpy_pickles_call_it(tmp_path):
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps(_DtypeFromDict()))
    with pytest.raises(ValueError, match=r"d.pkl: refusing to load it: it references numpy.dtype called with dict"):
        read_pickle(path)
