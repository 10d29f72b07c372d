"""Reference floors: the mean pose and the per-frame linear lift, fitted in closed form."""

import numpy as np
import pytest
import torch

from hummuss.data import open_source
from hummuss.data.clips import Sequence
from hummuss.evaluate import EvalConfig, evaluate
from hummuss.floors import FLOORS, fit_floor, fit_linear_lift, fit_mean_pose


class _Source:
    """A hand-made source: sequences given directly, millimetres per unit fixed."""

    name = "hand"

    def __init__(self, train, test):
        self._seqs = {"train": train, "test": test}

    def sequences(self, split, rate=1.0):
        return self._seqs[split]


def _seq(inputs, labels, mm=1000.0):
    n = len(inputs)
    return Sequence(inputs.astype(np.float32), labels.astype(np.float32), 30.0, np.arange(n) / 30.0,
                    extras={"mm_per_unit": np.full(n, mm)})


def _random_pose(rng, n):
    return rng.normal(size=(n, 17, 3))


def test_linear_lift_recovers_an_exact_affine_map():
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(34, 51)), rng.normal(size=51)

    def labels_of(x):  # an affine function of the root-relative 2D, root at 0 in 3D
        uv = (x[..., :2] - x[..., :1, :2]).reshape(len(x), -1)
        y = (uv @ W + b).reshape(len(x), 17, 3)
        return y - y[:, :1]

    train_x, test_x = _random_pose(rng, 400), _random_pose(rng, 50)
    lift = fit_linear_lift(train_x, labels_of(train_x))
    pred = lift(torch.as_tensor(test_x, dtype=torch.float32)[None])[0].numpy()
    pred -= pred[:, :1]
    np.testing.assert_allclose(pred, labels_of(test_x), atol=1e-3)


def test_mean_pose_is_the_root_relative_mean_and_its_error_by_hand():
    rng = np.random.default_rng(1)
    train_y, test_y = _random_pose(rng, 60), _random_pose(rng, 40)
    train_y[:, 0] += 5.0  # the root moves: the floor is root-relative
    floor = fit_mean_pose(np.zeros_like(train_y), train_y)
    mean = (train_y - train_y[:, :1]).mean(axis=0)
    np.testing.assert_allclose(floor.pose.numpy(), mean, atol=1e-6)
    # evaluate scores it like a model: root-relative, in millimetres (1 unit = 1000 mm here)
    src = _Source([_seq(np.zeros_like(train_y), train_y)], [_seq(np.zeros_like(test_y), test_y)])
    table = evaluate(floor, src, EvalConfig(lengths=(10,), flip=False))
    got = table.query("condition == 'F_10' and metric == 'mpjpe'")["value"].item()
    rel = test_y - test_y[:, :1]
    expected = 1000.0 * np.linalg.norm(rel - (mean - mean[:1]), axis=-1).mean()
    assert got == pytest.approx(expected, rel=1e-5)


def test_floors_on_generated_data_answer_every_condition():
    src = open_source("synthetic:scale=smoke")
    cfg = EvalConfig(lengths=(27,), rates=("x2",), drops=(0.2,), rate_length=27, max_sequences=2)
    values = {}
    for name in FLOORS:
        table = evaluate(fit_floor(name, src), src, cfg)
        mpjpe = table[table.metric == "mpjpe"].set_index("condition")["value"]
        assert set(mpjpe.index) == {"F_27", "fps_x2", "fps_x2_dt", "drop_0.2", "drop_0.2_dt"}
        assert mpjpe["fps_x2"] == mpjpe["fps_x2_dt"]  # one frame at a time: the step changes nothing
        values[name] = mpjpe["F_27"]
    assert values["linear-lift"] < values["mean-pose"]
    with pytest.raises(ValueError, match="unknown floor 'median'; known: mean-pose, linear-lift"):
        fit_floor("median", src)
