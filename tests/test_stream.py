"""Streaming inference: frame-by-frame outputs equal the offline model, in constant memory."""

import pytest
import torch

from hummuss.model import HumMUSS, HumMUSSConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HumMUSS(HumMUSSConfig.preset("smoke", causal=True)).eval()


@pytest.fixture(params=[False, True], ids=["pytorch-update", "cpu-kernel"])
def kernel(request, monkeypatch):
    """Streams built in the test run their temporal updates in PyTorch operations (complex
    states eagerly) or, where it can be built, in the CPU kernel (planar states throughout)."""
    from hummuss.ssm import state_kernel

    if request.param and not state_kernel.usable("cpu", torch.float32):
        pytest.skip("the CPU kernels cannot be built here")
    if not request.param:
        monkeypatch.setattr(state_kernel, "usable", lambda device, dtype: False)
    return request.param


def test_stream_equals_offline_with_per_frame_steps(model):
    x = torch.randn(2, 60, 17, 3)
    dt = 1.0 + torch.randint(0, 3, (2, 60)).float()  # irregular timestamps
    with torch.no_grad():
        offline = model(x, dt=dt)
    s = model.stream(batch_size=2)
    online = torch.stack([s.step(x[:, t], dt=dt[:, t]) for t in range(60)], 1)
    assert (online - offline).abs().max() < 1e-5
    assert s.frames_seen == 60


def test_stream_with_a_float_step_equals_dt_scale(model):
    x = torch.randn(1, 40, 17, 3)
    with torch.no_grad():
        offline = model(x, dt_scale=2.0)
    s = model.stream()
    online = torch.stack([s.step(x[:, t], dt=2.0) for t in range(40)], 1)
    assert (online - offline).abs().max() < 1e-5


def test_state_size_is_constant(model):
    s = model.stream()
    sizes = []
    for _ in range(50):
        s.step(torch.randn(1, 17, 3))
        sizes.append(sum(st.numel() for st in s.state_tensors()))
    assert len(set(sizes)) == 1


def test_reset_forgets_the_past(model):
    s = model.stream()
    x = torch.randn(5, 1, 17, 3)
    first = [s.step(f) for f in x]
    s.reset()
    again = [s.step(f) for f in x]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_bidirectional_model_refuses_to_stream():
    with pytest.raises(ValueError, match="causal"):
        HumMUSS(HumMUSSConfig.preset("smoke")).stream(1)


def test_bad_frames_are_named(model):
    s = model.stream(batch_size=2)
    with pytest.raises(ValueError, match=r"frame must have shape \(2, 17, 3\)"):
        s.step(torch.zeros(1, 17, 3))
    with pytest.raises(ValueError, match="NaN"):
        s.step(torch.full((2, 17, 3), float("nan")))
    one_inf = torch.zeros(2, 17, 3)
    one_inf[1, 5, 2] = float("-inf")
    with pytest.raises(ValueError, match="infinite"):
        s.step(one_inf)
    assert s.frames_seen == 0
    s.step(torch.full((2, 17, 3), 3e38))  # finite, though its sum overflows: not refused
    assert s.frames_seen == 1
    with pytest.raises(ValueError, match="dt must be > 0"):
        s.step(torch.zeros(2, 17, 3), dt=0.0)


def test_compile_falls_back_to_eager_when_it_fails(model, monkeypatch):
    def broken(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return run

    import hummuss.stream

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(hummuss.stream, "_compiled_frame", None)
    x = torch.randn(1, 6, 17, 3)
    eager = model.stream()
    expected = [eager.step(x[:, t]) for t in range(6)]
    s = model.stream(compile=True)
    with pytest.warns(RuntimeWarning, match=r"compile of the streaming step failed \(RuntimeError: no C\+\+ compiler\)"):
        first = s.step(x[:, 0])
    rest = [s.step(x[:, t]) for t in range(1, 6)]
    assert not s.compile
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip([first] + rest, expected))


def test_planar_states_give_the_complex_path_and_convert_back_on_fallback(model, monkeypatch, kernel):
    """The compiled path's channel-major planar states, run uncompiled (torch.compile replaced
    by the identity), equal the eager path with float and per-stream steps; when the
    compiled step fails mid-stream the stream goes on unchanged, its states converted back
    to complex ones unless the kernel updates them."""
    import hummuss.stream

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(hummuss.stream, "_compiled_frame", None)
    x = torch.randn(2, 8, 17, 3)
    dts = [1.0, 2.0, torch.tensor([1.0, 3.0]), 1.0, 0.5, torch.tensor([2.0, 1.0]), 1.0, 1.0]
    eager, planar = model.stream(batch_size=2), model.stream(batch_size=2, compile=True)
    expected = [eager.step(x[:, t], dt=dts[t]) for t in range(8)]
    got = [planar.step(x[:, t], dt=dts[t]) for t in range(5)]
    assert planar.compile and planar.states[0][0].shape == (2, 32, 34, 4)  # (Re/Im, H, B J, M)

    def broken(*args):
        raise RuntimeError("compiled step lost")

    monkeypatch.setattr(hummuss.stream, "_compiled_frame", broken)
    with pytest.warns(RuntimeWarning, match="compiled step lost"):
        got.append(planar.step(x[:, 5], dt=dts[5]))
    got += [planar.step(x[:, t], dt=dts[t]) for t in range(6, 8)]
    assert not planar.compile and planar.states[0][0].is_complex() == (not kernel) == (not planar.planar)
    assert max((a - b).abs().max().item() for a, b in zip(got, expected)) < 1e-5


def test_reset_rereads_changed_parameters(model):
    import copy

    changed = copy.deepcopy(model)
    s = changed.stream()
    x = torch.randn(1, 17, 3, generator=torch.Generator().manual_seed(3))  # not the global RNG
    before = s.step(x)
    with torch.no_grad():
        block = changed.layers[0].spatial_st  # cached: its Toeplitz operator and mix weights
        block.ssm_f.C.mul_(30.0)
        block.mix_f.weight.mul_(30.0)
        changed.layers[0].temporal_st.ssm_f.D.add_(30.0)  # cached: its read-out
    s.reset()
    after = s.step(x)
    with torch.no_grad():
        offline = changed(x[:, None])[:, 0]
    tolerance = 1e-5 * max(1.0, offline.abs().max())
    assert (after - before).abs().max() > 100 * tolerance  # the change shows (stale caches would not)
    assert (after - offline).abs().max() < tolerance


def test_a_learned_stream_fusion_with_weights_of_its_own_streams_like_the_offline_model(model):
    """At initialisation a learned fusion weighs both streams 1/2 whatever its input (W = 0), so
    a stream that applied it wrongly would still agree: with weights of its own (as after
    training) the stream's packed fusion, embedding and head must still give the offline model."""
    import copy

    base = copy.deepcopy(model)
    with torch.no_grad():
        base.head.weight.mul_(100.0)  # outputs of order 1 (about 0.01 at initialisation)
    changed = copy.deepcopy(base)
    assert {layer.fuse.kind for layer in changed.layers} == {"learned"}
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for layer in changed.layers:
            w = layer.fuse.weights
            w.weight.copy_(torch.randn(w.weight.shape, generator=g))
            w.bias.copy_(torch.randn(w.bias.shape, generator=g))
    x = torch.randn(1, 30, 17, 3, generator=g)
    with torch.no_grad():
        offline, at_init = changed(x), base(x)
    s = changed.stream()
    online = torch.stack([s.step(x[:, t]) for t in range(30)], 1)
    tolerance = 1e-5 * max(1.0, offline.abs().max())
    assert (offline - at_init).abs().max() > 100 * tolerance  # the fusion's weights matter here
    assert (online - offline).abs().max() < tolerance


def test_stream_centres_each_frame_like_the_offline_model():
    torch.manual_seed(1)
    model = HumMUSS(HumMUSSConfig.preset("smoke", causal=True, center_input=True)).eval()
    x = torch.randn(1, 30, 17, 3)
    with torch.no_grad():
        offline = model(x)
    s = model.stream()
    online = torch.stack([s.step(x[:, t]) for t in range(30)], 1)
    assert (online - offline).abs().max() < 1e-5


def test_default_stream_switches_to_the_compiled_step_and_stays_exact(model, monkeypatch, kernel):
    """compile=None: eager for AUTO_COMPILE_AFTER frames, then the compiled step (here
    torch.compile replaced by the identity) on planar states, with the same outputs."""
    import hummuss.stream

    monkeypatch.setattr(hummuss.stream, "AUTO_COMPILE_AFTER", 3)
    monkeypatch.setattr(hummuss.stream, "compiler_available", lambda device: True)
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(hummuss.stream, "_compiled_frame", None)
    x = torch.randn(2, 8, 17, 3)
    dts = [1.0, torch.tensor([1.0, 2.0]), 2.0, 1.0, torch.tensor([3.0, 1.0]), 1.0, 0.5, 1.0]
    eager, auto = model.stream(batch_size=2, compile=False), model.stream(batch_size=2)
    expected = [eager.step(x[:, t], dt=dts[t]) for t in range(8)]
    got = [auto.step(x[:, t], dt=dts[t]) for t in range(3)]
    assert not auto.compile and auto.states[0][0].is_complex() == (not kernel)
    got += [auto.step(x[:, t], dt=dts[t]) for t in range(3, 8)]
    assert auto.compile and auto.states[0][0].shape == (2, 32, 34, 4)  # planar (Re/Im, H, B J, M)
    assert not eager.compile
    assert max((a - b).abs().max().item() for a, b in zip(got, expected)) < 1e-5


def test_the_planned_eager_frame_makes_the_module_frames_calls(model):
    """Where every block steps in one kernel call, the eager step calls the kernels from a plan
    of their arguments (`_planned_frame`): the same outputs as `_frame`'s, bit for bit, over
    every group's advances; a new plan after `reset` (new states), none once a frame with
    another step has brought the stream to the per-frame update."""
    s, ref = model.stream(batch_size=2, compile=False), model.stream(batch_size=2, compile=False)
    if not s._one_call:
        pytest.skip("the CPU kernels are not built here")
    x = torch.randn(2, 12, 17, 3)
    for reset in (False, True):
        if reset:
            s.reset(), ref.reset()
            assert s._plan is None
        ref._one_call = False  # the module frame (`_frame`)
        for t in range(9 if reset else 12):  # every channel group advanced two or three times
            assert torch.equal(s.step(x[:, t]), ref.step(x[:, t]))
        assert s._plan is not None and ref._plan is None
    for t in range(9, 12):  # another step: synchronised, the per-frame update (no plan)
        assert (s.step(x[:, t], dt=2.0) - ref.step(x[:, t], dt=2.0)).abs().max() == 0
        assert not s.staggered and s._plan is None


def test_default_stream_stays_on_the_planned_eager_frame_until_it_stops_applying(model, monkeypatch):
    """compile=None where every block steps in one kernel call: the planned eager frame (faster
    than the compiled step on the CPUs measured) past AUTO_COMPILE_AFTER, no compiler asked for;
    once a frame with another step has ended the staggered update, AUTO_COMPILE_AFTER eager
    frames from there (no compilation at once), then the compiled step; `reset` takes the
    planned frame again."""
    import warnings

    import hummuss.stream

    monkeypatch.setattr(hummuss.stream, "AUTO_COMPILE_AFTER", 2)
    monkeypatch.setattr(hummuss.stream, "compiler_available", lambda device: True)
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(hummuss.stream, "_compiled_frame", None)
    x = torch.randn(1, 10, 17, 3)
    s, eager = model.stream(), model.stream(compile=False)
    if not s.planned:
        pytest.skip("the CPU kernels are not built here")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in range(6):
            assert torch.equal(s.step(x[:, t]), eager.step(x[:, t]))
    assert not s.compile and s.planned and s._plan is not None and s.path == "planned eager"
    for t in range(6, 10):  # another step at frame 6: eager at frames 6 and 7, compiled from frame 8
        dt = 2.0 if t == 6 else 1.0
        assert (s.step(x[:, t], dt=dt) - eager.step(x[:, t], dt=dt)).abs().max() < 1e-5
        assert not s.planned and s.compile == (t >= 8)
        assert s.path == ("compiled" if t >= 8 else "eager")
    s.reset()
    assert s.planned and not s.compile and s.auto and s.path == "planned eager"
    y = s.step(x[:, 0])
    eager.reset()
    assert torch.equal(y, eager.step(x[:, 0]))


def test_default_stream_without_a_compiler_warns_once_and_stays_eager(model, monkeypatch, kernel):
    import warnings

    import hummuss.stream

    monkeypatch.setattr(hummuss.stream, "AUTO_COMPILE_AFTER", 2)
    monkeypatch.setattr(hummuss.stream, "compiler_available", lambda device: False)
    monkeypatch.setattr(hummuss.stream, "_warned_no_compiler", False)
    x = torch.randn(1, 5, 17, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for s in (model.stream(), model.stream()):
            if kernel:  # the planned eager frame, which needs no compiler: a stream of the module frame
                s._one_call = False
            ys = [s.step(x[:, t]) for t in range(5)]
            assert not s.compile and (s.staggered if kernel else s.states[0][0].is_complex())
    assert [str(w.message)[:36] for w in caught] == ["no compiler for torch.compile (a C++"]
    with torch.no_grad():
        assert (torch.stack(ys, 1) - model(x)).abs().max() < 1e-5


def test_compiler_available_looks_for_a_cpp_compiler(monkeypatch):
    import shutil

    from torch._inductor import config

    from hummuss.stream import compiler_available

    # torch's own config.patch, not monkeypatch: a setattr undone by hand left Inductor's config
    # without `cpp.cxx` for the tests after this one ("torch._inductor.config.cpp.cxx does not exist")
    monkeypatch.delenv("CXX", raising=False)
    with config.patch({"cpp.cxx": (None, "g++")}):
        assert compiler_available("cpu") == bool(shutil.which("g++"))
    with config.patch({"cpp.cxx": (None, "no-such-compiler-here")}):
        assert not compiler_available("cpu")
        monkeypatch.setenv("CXX", "sh")  # any program on PATH stands for $CXX
        assert compiler_available("cpu")


def test_a_stream_keeps_freed_memory_in_the_heap(model, monkeypatch):
    """The compiled step's new states each frame come from malloc's free lists, not fresh
    pages: a stream raises glibc's mmap and trim thresholds (hummuss.allocator) when made."""
    import hummuss.stream

    calls = []
    monkeypatch.setattr(hummuss.stream, "keep_freed_memory", lambda: calls.append(1) or True)
    model.stream(batch_size=1, compile=False)
    assert calls == [1]


@pytest.mark.parametrize("kernel", [True, False])
def test_a_spatial_block_compiled_with_its_joint_taps_is_the_eager_block(monkeypatch, kernel):
    """torch.compile for real: a spatial block stepping with its stream constants convolves the
    joints from their taps (`conv_taps`, not the prepared operator), in the CPU kernel
    (`joint_conv_mix_gate`) or in Inductor's loops (`apply_taps`), and gives the increments
    of the block run eagerly without constants. (A whole model's outputs hardly move when
    this convolution is wrong: they are checked above with other aims.)"""
    from hummuss import cpu_kernels
    from hummuss.gdssm import GDSSM
    from hummuss.stream import compiler_available

    if not compiler_available("cpu"):
        pytest.skip("no C++ compiler for torch.compile")
    if kernel and not cpu_kernels.runs_on("cpu", torch.float32):
        pytest.skip("the CPU kernels are not built here")
    if not kernel:
        monkeypatch.setattr(cpu_kernels, "runs_on", lambda device, dtype: False)  # as where they are not built
    torch.manual_seed(3)
    block = GDSSM(16, expand=2.5, state_size=8, bidirectional=True).eval()
    x = torch.randn(2, 17, 1, 16)  # two frames' joints
    with torch.no_grad():
        consts = block.stream_constants(17, 2 * 17)
        assert set(consts) >= {"op", "taps"} and (consts["op"] is None) == kernel  # the kernel needs no operator
        if kernel:  # the kernels are built: the projections run in `few_rows_linear`
            assert consts["proj"].kind == consts["out"].kind == "kernel"
        want = block(x) - x
        torch._dynamo.reset()  # a graph of its own for each route
        got = torch.compile(lambda t: block(t, consts=consts), dynamic=False)(x) - x
    assert (got - want).abs().max() < 1e-4 * want.abs().max()
