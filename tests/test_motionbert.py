"""MotionBERT (DSTformer) baseline: sizes, keys, init, checkpoints, inputs, windows, streaming, MACs."""

import zipfile

import numpy as np
import pytest
import torch

from hummuss.baselines.attention import Attention
from hummuss.baselines.motionbert import (
    MotionBERT,
    MotionBERTConfig,
    config_from_state_dict,
    load_motionbert_checkpoint,
)
from hummuss.windows import sliding_window_forward, window_starts
from hummuss.zoo import build_model


def _model(preset="smoke", seed=0, **overrides):
    torch.manual_seed(seed)
    return MotionBERT(MotionBERTConfig.preset(preset, **overrides)).eval()


def _input(B=2, T=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 17, 3, generator=g)


@pytest.fixture(scope="module")
def lite():
    return _model("lite")


# ------------------------------------------------------------------ config


def test_presets_and_overrides():
    assert MotionBERTConfig.presets() == ["full", "lite", "cpu", "cpu-full", "smoke"]
    full, lite = MotionBERTConfig.preset("full"), MotionBERTConfig.preset("lite")
    assert (full.dim_feat, full.mlp_ratio, lite.dim_feat, lite.mlp_ratio) == (512, 2.0, 256, 4.0)
    for c in (full, lite):
        assert (c.depth, c.num_heads, c.dim_rep, c.maxlen, c.num_joints) == (5, 8, 512, 243, 17)
    assert MotionBERTConfig.preset("lite", maxlen=81).maxlen == 81
    assert MotionBERTConfig(**lite.to_dict()) == lite
    assert MotionBERTConfig.from_dict(lite.to_dict()) == lite
    assert lite.replace(depth=2).depth == 2 and lite.depth == 5
    with pytest.raises(ValueError, match="must be a positive int, got 0"):
        lite.replace(depth=0)
    with pytest.raises(ValueError, match=r"unknown MotionBERTConfig preset 'huge'; known: full, lite, cpu, cpu-full, smoke"):
        MotionBERTConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown MotionBERTConfig field.s. dim_model"):
        MotionBERTConfig.preset("lite", dim_model=3)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MotionBERTConfig.preset("lite", num_heads=7)


def _meta_model(preset):
    """Shapes only (no memory, no init): enough to count parameters and MACs."""
    with torch.device("meta"):
        return MotionBERT(MotionBERTConfig.preset(preset))


def test_exact_parameter_counts(lite):
    assert lite.num_parameters() == 16_001_549
    assert _meta_model("lite").num_parameters() == 16_001_549
    assert _meta_model("full").num_parameters() == 42_466_317
    assert MotionBERT.continuous_time is False
    assert build_model("motionbert", "smoke").num_parameters() == _model("smoke").num_parameters()


def test_state_dict_keys_are_the_originals(lite):
    sd = lite.state_dict()
    shapes = {
        "temp_embed": (1, 243, 1, 256),
        "pos_embed": (1, 17, 256),
        "joints_embed.weight": (256, 3),
        "blocks_st.0.attn_s.qkv.weight": (768, 256),
        "blocks_st.0.attn_s.qkv.bias": (768,),
        "blocks_st.0.attn_t.proj.weight": (256, 256),
        "blocks_ts.4.mlp_t.fc1.weight": (1024, 256),
        "blocks_ts.4.norm2_s.bias": (256,),
        "ts_attn.0.weight": (2, 512),
        "ts_attn.4.bias": (2,),
        "norm.weight": (256,),
        "pre_logits.fc.weight": (512, 256),
        "head.weight": (3, 512),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    # 2 embeddings + joints_embed 2 + 10 blocks x 24 + norm 2 + pre_logits 2 + head 2 + ts_attn 10
    assert len(sd) == 2 + 2 + 240 + 2 + 2 + 2 + 10
    assert list(sd)[:4] == ["temp_embed", "pos_embed", "joints_embed.weight", "joints_embed.bias"]


def test_faithful_init(lite):
    qkv = lite.blocks_st[2].attn_t.qkv.weight
    assert abs(qkv.std().item() - 0.02) < 0.0005
    assert abs(lite.temp_embed.std().item() - 0.02) < 0.001
    assert abs(lite.pos_embed.std().item() - 0.02) < 0.003
    assert torch.all(lite.blocks_ts[1].mlp_s.fc1.bias == 0)
    assert torch.all(lite.norm.weight == 1) and torch.all(lite.norm.bias == 0)
    assert torch.all(lite.blocks_ts[0].norm1_t.weight == 1) and lite.blocks_ts[0].norm1_t.eps == 1e-6
    for lin in lite.ts_attn:
        assert torch.all(lin.weight == 0) and torch.all(lin.bias == 0.5)


def test_fusion_starts_at_exactly_half():
    model = _model("cpu")
    seen = []
    for lin in model.ts_attn:
        lin.register_forward_hook(lambda m, i, o: seen.append(o.softmax(dim=-1)))
    x = _input(T=9)
    model(x)
    assert len(seen) == 2
    assert all(torch.all(a == 0.5) for a in seen)


# ------------------------------------------------------------------ attention semantics


def test_attention_mixes_the_right_axis():
    torch.manual_seed(0)
    B, F, J, d = 2, 5, 17, 16
    x = torch.randn(B * F, J, d)
    x2 = x.clone().view(B, F, J, d)
    x2[1, 3, 7] += 1.0  # perturb joint 7 of frame 3 of sample 1
    x2 = x2.view(B * F, J, d)
    for mode in ("spatial", "temporal"):
        att = Attention(d, 4, mode).eval()
        diff = (att(x2, F) - att(x, F)).view(B, F, J, d).abs().sum(-1) > 0  # (B, F, J)
        assert not diff[0].any()  # other samples untouched
        if mode == "spatial":  # all joints of frame 3 change, no other frame
            assert diff[1, 3].all() and diff[1].sum() == J
        else:  # all frames of joint 7 change, no other joint
            assert diff[1, :, 7].all() and diff[1].sum() == F


def test_temporal_attention_matches_the_original_qkv_layout():
    """Rows of qkv are [q; k; v], each split head-major; temporal attention over frames."""
    torch.manual_seed(0)
    B, F, J, d, H = 1, 6, 17, 8, 2
    c = d // H
    att = Attention(d, H, "temporal").eval()
    x = torch.randn(B * F, J, d)
    qkv = att.qkv(x).view(B, F, J, 3, H, c)
    q, k, v = qkv.unbind(3)  # (B, F, J, H, c)
    w = torch.einsum("bfjhc,bgjhc->bjhfg", q, k) * c ** -0.5
    out = torch.einsum("bjhfg,bgjhc->bfjhc", w.softmax(-1), v).reshape(B * F, J, d)
    assert torch.allclose(att(x, F), att.proj(out), atol=1e-6)


# ------------------------------------------------------------------ forward and inputs


@pytest.mark.parametrize("T", [1, 27, 243])
def test_output_shapes(T):
    model = _model()
    x = _input(B=2, T=T)
    with torch.no_grad():
        assert model(x).shape == (2, T, 17, 3)
        assert model.representation(x).shape == (2, T, 17, 512)
        assert torch.equal(model(x, dt_scale=1.0), model(x))
        assert torch.equal(model(x, dt=torch.ones(2, T)), model(x))


def test_bad_inputs_are_named():
    model = _model()
    x = _input(T=4)
    cases = [
        (x[0], "got 3-D shape"),
        (x[:, :, :16], "expected 17 joints at dim 2, got 16"),
        (x[..., :2], "expected 3 channels"),
        (_input(T=244), "maxlen is 243.*sliding"),
    ]
    nan, inf = x.clone(), x.clone()
    nan[0, 1, 2, 0] = float("nan")
    inf[1, 0, 0, 1] = float("inf")
    cases += [(nan, "NaN or inf"), (inf, "NaN or inf")]
    for bad, msg in cases:
        with pytest.raises(ValueError, match=msg):
            model(bad)
    for kwargs in ({"dt_scale": 2.0}, {"dt": torch.full((2, 4), 0.5)}):
        with pytest.raises(ValueError, match="no notion of time step"):
            model(x, **kwargs)


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_is_exact(tmp_path):
    src, dst = _model("cpu", seed=0), _model("cpu", seed=1)
    x = _input(T=20)
    with torch.no_grad():
        assert not torch.equal(src(x), dst(x))
    path = tmp_path / "best_epoch.bin"
    src.save_motionbert_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert list(raw) == ["model_pos"]
    assert list(raw["model_pos"]) == ["module." + k for k in src.state_dict()]
    assert dst.load_motionbert_checkpoint(path) is dst
    fresh = load_motionbert_checkpoint(path, num_heads=4).eval()  # config read off the shapes
    assert fresh.config.replace(init=src.config.init) == src.config  # the init is not in the weights
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))
        assert torch.equal(fresh(x), src(x))


def test_original_train_py_layout_loads(tmp_path):
    """train.py saves epoch, lr, optimizer, model_pos and min_loss (a numpy float64)."""
    src = _model("smoke")
    opt = torch.optim.AdamW(src.parameters(), lr=2e-4)
    src(_input(T=3)).sum().backward()
    opt.step()
    state = {"module." + k: v for k, v in src.state_dict().items()}
    ck = {"epoch": 7, "lr": 2e-4, "optimizer": opt.state_dict(), "model_pos": state,
          "min_loss": np.mean(np.array([39.0, 39.4]))}
    torch.save(ck, tmp_path / "latest_epoch.bin")
    dst = _model("smoke", seed=3).load_motionbert_checkpoint(tmp_path / "latest_epoch.bin")
    assert all(torch.equal(a, b) for a, b in zip(dst.state_dict().values(), src.state_dict().values(), strict=True))


def test_numpy1_pickled_checkpoint_loads(tmp_path):
    """Released checkpoints were pickled under numpy 1, whose scalars live in numpy.core."""
    src = _model("smoke")
    ck = {"model_pos": {"module." + k: v for k, v in src.state_dict().items()},
          "min_loss": np.float64(37.2)}
    torch.save(ck, tmp_path / "np2.bin")
    with zipfile.ZipFile(tmp_path / "np2.bin") as zin, zipfile.ZipFile(tmp_path / "np1.bin", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray\nscalar" in data
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
            zout.writestr(info, data)
    dst = _model("smoke", seed=5).load_motionbert_checkpoint(tmp_path / "np1.bin")
    assert torch.equal(dst.head.weight, src.head.weight)


def _save_state(path, state):
    torch.save({"model_pos": {"module." + k: v for k, v in state.items()}}, path)


def test_checkpoint_errors_name_the_key(tmp_path):
    model = _model()
    good = model.state_dict()

    renamed = dict(good)
    renamed["blocks_st.0.attn_s.qkv_renamed.weight"] = renamed.pop("blocks_st.0.attn_s.qkv.weight")
    _save_state(tmp_path / "renamed.bin", renamed)
    with pytest.raises(ValueError) as err:
        model.load_motionbert_checkpoint(tmp_path / "renamed.bin")
    assert "missing keys: blocks_st.0.attn_s.qkv.weight" in str(err.value)
    assert "unexpected keys: blocks_st.0.attn_s.qkv_renamed.weight" in str(err.value)

    missing = {k: v for k, v in good.items() if k != "ts_attn.0.bias"}
    _save_state(tmp_path / "missing.bin", missing)
    with pytest.raises(ValueError, match=r"missing keys: ts_attn\.0\.bias$"):
        model.load_motionbert_checkpoint(tmp_path / "missing.bin")

    wrong = dict(good)
    wrong["head.weight"] = torch.zeros(3, 256)
    _save_state(tmp_path / "wrong.bin", wrong)
    with pytest.raises(ValueError, match=r"wrong shapes: head\.weight \(checkpoint \(3, 256\), model \(3, 512\)\)"):
        model.load_motionbert_checkpoint(tmp_path / "wrong.bin")
    # nothing was loaded by the failed attempts
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), good.values(), strict=True))


def test_unreadable_checkpoints_fail_clearly(tmp_path):
    model = _model()
    torch.save([1, 2, 3], tmp_path / "list.bin")
    with pytest.raises(ValueError, match="holds a list; expected a dict with a 'model_pos'"):
        model.load_motionbert_checkpoint(tmp_path / "list.bin")

    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nomodel.bin")
    with pytest.raises(ValueError, match="no 'model_pos' entry; top-level keys: epoch, lr"):
        model.load_motionbert_checkpoint(tmp_path / "nomodel.bin")

    model.save_motionbert_checkpoint(tmp_path / "full.bin")
    data = (tmp_path / "full.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not read MotionBERT checkpoint .*cut.bin"):
        model.load_motionbert_checkpoint(tmp_path / "cut.bin")

    with pytest.raises(FileNotFoundError, match="nothere.bin"):
        model.load_motionbert_checkpoint(tmp_path / "nothere.bin")


class _Payload:  # an arbitrary pickled object: weights_only loading must refuse it
    pass


def test_loading_uses_weights_only(tmp_path, monkeypatch):
    model = _model()
    torch.save({"model_pos": {}, "evil": _Payload()}, tmp_path / "evil.bin")
    with pytest.raises(ValueError, match="weights_only=True"):
        model.load_motionbert_checkpoint(tmp_path / "evil.bin")

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model.save_motionbert_checkpoint(tmp_path / "ok.bin")
    model.load_motionbert_checkpoint(tmp_path / "ok.bin")
    assert calls and all(c.get("weights_only") is True for c in calls)


def test_config_from_state_dict_needs_a_dstformer():
    with pytest.raises(ValueError, match="not a DSTformer"):
        config_from_state_dict({"foo": torch.zeros(1)})


# ------------------------------------------------------------------ sliding windows


def test_window_starts():
    assert window_starts(10, 4) == [0, 4, 6]
    assert window_starts(10, 4, stride=3) == [0, 3, 6]
    assert window_starts(12, 4) == [0, 4, 8]
    assert window_starts(3, 4) == [0]
    with pytest.raises(ValueError, match="stride must be in"):
        window_starts(10, 4, stride=5)
    with pytest.raises(ValueError, match="window must be >= 1"):
        window_starts(10, 0)


def test_sliding_window_averages_overlaps():
    # a "model" answering, for every frame, the index of its window's first frame
    x = torch.arange(10.0).view(1, 10, 1, 1).expand(1, 10, 17, 3)

    def first_frame(w):
        return w[:, :1].expand_as(w)

    y = sliding_window_forward(first_frame, x, window=4)  # windows start at 0, 4, 6
    expected = torch.tensor([0, 0, 0, 0, 4, 4, 5, 5, 6, 6.0])  # frames 6, 7 averaged over 4 and 6
    assert torch.equal(y[0, :, 0, 0], expected)
    y = sliding_window_forward(first_frame, x, window=4, stride=2)  # starts 0, 2, 4, 6
    assert torch.equal(y[0, :, 5, 1], torch.tensor([0, 0, 1, 1, 3, 3, 5, 5, 6, 6.0]))


def test_sliding_window_runs_motionbert_beyond_maxlen():
    model = _model()
    x = _input(B=1, T=300)
    with torch.no_grad():
        y = sliding_window_forward(model, x, window=243)  # windows at 0 and 57
        assert y.shape == (1, 300, 17, 3)
        assert torch.equal(y[:, :57], model(x[:, :243])[:, :57])
        assert torch.equal(y[:, 243:], model(x[:, 57:])[:, 186:])
        both = (model(x[:, :243])[:, 57:] + model(x[:, 57:])[:, :186]) / 2
        assert torch.allclose(y[:, 57:243], both, atol=1e-6)
        assert torch.equal(sliding_window_forward(model, x[:, :50], window=243), model(x[:, :50]))


# ------------------------------------------------------------------ streaming


def test_stream_equals_last_frame_of_windows():
    model = _model()
    x = _input(B=2, T=14)
    window = 5
    s = model.stream(window=window)
    with torch.no_grad():
        for t in range(14):
            y_t = s.step(x[:, t])
            expected = model(x[:, max(0, t - window + 1): t + 1])[:, -1]
            assert y_t.shape == (2, 17, 3)
            assert torch.equal(y_t, expected), t
        s.reset()
        assert s.frames_seen == 0
        assert torch.equal(s.step(x[:, 3]), model(x[:, 3:4])[:, -1])
        s.prefill(x[:, :9])  # as if frames 0..8 had been stepped
        assert s.frames_seen == 9
        assert torch.equal(s.step(x[:, 9]), model(x[:, 5:10])[:, -1])


def test_stream_checks():
    model = _model()
    assert model.stream().window == 243
    with pytest.raises(ValueError, match="window must be in"):
        model.stream(window=244)
    s = model.stream(window=4, batch_size=2)
    with pytest.raises(ValueError, match="batch size 2"):
        s.step(_input(B=1, T=1)[:, 0])
    with pytest.raises(ValueError, match="one frame of shape"):
        s.step(_input(B=2, T=2))
    with pytest.raises(ValueError, match="no notion of time step"):
        s.step(_input(B=2, T=1)[:, 0], dt=2.0)


# ------------------------------------------------------------------ compute


def test_macs_per_frame(lite):
    lite_macs = lite.macs_per_frame(243)
    full_macs = _meta_model("full").macs_per_frame(243)
    print(f"MACs/frame at 243 frames: lite {lite_macs:,} full {full_macs:,}")
    assert abs(lite_macs - 0.29e9) / 0.29e9 < 0.10
    assert abs(full_macs - 0.76e9) / 0.76e9 < 0.10
    # only the temporal attention term depends on the clip length: 17 joints x 10 blocks x 2 F d
    assert lite.macs_per_frame() == lite_macs  # default: a full clip of maxlen frames
    assert lite.macs_per_frame(243) - lite.macs_per_frame(27) == 17 * 10 * 2 * (243 - 27) * 256
    with pytest.raises(ValueError, match="maxlen=243"):
        lite.macs_per_frame(244)


def test_small_data_init_starts_every_block_as_the_identity():
    """With init="small-data" the network at init is embed -> norm -> pre_logits -> head, computed
    here by hand; the original init is DSTformer's (temp_embed random, residual branches live)."""
    torch.manual_seed(0)
    model = MotionBERT(MotionBERTConfig.preset("cpu")).eval()
    assert model.config.init == "small-data"
    assert torch.count_nonzero(model.temp_embed) == 0
    x = torch.randn(2, 9, 17, 3)
    with torch.no_grad():
        tokens = model.joints_embed(x) + model.pos_embed  # (2, 9, 17, d)
        expected = model.head(torch.tanh(model.pre_logits.fc(model.norm(tokens))))
        np.testing.assert_allclose(model(x).numpy(), expected.numpy(), atol=1e-5)
    original = MotionBERT(MotionBERTConfig.preset("cpu", init="original"))
    assert 0.015 < float(original.temp_embed.std()) < 0.025
    assert torch.count_nonzero(original.blocks_st[0].mlp_s.fc2.weight) > 0
    with pytest.raises(ValueError, match="init must be original or small-data"):
        MotionBERTConfig(init="xavier")
