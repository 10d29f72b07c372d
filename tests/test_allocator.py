"""keep_freed_memory: glibc told to keep freed blocks, once per process, by the trainer on the CPU."""

import ctypes
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hummuss import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_glibc_accepts_the_thresholds():
    allocator.keep_freed_memory.cache_clear()
    assert allocator.keep_freed_memory() is True
    # mallopt refuses values it cannot take with 0: the same call by hand is accepted too
    assert ctypes.CDLL("libc.so.6").mallopt(allocator.M_MMAP_THRESHOLD, allocator.THRESHOLD) == 1


def test_the_trainer_on_the_cpu_keeps_freed_memory(monkeypatch, tmp_path):
    from hummuss.data.clips import Clips
    from hummuss.train import TrainConfig, Trainer
    calls = []
    monkeypatch.setattr("hummuss.train.keep_freed_memory", lambda: calls.append(1) or True)
    x = np.zeros((4, 5, 17, 3), np.float32)
    clips = Clips(inputs=x, labels=x, fps=np.full(4, 50.0), meta=pd.DataFrame(index=range(4)))
    Trainer(torch.nn.Linear(3, 3), clips, None, TrainConfig(device="cpu"), tmp_path)
    assert calls == [1]
