"""Checkpoints cannot be silently corrupted: a checksum is written with each one and
verified on load, the replaced last.pt is kept as last.prev.pt, and a flipped byte or a
truncated last.pt makes the rerun fall back to the previous one (or start afresh) with a
warning, and finish."""

import zipfile

import pytest
import torch

from hummuss.checkpoint import load_checkpoint, load_resumable, previous_path, save_atomic
from hummuss.data import open_source
from hummuss.model import HumMUSS, HumMUSSConfig
from hummuss.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def data():
    src = open_source("synthetic:scale=smoke")
    return src.clips("train", 27, 9), src.clips("test", 27)


def _fit(data, out, epochs, messages=None):
    torch.manual_seed(0)
    model = HumMUSS(HumMUSSConfig.preset("smoke", causal=True))
    cfg = TrainConfig.preset("smoke", epochs=epochs, max_steps_per_epoch=3)
    log = messages.append if messages is not None else (lambda m: None)
    return Trainer(model, data[0], data[1], cfg, out, log=log).fit()


def _flip_weight_byte(path, member_index=0, offset=101):
    """Flip one byte inside the stored bytes of a tensor (a zip member under data/)."""
    with zipfile.ZipFile(path) as archive:
        members = [i for i in archive.infolist() if "/data/" in i.filename and not i.filename.endswith("/")]
        info = sorted(members, key=lambda i: -i.file_size)[member_index]  # a big one: weights
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little") \
        + int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    raw[start + offset] ^= 0x40
    path.write_bytes(bytes(raw))


def test_a_flipped_weight_byte_loads_silently_without_the_checksum_but_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"format": "hummuss-train-v2", "model": {"w": torch.arange(4096.0)}, "epoch": 3}, path)
    assert load_checkpoint(path)["epoch"] == 3
    _flip_weight_byte(path)
    silently = torch.load(path, weights_only=True)  # torch itself notices nothing
    assert not torch.equal(silently["model"]["w"], torch.arange(4096.0))
    with pytest.raises(ValueError, match=r"last\.pt is corrupt: its contents do not match the checksum"):
        load_checkpoint(path)


def test_every_entry_is_covered_by_the_checksum(tmp_path):
    path = tmp_path / "c.pt"
    save_atomic({"format": "hummuss-train-v2", "epoch": 3, "rng": {"python": (3, (1, 2), None)}}, path)
    payload = torch.load(path, weights_only=True)
    payload["epoch"] = 4  # as if a byte of the pickled part had changed to another valid value
    torch.save(payload, path)
    with pytest.raises(ValueError, match="is corrupt"):
        load_checkpoint(path)


def test_the_replaced_checkpoint_is_kept_and_a_corrupt_one_falls_back(tmp_path):
    path = tmp_path / "last.pt"
    for epoch in (1, 2):
        save_atomic({"format": "hummuss-train-v2", "epoch": epoch, "w": torch.full((2048,), float(epoch))},
                    path, keep_previous=True)
    assert load_checkpoint(previous_path(path))["epoch"] == 1 and previous_path(path).name == "last.prev.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    warnings = []
    payload, used = load_resumable(path, warnings.append)
    assert payload["epoch"] == 1 and used == previous_path(path)
    assert len(warnings) == 1 and "last.pt cannot be read" in warnings[0] and "trying the previous one" in warnings[0]
    assert not path.exists() and (tmp_path / "last.pt.corrupt").exists()  # never rotated into .prev


def test_training_falls_back_to_the_previous_checkpoint_and_finishes(data, tmp_path):
    straight = _fit(data, tmp_path / "straight", epochs=3)
    out = tmp_path / "run"
    _fit(data, out, epochs=2)  # last.pt = epoch 2, last.prev.pt = epoch 1
    assert load_checkpoint(out / "last.prev.pt")["epoch"] == 1
    _flip_weight_byte(out / "last.pt")
    messages = []
    result = _fit(data, out, epochs=3, messages=messages)
    assert any("last.pt is corrupt" in m and "trying the previous one" in m for m in messages), messages
    assert any(m.startswith("resumed from") and "last.prev.pt at epoch 1" in m for m in messages), messages
    assert result.epochs_run == 3 and [h["epoch"] for h in result.history] == [1, 2, 3]
    # resumed at epoch 1, so epochs 2 and 3 are the uninterrupted run's, exactly
    assert [h["val/mpjpe"] for h in result.history] == [h["val/mpjpe"] for h in straight.history]
    assert load_checkpoint(out / "last.pt")["epoch"] == 3


def test_training_with_both_checkpoints_bad_starts_afresh_and_finishes(data, tmp_path):
    out = tmp_path / "run"
    _fit(data, out, epochs=2)
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:1000])  # truncated
    _flip_weight_byte(out / "last.prev.pt")
    messages = []
    result = _fit(data, out, epochs=2, messages=messages)
    assert any("training starts afresh" in m for m in messages), messages
    assert not any(m.startswith("resumed from") for m in messages)
    assert result.epochs_run == 2 and len(result.history) == 2
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


def test_ctrl_c_during_a_checkpoint_write_arrives_after_it(tmp_path):
    """SIGINT inside signals_deferred is held: the block finishes, then KeyboardInterrupt."""
    import os
    import signal

    from hummuss.checkpoint import signals_deferred

    finished = []
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # earlier tests may leave another
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                finished.append("write")
        assert finished == ["write"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outer)
