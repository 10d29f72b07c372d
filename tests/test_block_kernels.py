"""A streaming block's step in one kernel call (`hummuss.block_kernels`) against the same
block's step op by op (`GDSSM.forward` / `GDSSM.step` with the one-call flags off)."""

import pytest
import torch
from conftest import needs_kernels

from hummuss import cpu_kernels
from hummuss.gdssm import GDSSM
from hummuss.model import HumMUSS, HumMUSSConfig
from hummuss.ssm import planar_state, stagger

pytestmark = needs_kernels


def _staggered(block, consts: dict, streams: int, frames: int = stagger.FRAMES):
    """A zero staggered state of `streams` streams for the temporal `block`, and the coefficients
    of step 1.0, as `HumMUSSStream` makes them."""
    state = stagger.initial_state(planar_state(block.initial_state(streams)), consts["planes"][0].shape[1], frames)
    dA, dB = block.ssm_f.discretise_step(1.0)
    return state, stagger.coefficients(planar_state(dA), planar_state(dB), *consts["planes"], frames)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    m = HumMUSS(HumMUSSConfig.preset("cpu", causal=True)).eval()
    with torch.no_grad():  # the norms' affine away from (1, 0), so that a kernel dropping it shows
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


def test_a_spatial_block_in_one_call_equals_its_operations(model):
    block = model.layers[1].spatial_st
    consts = block.stream_constants(17)
    assert consts["joint_block"]
    x = torch.randn(2, 17, 1, model.config.dim)
    with torch.no_grad():
        got = block(x, consts=consts)
        want = block(x, consts={**consts, "joint_block": False})
    assert got.shape == x.shape
    assert (got - want).abs().max() < 1e-5 * want.abs().max()


def test_a_temporal_block_in_one_call_equals_its_operations_frame_after_frame(model):
    block = model.layers[1].temporal_ts
    consts = block.stream_constants(17)
    assert consts["block"]
    (state, coefficients), (twin, _) = _staggered(block, consts, 17), _staggered(block, consts, 17)
    states = [state, twin]
    with torch.no_grad():
        for _ in range(2 * stagger.FRAMES + 1):  # every group advanced, twice
            x = torch.randn(17, model.config.dim)
            got, _ = block.step(x, states[0], discretised=coefficients, consts=consts)
            want, _ = block.step(x, states[1], discretised=coefficients, consts={**consts, "block": False})
            assert (got - want).abs().max() < 1e-5 * want.abs().max()
    for a, b in zip(states[0], states[1]):
        assert torch.equal(a, b) if a.dtype == torch.long else (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_the_one_call_kernels_refuse_mismatched_tensors(model):
    spatial, temporal = model.layers[0].spatial_st, model.layers[0].temporal_st
    sc, tc = spatial.stream_constants(17), temporal.stream_constants(17)
    norm, D = spatial.norm, model.config.dim
    x = torch.randn(17, D)
    args = [x, norm.weight, norm.bias, norm.eps, sc["proj"].weight, sc["proj"].bias, *sc["taps"], *sc["mix_rows"],
            sc["out"].weight, sc["out"].bias]
    assert torch.ops.hummuss_cpu.joint_block(*args).shape == (17, D)
    with pytest.raises(RuntimeError, match=r"joint_block: Wp_in"):
        torch.ops.hummuss_cpu.joint_block(*args[:4], sc["out"].weight, sc["out"].bias, *args[6:])
    with pytest.raises(RuntimeError, match=r"joint_block: ln_w"):
        torch.ops.hummuss_cpu.joint_block(x, norm.weight[:-1], *args[2:])
    state, coefficients = _staggered(temporal, tc, 17)
    with pytest.raises(RuntimeError, match=r"stagger_block_: x \(N, Dm\)"):  # 16 rows for 17 streams
        torch.ops.hummuss_cpu.stagger_block_(torch.randn(16, D), temporal.norm.weight, temporal.norm.bias, 1e-5,
                                             tc["proj"].weight, tc["proj"].bias, *state, *coefficients,
                                             temporal.ssm_f.D, *tc["mix_rows"], tc["out"].weight, tc["out"].bias)


def _jitter(block):
    with torch.no_grad():  # the norm's affine, the mix and D away from their initial values
        for p in block.parameters():
            if p.dim() == 1 or (p.dim() == 2 and p.shape[-1] <= 2):
                p.add_(0.2 * torch.randn_like(p))
    return block.eval()


# (T frames a staggered advance, read-outs k, width, expand, state size, streams): widths that are no
# multiple of the vector (partial vectors in the norm, the products and the residual), H no multiple of T
ODD_TEMPORAL = [(2, 1, 20, 2.35, 10, 51), (4, 2, 20, 2.35, 22, 17), (8, 2, 13, 3.0, 34, 34)]


@pytest.mark.parametrize("T, k, dim, expand, state_size, streams", ODD_TEMPORAL)
def test_a_temporal_block_in_one_call_equals_its_functional_step(T, k, dim, expand, state_size, streams):
    """Against the differentiable step on a complex state (nn.Linear, F.gelu, the DSSM's own
    recurrence): no kernel in common."""
    torch.manual_seed(T + k)
    block = _jitter(GDSSM(dim, expand=expand, state_size=state_size, ssm_channels=k, bidirectional=False,
                          temporal=True))
    consts = block.stream_constants(17, streams)
    assert consts["block"]
    state, coefficients = _staggered(block, consts, streams, T)
    reference = block.initial_state(streams)
    with torch.no_grad():
        for _ in range(3 * T + 1):
            x = torch.randn(streams, dim)
            got, _ = block.step(x, state, discretised=coefficients, consts=consts)
            want, reference = block.step(x, reference)
            assert (got - want).abs().max() < 2e-5 * want.abs().max()


@pytest.mark.parametrize("k, bidirectional, batch", [(1, True, 3), (2, True, 2), (2, False, 1)])
def test_a_spatial_block_in_one_call_equals_its_plain_forward(k, bidirectional, batch):
    torch.manual_seed(k)
    block = _jitter(GDSSM(20, expand=2.35, state_size=10, ssm_channels=k, bidirectional=bidirectional))
    consts = block.stream_constants(17, 17 * batch)
    assert consts["joint_block"]
    x = torch.randn(batch, 17, 1, 20)
    with torch.no_grad():
        assert (block(x, consts=consts) - block(x)).abs().max() < 2e-5 * block(x).abs().max()


@pytest.mark.parametrize("D", [256, 13])
def test_the_learned_fusion_kernel_is_its_formula_written_out(D):
    """`learned_fusion` against its formula per token in float64 with math.exp: logits from
    [a, b], their softmax, the weighted sum; rows of `a` spaced (a view), D with a vector tail."""
    import math

    g = torch.Generator().manual_seed(11)
    a = torch.randn(17, D + 5, generator=g)[:, :D]  # rows D + 5 apart
    b = torch.randn(17, D, generator=g)
    W, c = torch.randn(2, 2 * D, generator=g) / math.sqrt(D), torch.randn(2, generator=g)
    got = cpu_kernels.ops().learned_fusion(a, b, W, c)
    want = torch.empty(17, D, dtype=torch.float64)
    for t in range(17):
        row = torch.cat([a[t], b[t]]).double()
        l0, l1 = (float(W[i].double() @ row) + float(c[i]) for i in range(2))
        e0, e1 = math.exp(l0), math.exp(l1)
        want[t] = (e0 * a[t].double() + e1 * b[t].double()) / (e0 + e1)
    assert got.shape == (17, D) and got.is_contiguous()
    assert (got.double() - want).abs().max() < 2e-6


def test_the_learned_fusion_kernel_refuses_mismatched_tensors():
    a, b = torch.randn(17, 8), torch.randn(17, 8)
    fusion = cpu_kernels.ops().learned_fusion
    with pytest.raises(RuntimeError, match="W"):
        fusion(a, b, torch.randn(2, 8), torch.randn(2))
    with pytest.raises(RuntimeError, match="b"):
        fusion(a, torch.randn(16, 8), torch.randn(2, 16), torch.randn(2))
    with pytest.raises(RuntimeError, match="float32"):
        fusion(a.double(), b.double(), torch.randn(2, 16).double(), torch.randn(2).double())


def test_a_layer_in_one_call_gives_the_same_bits_with_its_streams_at_once_or_in_turn(model):
    """`stream_layer` runs a layer's two streams one a thread where ATen's pool has two, and one
    after the other (each kernel over the pool) otherwise: the same numbers either way, frame
    after frame, and the frame's calls block by block (tests/test_stream.py) are those again."""
    x = torch.randn(8, 2, 17, 3)
    outs = {}
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            s = model.stream(batch_size=2, compile=False)
            assert s._one_call and s.staggered
            outs[n] = torch.stack([s.step(f) for f in x])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[1], outs[2]) and torch.equal(outs[1], outs[3])


def test_a_layer_in_one_call_runs_both_streams_in_the_callers_mode(model):
    """The stream on the pool's second thread runs under the caller's thread-local state: under
    inference mode both outputs are inference tensors, as a call in the caller's thread makes them."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        s = model.stream(batch_size=1, compile=False)
        s.step(torch.randn(1, 17, 3))
        (sst, tst, tts, sts), eps, _ = s._plan[0]
        with torch.inference_mode():
            x_st, x_ts = cpu_kernels.ops().stream_layer(torch.randn(17, model.config.dim), sst, tst, tts, sts, eps)
    finally:
        torch.set_num_threads(threads)
    assert x_st.is_inference() and x_ts.is_inference()


def test_a_layer_in_one_call_refuses_blocks_of_the_wrong_length(model):
    s = model.stream(batch_size=1, compile=False)
    s.step(torch.randn(1, 17, 3))
    (sst, tst, tts, sts), eps, _ = s._plan[0]
    h = torch.randn(17, model.config.dim)
    layer = cpu_kernels.ops().stream_layer
    with pytest.raises(RuntimeError, match="spatial block's 10 tensors"):
        layer(h, sst[:-1], tst, tts, sts, eps)
    with pytest.raises(RuntimeError, match="temporal block's 15 tensors"):
        layer(h, sst, tst, tts[:-1], sts, eps)
    with pytest.raises(RuntimeError, match="four blocks' eps"):
        layer(h, sst, tst, tts, sts, eps[:3])
