"""HumMUSS network: presets, parameter budget, exactness of the three modes, causality,
training signal and input checks."""

import pytest
import torch

from hummuss.fusion import Aggregate
from hummuss.gdssm import GDSSM
from hummuss.model import HumMUSS, HumMUSSConfig


@pytest.fixture(scope="module")
def causal_cpu():
    torch.manual_seed(0)
    return HumMUSS(HumMUSSConfig.preset("cpu", causal=True)).eval()


@pytest.fixture(scope="module")
def long_input():
    return torch.randn(1, 500, 17, 3, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("preset, expected", [
    ("paper-bidirectional", 15_063_821),
    ("paper-causal", 16_030_221),
])
def test_paper_presets_land_at_16m_parameters(preset, expected):
    model = HumMUSS(HumMUSSConfig.preset(preset))
    n = model.num_parameters()
    assert n == expected  # the layout documented in hummuss/model.py
    assert abs(n - 16.0e6) <= 1.0e6
    assert sum(model.parameter_breakdown().values()) == n


def test_presets_follow_the_supplement():
    bi, causal = HumMUSSConfig.preset("paper-bidirectional"), HumMUSSConfig.preset("paper-causal")
    for cfg in (bi, causal):
        assert (cfg.dim, cfg.dim_rep, cfg.depth, cfg.state_size) == (256, 512, 5, 128)
        assert (cfg.spatial_channels, cfg.temporal_channels) == (1, 2)
        assert (cfg.init, cfg.gdssm_aggregation, cfg.stream_fusion) == ("lin", "gate", "learned")
    assert (bi.expand, bi.causal) == (2.5, False)
    assert (causal.expand, causal.causal) == (3.0, True)


def test_block_widths_follow_m_and_k():
    model = HumMUSS(HumMUSSConfig.preset("paper-causal"))
    layer = model.layers[0]
    assert layer.spatial_st.width == 768 and layer.spatial_st.bidirectional
    assert not layer.temporal_st.bidirectional
    assert layer.temporal_st.ssm_f.out_channels == 2 and layer.spatial_st.ssm_f.out_channels == 1
    assert layer.temporal_st.ssm_f.modes == 64


def test_shapes_and_representation(causal_cpu):
    x = torch.randn(2, 9, 17, 3)
    with torch.no_grad():
        assert causal_cpu(x).shape == (2, 9, 17, 3)
        rep = causal_cpu.representation(x)
    assert rep.shape == (2, 9, 17, 128)
    assert rep.abs().max() <= 1.0  # tanh


def test_convolution_recurrence_and_scan_agree(causal_cpu, long_input):
    with torch.no_grad():
        conv = causal_cpu(long_input)
        scan = causal_cpu(long_input, dt=torch.ones(1, 500))
        stream = causal_cpu.stream(batch_size=1)
        rec = torch.stack([stream.step(long_input[:, t]) for t in range(500)], 1)
    assert (conv - scan).abs().max() <= 1e-4
    assert (conv - rec).abs().max() <= 1e-4
    assert conv.abs().max() > 1e-2  # a real signal, not zeros


def test_causal_model_ignores_the_future(causal_cpu, long_input):
    changed = long_input.clone()
    changed[:, 300] += 1.0
    with torch.no_grad():
        a, b = causal_cpu(long_input), causal_cpu(changed)
    assert (a[:, :300] - b[:, :300]).abs().max() <= 1e-5
    assert (a[:, 300:] - b[:, 300:]).abs().max() > 1e-3


def test_bidirectional_model_sees_the_future(long_input):
    torch.manual_seed(0)
    model = HumMUSS(HumMUSSConfig.preset("cpu")).eval()
    changed = long_input.clone()
    changed[:, 300] += 1.0
    with torch.no_grad():
        a, b = model(long_input), model(changed)
    assert (a[:, :300] - b[:, :300]).abs().max() > 1e-5


def test_dt_scale_changes_only_temporal_dynamics(causal_cpu):
    x = torch.randn(1, 20, 17, 3)
    with torch.no_grad():
        same = causal_cpu(x, dt_scale=1.0)
        slow = causal_cpu(x, dt_scale=2.0)
        via_dt = causal_cpu(x, dt=torch.full((1, 20), 2.0))
        one = causal_cpu(x[:, :1], dt_scale=2.0)
    assert (same - slow).abs().max() > 1e-4
    assert (slow - via_dt).abs().max() < 1e-5
    # one frame from a zero state: the step still scales the input's hold time
    assert one.shape == (1, 1, 17, 3)


@pytest.mark.parametrize("aggregation", ["gate", "mean", "learned"])
def test_gradients_reach_every_parameter(aggregation):
    torch.manual_seed(0)
    cfg = HumMUSSConfig.preset("smoke", gdssm_aggregation=aggregation, stream_fusion=aggregation)
    model = HumMUSS(cfg)
    model(torch.randn(2, 12, 17, 3)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not missing


def test_loss_halves_within_200_steps():
    torch.manual_seed(0)
    model = HumMUSS(HumMUSSConfig.preset("cpu"))
    x = torch.randn(2, 27, 17, 3)
    target = torch.randn(2, 27, 17, 3) * 0.3 + x.mean(dim=(1, 2), keepdim=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    losses = []
    for _ in range(200):
        loss = (model(x) - target).norm(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < losses[0] / 2:
            break
    assert losses[-1] < losses[0] / 2, f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps"


def test_aggregations_compute_what_they_say():
    a, b, c = (torch.randn(3, 5) for _ in range(3))
    assert torch.allclose(Aggregate("gate", 3, 5)(a, b, c), a * b * c)
    assert torch.allclose(Aggregate("mean", 3, 5)(a, b, c), (a + b + c) / 3)
    learned = Aggregate("learned", 3, 5)
    assert torch.allclose(learned(a, b, c), (a + b + c) / 3, atol=1e-6)  # equal weights at init
    with torch.no_grad():
        learned.weights.bias.copy_(torch.tensor([10.0, 0.0, 0.0]))
    assert torch.allclose(learned(a, b, c), a, atol=1e-3)


def test_aggregations_write_into_out_without_autograd():
    """`out=` (evaluation in channel groups writes each group's result into its rows)."""
    a, b, c = (torch.randn(3, 5) for _ in range(3))
    with torch.no_grad():
        for kind, n, expected in (("gate", 3, a * b * c), ("gate", 2, a * b), ("mean", 3, (a + b + c) / 3),
                                  ("mean", 1, a), ("gate", 1, a)):
            buf = torch.full((2, 3, 5), float("nan"))
            res = Aggregate(kind, n, 5)(*(a, b, c)[:n], out=buf[1])
            assert res.data_ptr() == buf[1].data_ptr() and torch.allclose(buf[1], expected)
            assert buf[0].isnan().all()  # nothing written outside `out`
            assert (a, b, c)[0] is a and torch.isfinite(a).all()
        with pytest.raises(ValueError, match="gate and mean"):
            Aggregate("learned", 3, 5)(a, b, c, out=torch.empty(3, 5))
    with pytest.raises(ValueError, match="without autograd"):
        Aggregate("gate", 3, 5)(a, b, c, out=torch.empty(3, 5))


def test_causal_gdssm_block_steps_like_its_convolution():
    torch.manual_seed(0)
    block = GDSSM(8, expand=2, state_size=8, ssm_channels=2, bidirectional=False, temporal=True).eval()
    x = torch.randn(3, 30, 8)
    with torch.no_grad():
        whole = block(x)
        state, ys = block.initial_state(3), []
        for t in range(30):
            y, state = block.step(x[:, t], state)
            ys.append(y)
    assert (torch.stack(ys, 1) - whole).abs().max() < 1e-5
    with pytest.raises(ValueError, match="cannot stream"):
        GDSSM(8, bidirectional=True).initial_state(1)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 10, 16, 3), r"shape \(batch, frames, 17, 3\)"),
    (torch.zeros(10, 17, 3), r"shape \(batch, frames, 17, 3\)"),
    (torch.zeros(1, 10, 17, 2), r"shape \(batch, frames, 17, 3\)"),
    (torch.full((1, 4, 17, 3), float("nan")), "NaN"),
])
def test_bad_input_is_named(causal_cpu, bad, message):
    with pytest.raises(ValueError, match=message):
        causal_cpu(bad)


def test_bad_steps_are_named(causal_cpu):
    x = torch.zeros(1, 4, 17, 3)
    with pytest.raises(ValueError, match="dt_scale must be > 0"):
        causal_cpu(x, dt_scale=0.0)
    with pytest.raises(ValueError, match=r"dt must have shape \(batch, frames\)"):
        causal_cpu(x, dt=torch.ones(4))
    with pytest.raises(ValueError, match="dt must be finite and > 0"):
        causal_cpu(x, dt=torch.zeros(1, 4))


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="large"), "unknown HumMUSSConfig preset 'large'; known: paper-bidirectional, paper-causal, cpu, smoke"),
    (dict(name="cpu", gdssm_aggregation="max"), "unknown gdssm_aggregation 'max'; known: gate, mean, learned"),
    (dict(name="cpu", stream_fusion="sum"), "unknown stream_fusion 'sum'; known: gate, mean, learned"),
    (dict(name="cpu", init="hippo"), "unknown init 'hippo'"),
    (dict(name="cpu", widht=3), "unknown HumMUSSConfig field.s. widht"),
    (dict(name="cpu", state_size=7), "state_size must be even"),
])
def test_bad_config_is_named(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        HumMUSSConfig.preset(name, **kwargs)


def test_macs_per_frame_counts_the_streaming_step():
    cfg = HumMUSSConfig.preset("paper-causal")
    macs = HumMUSS(cfg).macs_per_frame()
    J, D, H, M = 17, 256, 768, 64
    linear_per_layer = 4 * J * 3 * D * H  # 4 blocks x (proj_id, proj_in, proj_out)
    assert linear_per_layer * 5 < macs < 1.2 * linear_per_layer * 5 + 5 * 2 * J * H * 6 * M * 3
    # the streaming cost does not grow with the context
    assert HumMUSS(cfg).macs_per_frame(10_000) == macs


def test_chunked_evaluation_equals_one_pass(monkeypatch, causal_cpu, long_input):
    import hummuss.gdssm as gdssm

    x = long_input[:, :60]
    with torch.no_grad():
        whole = causal_cpu(x)
        monkeypatch.setattr(gdssm, "CHUNK_TOKENS", 100)  # spatial: 5 frames, temporal: 1 joint
        chunked = causal_cpu(x)
        scan = causal_cpu(x, dt=torch.ones(1, 60))
    assert (whole - chunked).abs().max() < 1e-6
    assert (whole - scan).abs().max() < 1e-4


def test_layer_keeps_its_batch_first_interface():
    torch.manual_seed(0)
    model = HumMUSS(HumMUSSConfig.preset("smoke")).eval()
    layer, x = model.layers[0], torch.randn(2, 7, 17, 16)
    with torch.no_grad():
        frame_major = layer.forward_frames(x.transpose(0, 1).contiguous()).transpose(0, 1)
        by_block = layer.fuse(layer.run_temporal(layer.temporal_st, layer.run_spatial(layer.spatial_st, x), 1.0, None),
                              layer.run_spatial(layer.spatial_ts, layer.run_temporal(layer.temporal_ts, x, 1.0, None)))
        assert torch.allclose(layer(x), frame_major, atol=1e-6)
    assert torch.allclose(by_block, frame_major, atol=1e-5)


@pytest.mark.parametrize("kind", ["gate", "mean", "learned"])
def test_aggregation_on_channel_major_tensors(kind):
    g = torch.Generator().manual_seed(0)
    agg = Aggregate(kind, 3, 5)
    with torch.no_grad():
        if kind == "learned":
            agg.weights.weight.normal_(generator=g)
    xs = [torch.randn(4, 6, 5, generator=g) for _ in range(3)]  # (..., width)
    token_major = agg(*xs)
    channel_major = agg(*[x.permute(2, 0, 1).contiguous() for x in xs], dim=0)
    assert torch.allclose(channel_major.permute(1, 2, 0), token_major, atol=1e-6)


def test_center_input_makes_the_model_blind_to_where_the_root_is_in_the_image():
    torch.manual_seed(0)
    centred = HumMUSS(HumMUSSConfig.preset("smoke", center_input=True)).eval()
    absolute = HumMUSS(HumMUSSConfig.preset("smoke")).eval()
    absolute.load_state_dict(centred.state_dict())
    x = torch.randn(2, 12, 17, 3)
    shift = torch.zeros_like(x)
    shift[..., :2] = torch.randn(2, 12, 1, 2)  # each frame's whole skeleton moved in the image
    with torch.no_grad():
        assert torch.allclose(centred(x), centred(x + shift), atol=1e-6)
        assert not torch.allclose(absolute(x), absolute(x + shift), atol=1e-3)
        # centring by hand, then the absolute model: the same numbers
        manual = x.clone()
        manual[..., :2] -= x[..., :1, :2]
        assert torch.allclose(centred(x), absolute(manual), atol=1e-6)


@pytest.mark.parametrize("n, k", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_mix_gate_matches_its_formula_and_gradients(n, k):
    """MixGate (training's fused mix + gate) = x_id prod_i (b_i + sum_c w_ic GELU(y_ic)),
    written out here with erf; its hand-written backward against float64 finite differences."""
    from hummuss.fusion import MixGate

    g = torch.Generator().manual_seed(n * 10 + k)
    H, P, L, Q = 3, 2, 4, 2
    y = torch.randn(H, P, n * k, L, Q, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(H, n, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(H, n, generator=g, dtype=torch.float64, requires_grad=True)
    x_id = torch.randn(H, P, L, Q, generator=g, dtype=torch.float64, requires_grad=True)
    gelu = y * 0.5 * (1 + torch.erf(y / 2 ** 0.5))
    expected = x_id.clone()
    for i in range(n):
        path = b[:, i].view(H, 1, 1, 1) + sum(w[:, i, c].view(H, 1, 1, 1) * gelu[:, :, i * k + c] for c in range(k))
        expected = expected * path
    assert torch.allclose(MixGate.apply(y, w, b, x_id), expected, atol=1e-12)
    assert torch.autograd.gradcheck(MixGate.apply, (y, w, b, x_id))


def test_macs_per_frame_counts_first_order_holds_extra_update():
    """foh's state update adds dB_prev u_{t-1} (complex * real, 2 MACs) per mode: paper-causal
    has 5 layers x 2 temporal blocks x 17 joints x 1 direction x H = 768 channels x M = 64."""
    zoh = HumMUSS(HumMUSSConfig.preset("paper-causal")).macs_per_frame()
    foh = HumMUSS(HumMUSSConfig.preset("paper-causal", discretization="foh")).macs_per_frame()
    assert foh - zoh == 5 * 2 * 17 * 768 * 2 * 64


@pytest.mark.parametrize("aggregation", ["gate", "mean"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("frames", [17, 100])  # a Toeplitz and an FFT convolution
def test_evaluation_in_channel_groups_equals_the_training_route(monkeypatch, aggregation, bidirectional, frames):
    """Evaluation with an elementwise aggregation runs channel group by channel group
    (`GDSSM._grouped`); with groups of 3 of 10 channels (an uneven last one) it gives what
    the training route (autograd on, whole tensors) gives."""
    import hummuss.ssm.fft_conv as conv

    torch.manual_seed(0)
    block = GDSSM(4, expand=2.5, state_size=8, ssm_channels=2, bidirectional=bidirectional,
                  aggregation=aggregation, temporal=True)
    x = torch.randn(1, frames, 3, 4)  # (P, L, Q, D)
    trained = block(x)  # autograd on: the training route
    op = block._operator(frames, "rows", 1.0)
    R, Q = 2 * (1 + bidirectional), 3
    # bytes per channel: its spectra (R (n/2+1) Q complex) or its Toeplitz outputs (R L Q floats)
    per_channel = R * (op.n_fft // 2 + 1) * Q * 8 if op.kind == "fft" else R * frames * Q * 4
    monkeypatch.setattr(conv, "FFT_CHUNK_BYTES", 3 * per_channel)
    assert op.channel_group(1, Q) == 3
    with torch.no_grad():
        grouped = block(x)
    assert (grouped - trained).abs().max() < 1e-5
