"""The compiled CPU kernel (hummuss/csrc/mix_gate.cpp) against the PyTorch MixGate and the
formula, its fallback, and that training uses it."""

import warnings

import pytest
import torch
import torch.utils.cpp_extension
from conftest import needs_kernels

from hummuss import cpu_kernels
from hummuss.fusion import KernelMixGate, MixGate, mix_gate


def _inputs(H, P, n, k, L, Q, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = 2 * torch.randn(H, P, n * k, L, Q, generator=g, dtype=dtype)  # GELU's curved part and both tails
    return (y, torch.randn(H, n, k, generator=g, dtype=dtype), torch.randn(H, n, generator=g, dtype=dtype),
            torch.randn(H, P, L, Q, generator=g, dtype=dtype))


def _run(fn, inputs, go):
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(go)
    return [out.detach()] + [t.grad for t in leaves]


@needs_kernels
def test_the_kernels_build_on_a_machine_with_a_compiler():
    assert cpu_kernels.ops() is not None, "the CPU kernels failed to build (see the warning)"


@needs_kernels
@pytest.mark.parametrize("n, k, L, Q, P", [
    (2, 1, 17, 1, 40),    # the spatial blocks: rows of 17 (one vector and a tail), many rows a block
    (2, 2, 243, 1, 3),    # the temporal blocks: 243 frames
    (1, 2, 50, 3, 2),     # causal temporal: one direction, Q > 1
    (1, 1, 7, 1, 5),      # shorter than one vector
    (3, 1, 9, 1, 4),      # directions and read-outs the kernel does not specialise
    (2, 2, 700, 1, 2),    # a row longer than a block (4 x 700 elements)
])
def test_kernel_mix_gate_equals_mix_gate_in_float32(n, k, L, Q, P):
    """Output and the four gradients of the kernel (float32) against MixGate on the same
    numbers in float64: within float32's rounding (relative to each tensor's largest value)."""
    inputs = _inputs(3, P, n, k, L, Q, torch.float32, seed=n + 10 * k + L)
    go = torch.randn(3, P, L, Q, generator=torch.Generator().manual_seed(1))
    got = _run(KernelMixGate.apply, inputs, go)
    want = _run(MixGate.apply, [t.double() for t in inputs], go.double())
    for name, a, b in zip(("out", "y", "w", "b", "x_id"), got, want):
        assert a.dtype == torch.float32 and a.shape == b.shape, name
        err = (a.double() - b).abs().max() / b.abs().max()
        assert err < 2e-6, f"{name}: relative error {err:.2e}"


@needs_kernels
@pytest.mark.parametrize("n, k", [(1, 1), (2, 1), (1, 2), (2, 2), (3, 2)])
def test_kernel_mix_gate_in_float64_is_the_formula(n, k):
    """float64: the kernel's erf is ATen's exact one, so the output equals the formula written
    with torch.erf to 1e-12, and the gradients pass float64 finite differences."""
    y, w, b, x_id = (t.requires_grad_() for t in _inputs(2, 3, n, k, 19, 1, torch.float64, seed=5 * n + k))
    gelu = y * 0.5 * (1 + torch.erf(y / 2 ** 0.5))
    expected = x_id
    for i in range(n):
        path = b[:, i].view(2, 1, 1, 1) + sum(w[:, i, c].view(2, 1, 1, 1) * gelu[:, :, i * k + c] for c in range(k))
        expected = expected * path
    assert torch.allclose(KernelMixGate.apply(y, w, b, x_id), expected, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(KernelMixGate.apply, (y, w, b, x_id))


@needs_kernels
def test_kernel_mix_gate_gives_the_same_bits_on_any_number_of_threads():
    """Each channel's sums run on one thread in one order: 1 thread and 2 give equal bits."""
    inputs, go = _inputs(6, 10, 2, 2, 30, 1, torch.float32), torch.randn(6, 10, 30, 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run(KernelMixGate.apply, inputs, go)
        torch.set_num_threads(2)
        two = _run(KernelMixGate.apply, inputs, go)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


@needs_kernels
def test_kernel_rejects_shapes_that_disagree():
    y, w, b, x_id = _inputs(2, 3, 2, 2, 8, 1, torch.float32)
    ops = cpu_kernels.ops()
    with pytest.raises(RuntimeError, match="disagree"):
        ops.mix_gate(y.view(2, 3, 4, 8), w[:, :, :1].contiguous(), b, x_id.view(2, 3, 8))
    with pytest.raises(RuntimeError, match="x_id's shape"):
        ops.mix_gate(y.view(2, 3, 4, 8), w, b, x_id.view(2, 3, 8)[:, :2].contiguous())


@needs_kernels
def test_training_blocks_use_the_kernel_on_the_cpu():
    """A GDSSM block's training forward goes through KernelMixGate (its backward node in the
    graph), float32 and float64 alike."""
    y, w, b, x_id = (t.requires_grad_() for t in _inputs(2, 3, 2, 2, 8, 1, torch.float32))
    assert type(mix_gate(y, w, b, x_id).grad_fn).__name__ == "KernelMixGateBackward"
    assert type(mix_gate(y.double(), w.double(), b.double(), x_id.double()).grad_fn).__name__ == \
        "KernelMixGateBackward"
    from hummuss.zoo import build_model

    model = build_model("hummuss", "smoke").train()
    out = model(torch.randn(1, 9, 17, 3))
    stack, seen, names = [out.grad_fn], set(), set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    assert "KernelMixGateBackward" in names and "MixGateBackward" not in names


def test_without_the_kernels_mix_gate_is_the_pytorch_one(monkeypatch):
    """HUMMUSS_CPU_KERNELS=0: ops() gives None without building, and mix_gate runs MixGate;
    a build that fails warns once and gives None too."""
    build = cpu_kernels.ops.__wrapped__  # ops() without its cache
    monkeypatch.setenv(cpu_kernels.ENV, "0")
    assert build() is None
    monkeypatch.setattr(cpu_kernels, "ops", lambda: None)
    y, w, b, x_id = (t.requires_grad_() for t in _inputs(2, 3, 2, 2, 8, 1, torch.float32))
    assert type(mix_gate(y, w, b, x_id).grad_fn).__name__ == "MixGateBackward"

    monkeypatch.setenv(cpu_kernels.ENV, "1")

    def broken(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert build() is None
    assert len(caught) == 1 and "Ninja is required" in str(caught[0].message)
    assert "HUMMUSS_CPU_KERNELS=0" in str(caught[0].message)


def test_a_build_lock_left_by_a_dead_process_is_removed(tmp_path, monkeypatch):
    """torch waits while `lock` exists: one older than STALE_LOCK_S goes (with a warning), a
    fresh one (a build under way in another process) stays."""
    import os
    import time

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = cpu_kernels.build_directory("AVX2")
    assert folder.parent == tmp_path and "avx2" in folder.name and torch.__version__.split("+")[0] in folder.name
    folder.mkdir()
    lock = folder / "lock"
    lock.touch()
    cpu_kernels._clear_stale_lock(folder)
    assert lock.exists()
    old = time.time() - cpu_kernels.STALE_LOCK_S - 5
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="stale build lock"):
        cpu_kernels._clear_stale_lock(folder)
    assert not lock.exists()
    cpu_kernels._clear_stale_lock(folder)  # no lock: nothing to do


def test_each_checkout_builds_in_a_folder_of_its_own(tmp_path, monkeypatch):
    """torch's build file names the sources by absolute path: two checkouts in one folder
    would rebuild it for each other on every switch."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    here = cpu_kernels.build_directory("AVX2")
    assert cpu_kernels.build_directory("AVX2") == here
    monkeypatch.setattr(cpu_kernels, "SOURCES", [tmp_path / "other" / "csrc" / s.name for s in cpu_kernels.SOURCES])
    other = cpu_kernels.build_directory("AVX2")
    assert other != here and other.parent == here.parent and "avx2" in other.name


def test_a_lock_that_goes_stale_while_waiting_is_removed(tmp_path, monkeypatch):
    """A process waiting for another's build (torch polls while `lock` exists) is not left
    waiting forever when that builder dies: the lock is removed once it is stale."""
    import time

    monkeypatch.setattr(cpu_kernels, "STALE_LOCK_S", 0.5)
    monkeypatch.setattr(cpu_kernels, "LOCK_CHECK_S", 0.05)
    lock = tmp_path / "lock"
    lock.touch()  # fresh: a build under way elsewhere
    start = time.monotonic()
    with warnings.catch_warnings(), cpu_kernels._stale_lock_watch(tmp_path):
        warnings.simplefilter("ignore")
        assert lock.exists()  # not stale yet
        while lock.exists() and time.monotonic() - start < 20:  # what torch's wait does
            time.sleep(0.01)
    assert not lock.exists() and time.monotonic() - start >= 0.5


@needs_kernels
@pytest.mark.parametrize("Q, spaced", [(1, True), (3, True), (1, False)])
def test_evaluation_kernel_reads_spaced_rows_and_takes_x_before_its_gelu(Q, spaced):
    """mix_gate_into (evaluation): y may be the first L frames of longer transforms (a view,
    rows 2L apart); x_id comes before its GELU. Against MixGate in float64."""
    from hummuss.fusion import mix_gate_into

    g_, P, n, k, L = 3, 4, 2, 2, 37
    gen = torch.Generator().manual_seed(Q)
    full = 2 * torch.randn(g_, P, n * k, 2 * L if spaced else L, Q, generator=gen)
    y = full[:, :, :, :L]
    assert y.is_contiguous() != spaced
    w, b = torch.randn(g_, n, k, generator=gen), torch.randn(g_, n, generator=gen)
    pre = torch.randn(g_, P, L, Q, generator=gen)
    out = torch.full((g_, P, L, Q), float("nan"))
    assert mix_gate_into(y, w, b, pre, out)
    want = MixGate.apply(y.double(), w.double(), b.double(), torch.nn.functional.gelu(pre.double()))
    assert ((out.double() - want).abs().max() / want.abs().max()) < 2e-6


def test_evaluation_kernel_declines_what_it_does_not_handle(monkeypatch):
    """bfloat16, or no kernels: False and `out` untouched (the caller runs its own route)."""
    from hummuss.fusion import mix_gate_into

    y, w, b, x = _inputs(2, 3, 2, 1, 5, 1, torch.float32)
    out = torch.zeros(2, 3, 5, 1)
    assert not mix_gate_into(y.bfloat16(), w.bfloat16(), b.bfloat16(), x.bfloat16(), out.bfloat16())
    monkeypatch.setattr(cpu_kernels, "ops", lambda: None)
    assert not mix_gate_into(y, w, b, x, out)
    assert torch.equal(out, torch.zeros(2, 3, 5, 1))


@needs_kernels
@pytest.mark.parametrize("preset", ["smoke", "cpu"])
def test_an_evaluation_pass_with_the_kernel_equals_the_pytorch_route(preset, monkeypatch):
    """A whole model's offline pass (GDSSM._grouped, every block through mix_gate_into)
    against the same pass with the kernel declined: float32 rounding apart."""
    import hummuss.gdssm as gdssm
    from hummuss.zoo import build_model

    model = build_model("hummuss", preset).eval()
    x = torch.randn(2, 30, 17, 3, generator=torch.Generator().manual_seed(3))
    calls = []
    real = gdssm.mix_gate_into

    def counted(*args):
        calls.append(1)
        return real(*args)

    with torch.inference_mode():
        monkeypatch.setattr(gdssm, "mix_gate_into", counted)
        got = model(x)
        monkeypatch.setattr(gdssm, "mix_gate_into", lambda *args: False)
        want = model(x)
    assert calls  # the blocks went through the kernel
    assert torch.allclose(got, want, rtol=0, atol=1e-5 * want.abs().max().item())


@needs_kernels
@pytest.mark.parametrize("n, k, H, P", [
    (2, 1, 40, 2),   # the spatial blocks (both directions, one read-out), channels: 2 vectors and a tail
    (2, 1, 136, 1),  # a full chunk of 128 channels (in registers) and a part chunk
    (1, 2, 16, 1),   # one causal direction, two read-outs
    (3, 1, 5, 3),    # fewer channels than a vector
])
def test_joint_kernel_is_the_convolution_mix_and_gate_written_out(n, k, H, P):
    """`joint_conv_mix_gate` (the streaming spatial block, token-major) against the formula in
    float64: a direct sum over the joints for each read-out's causal or anti-causal kernel,
    GELU with torch.erf, the mix and the gate."""
    from hummuss.ssm import conv_taps

    g = torch.Generator().manual_seed(n + 3 * k + H)
    L, R = 17, n * k
    K, D = torch.randn(R, H, L, generator=g), torch.randn(R, H, generator=g)
    anti = [bool(r % 2) for r in range(R)]
    both = torch.randn(P * L, 2 * H, generator=g)
    w, b = torch.randn(R, H, generator=g), torch.randn(n, H, generator=g)
    Kz, idx = conv_taps(K, D, anti)
    got = cpu_kernels.ops().joint_conv_mix_gate(both, Kz, idx, w, b)
    x_id, u = both.double().view(P, L, 2 * H).split(H, -1)  # (P, L, H) each
    Kd, Dd = K.double(), D.double()
    expected = x_id.clone()
    for i in range(n):
        path = b[i].double().expand(P, L, H).clone()
        for c in range(k):
            r = i * k + c
            y = Dd[r] * u
            for lag in range(1, L):  # y[l] += K[lag] u[l + lag] (anti-causal) or u[l - lag]
                if anti[r]:
                    y[:, :L - lag] += Kd[r, :, lag] * u[:, lag:]
                else:
                    y[:, lag:] += Kd[r, :, lag] * u[:, :L - lag]
            y = y + Kd[r, :, 0] * u
            path += w[r].double() * y * 0.5 * (1 + torch.erf(y / 2 ** 0.5))
        expected = expected * path
    assert got.shape == (P * L, H) and got.dtype == torch.float32
    err = (got.double() - expected.reshape(P * L, H)).abs().max() / expected.abs().max()
    assert err < 2e-6, f"relative error {err:.2e}"
    with pytest.raises(RuntimeError, match="own kernel"):  # outputs reading the other read-outs' taps
        cpu_kernels.ops().joint_conv_mix_gate(both, Kz, idx.flip(1).contiguous(), w, b)


@needs_kernels
@pytest.mark.parametrize("M, K, N", [
    (17, 64, 96),   # a frame's joints: tiles of near-equal rows, whole panels
    (1, 5, 3),      # one row, fewer outputs than a vector
    (40, 33, 70),   # more tiles, an odd depth, a part panel
    (13, 16, 40),   # a prime number of rows
])
def test_few_rows_linear_is_the_product_written_out(M, K, N):
    """`few_rows_linear` against x W^T + b summed in float64 term by term, and GELU with erf."""
    g = torch.Generator().manual_seed(M + K + N)
    x, W, b = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g), torch.randn(N, generator=g)
    Wp, bp = cpu_kernels.ops().few_rows_pack(W, b)
    assert Wp.shape[0] * Wp.shape[2] >= N and Wp.shape[1] == K  # (P, K, NR) panels, zero-padded
    expected = b.double().expand(M, N).clone()
    for k in range(K):
        expected += x[:, k:k + 1].double() * W[:, k].double()
    gelu = expected * 0.5 * (1 + torch.erf(expected / 2 ** 0.5))
    scale = (x.double().abs() @ W.double().abs().t()).max()
    for act, want in ((False, expected), (True, gelu)):
        got = cpu_kernels.ops().few_rows_linear(x, Wp, bp, N, act)
        assert got.shape == (M, N) and got.dtype == torch.float32
        err = (got.double() - want).abs().max() / scale
        assert err < 1e-6, f"gelu={act}: relative error {err:.2e}"
    strided = cpu_kernels.ops().few_rows_linear(x.t().contiguous().t(), Wp, bp, N, False)
    assert torch.equal(strided, cpu_kernels.ops().few_rows_linear(x, Wp, bp, N, False))
    with pytest.raises(RuntimeError, match="from few_rows_pack"):  # panels packed for other outputs
        cpu_kernels.ops().few_rows_linear(x, Wp, bp, N + Wp.shape[2], False)
    with pytest.raises(RuntimeError, match="from few_rows_pack"):  # x of another depth
        cpu_kernels.ops().few_rows_linear(x[:, 1:], Wp, bp, N, False)
