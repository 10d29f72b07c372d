"""DSSM: eigenvalue initialisations, the three computations, continuous-time behaviour."""

import math

import numpy as np
import pytest
import torch

from hummuss.ssm import DSSM, INIT_SCHEMES, init_eigenvalues, legs_frequencies, zoh


def test_lin_eigenvalues_follow_s4d_lin():
    lam = init_eigenvalues("lin", 128).to(torch.complex128)
    assert lam.shape == (64,)  # N = 128 real dims = 64 complex modes
    n = torch.arange(64, dtype=torch.float64)
    assert torch.allclose(lam.real, torch.full((64,), -0.5, dtype=torch.float64))
    assert torch.allclose(lam.imag, math.pi * n, rtol=1e-6)


def test_inv_eigenvalues_follow_s4d_inv():
    N = 64
    lam = init_eigenvalues("inv", N).to(torch.complex128)
    n = torch.arange(N // 2, dtype=torch.float64)
    assert torch.allclose(lam.real, torch.full((N // 2,), -0.5, dtype=torch.float64))
    assert torch.allclose(lam.imag, N / math.pi * (N / (2 * n + 1) - 1), rtol=1e-6)
    assert lam.imag[0] == pytest.approx(N / math.pi * (N - 1), rel=1e-6)


def test_real_eigenvalues_are_minus_one_to_minus_m():
    lam = init_eigenvalues("real", 16)
    assert torch.equal(lam.imag, torch.zeros(8))
    assert torch.allclose(lam.real, -torch.arange(1, 9, dtype=torch.float32))


def test_legs_eigenvalues_are_those_of_hippo_legs_normal_part():
    N = 16
    # the normal part of HiPPO-LegS: A + P P^T with A_nk = -sqrt(2n+1)sqrt(2k+1) (n > k),
    # -(n+1) (n = k), 0 (n < k), and P_n = sqrt(n + 1/2)
    n = np.arange(N)
    q = np.sqrt(2 * n + 1)
    A = -np.tril(np.outer(q, q), -1) - np.diag(n + 1)
    P = np.sqrt(n + 0.5)
    eig = np.linalg.eigvals(A + np.outer(P, P))
    assert np.allclose(eig.real, -0.5)
    expected = np.sort(eig.imag[eig.imag > 0])
    lam = init_eigenvalues("legs", N)
    assert np.allclose(lam.real.numpy(), -0.5)
    assert np.allclose(lam.imag.numpy(), expected, rtol=1e-5)
    assert np.allclose(legs_frequencies(N), expected)


def test_rand_eigenvalues_are_lognormal_frequencies():
    g = torch.Generator().manual_seed(0)
    lam = init_eigenvalues("rand", 2000, generator=g).to(torch.complex128)
    log_im = torch.log(lam.imag)
    assert torch.allclose(lam.real, torch.full_like(lam.real, -0.5))
    assert abs(log_im.mean().item()) < 0.1 and abs(log_im.std().item() - 1) < 0.1


def test_unknown_scheme_lists_known_ones():
    with pytest.raises(ValueError, match="unknown DSSM init scheme 'foo'; known: lin, inv, legs, real, rand"):
        DSSM(4, 8, init="foo")
    with pytest.raises(ValueError, match="even"):
        DSSM(4, 7)


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_layer_stores_the_scheme_with_negative_real_part(scheme):
    torch.manual_seed(0)
    layer = DSSM(6, 16, init=scheme)
    lam = layer.eigenvalues()
    assert lam.shape == (1, 8)
    assert (lam.real < 0).all()
    if scheme != "rand":
        assert torch.allclose(lam[0], init_eigenvalues(scheme, 16), rtol=1e-5)
    dt = torch.exp(layer.log_dt)
    assert dt.min() >= 1e-3 - 1e-9 and dt.max() <= 1e-1 + 1e-9


def test_step_initialisation_is_log_uniform_in_range():
    torch.manual_seed(0)
    log_dt = DSSM(4000, 8).log_dt.detach()
    lo, hi = math.log(1e-3), math.log(1e-1)
    assert lo <= log_dt.min() and log_dt.max() <= hi
    assert log_dt.mean().item() == pytest.approx((lo + hi) / 2, abs=0.1)


def test_zoh_matches_the_closed_form():
    lam = torch.tensor([-0.5 + 3j, -2.0 + 0j], dtype=torch.complex128)
    dA, dB = zoh(lam, torch.tensor(0.1, dtype=torch.float64))
    assert torch.allclose(dA, torch.exp(0.1 * lam))
    # dB = integral_0^dt exp(lam s) ds
    s = torch.linspace(0, 0.1, 20001, dtype=torch.float64)
    integral = torch.trapezoid(torch.exp(s[:, None] * lam), s, dim=0)
    assert torch.allclose(dB, integral, atol=1e-9)


def _three_modes(layer, u):
    with torch.no_grad():
        conv = layer(u)
        scan = layer.scan(u, torch.ones(u.shape[:2]))
        state, ys = layer.initial_state(u.shape[0]), []
        for t in range(u.shape[1]):
            y, state = layer.step(u[:, t], state)
            ys.append(y)
    return conv, scan, torch.stack(ys, 1)


@pytest.mark.parametrize("shared", [True, False])
def test_convolution_recurrence_and_scan_agree(shared):
    torch.manual_seed(0)
    layer = DSSM(8, 16, out_channels=2, shared_modes=shared)
    u = torch.randn(3, 500, 8)
    conv, scan, rec = _three_modes(layer, u)
    assert conv.shape == (3, 500, 8, 2)
    assert (conv - scan).abs().max() <= 1e-4
    assert (conv - rec).abs().max() <= 1e-4


def test_kernel_cache_follows_parameter_updates():
    torch.manual_seed(0)
    layer = DSSM(4, 8)
    u = torch.randn(1, 50, 4)
    with torch.no_grad():
        y0 = layer(u)
        layer.log_dt.add_(0.5)  # an optimiser step is an in-place update
        y1 = layer(u)
        fresh = DSSM(4, 8)
        fresh.load_state_dict(layer.state_dict())
        assert torch.allclose(fresh(u), y1, atol=1e-6)
    assert (y0 - y1).abs().max() > 1e-3


def test_kernel_cache_follows_a_fused_optimiser_step():
    """AdamW(fused=True), as the trainer runs it, writes the parameters without bumping their
    versions: the cached kernel must still be dropped after its step."""
    torch.manual_seed(0)
    layer = DSSM(4, 8)
    u = torch.randn(1, 50, 4)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=True)
    with torch.no_grad():
        y0 = layer(u)
    layer(u).square().sum().backward()
    versions = [p._version for p in layer.parameters()]
    opt.step()
    assert [p._version for p in layer.parameters()] == versions  # what the cache cannot see
    with torch.no_grad():
        y1 = layer(u)
        fresh = DSSM(4, 8)
        fresh.load_state_dict(layer.state_dict())
        assert torch.allclose(fresh(u), y1, atol=1e-6)
    assert (y0 - y1).abs().max() > 1e-3


SLOW, FAST = (0.15, 0.25, 0.35), (0.5, 0.75, 1.0)  # Hz


def _smooth(t, channels=16, freqs=SLOW):
    """A signal at rest at t = 0 (smoothstep onset over 2 s), then sines (slow by default)."""
    ramp = torch.clamp(t / 2.0, max=1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)
    return torch.stack([ramp * sum(torch.sin(2 * math.pi * f * t + 0.7 * c * j) for j, f in enumerate(freqs))
                        for c in range(channels)], -1)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_half_frame_rate_with_dt_scale_two_matches(scheme):
    torch.manual_seed(1)
    layer = DSSM(16, 128, out_channels=2, init=scheme)
    t60 = torch.arange(600) / 60.0
    with torch.no_grad():
        y60 = layer(_smooth(t60)[None])
        y30 = layer(_smooth(t60[::2])[None], dt_scale=2.0)
        wrong = layer(_smooth(t60[::2])[None])  # same input, step not rescaled
    assert _rel(y30, y60[:, ::2]) < 0.02
    assert _rel(wrong, y60[:, ::2]) > 5 * _rel(y30, y60[:, ::2])


def _dropped_frames(frames=600):
    """The kept frames of a 60 Hz sequence with 20% dropped at random (the first kept), and
    each kept frame's step: the gap to the last kept frame, in 60 Hz frames."""
    keep = torch.rand(frames, generator=torch.Generator().manual_seed(0)) > 0.2
    keep[0] = True
    idx = keep.nonzero().squeeze(1)
    return idx, torch.diff(idx.float(), prepend=torch.tensor([-1.0]))


@pytest.mark.parametrize("scheme", ["lin", "legs"])
def test_scan_with_per_frame_steps_handles_dropped_frames(scheme):
    torch.manual_seed(2)
    layer = DSSM(16, 128, out_channels=2, init=scheme)
    t60 = torch.arange(600) / 60.0
    idx, dt = _dropped_frames()
    assert dt.max() >= 3
    with torch.no_grad():
        y60 = layer(_smooth(t60)[None])
        dropped = layer(_smooth(t60[idx])[None], dt=dt[None])
        naive = layer(_smooth(t60[idx])[None])
    assert _rel(dropped, y60[:, idx]) < 0.02
    assert _rel(naive, y60[:, idx]) > 5 * _rel(dropped, y60[:, idx])


def test_scan_with_initial_state_continues_a_sequence():
    torch.manual_seed(3)
    layer = DSSM(4, 8)
    u = torch.randn(2, 40, 4)
    with torch.no_grad():
        whole = layer(u)
        state = layer.initial_state(2)
        for t in range(25):
            _, state = layer.step(u[:, t], state)
        rest = layer.scan(u[:, 25:], torch.ones(2, 15), state=state)
    assert (rest - whole[:, 25:]).abs().max() < 1e-5


def test_scan_rejects_misshaped_steps():
    layer = DSSM(4, 8)
    with pytest.raises(ValueError, match=r"dt must have shape \(batch, frames\)"):
        layer.scan(torch.zeros(2, 10, 4), torch.ones(10))


# -- fast paths: the same numbers by other routes -------------------------------------------
def test_fft_size_is_the_smallest_mostly_two_size():
    from hummuss.ssm import fft_size

    def allowed(m):
        while m % 2 == 0:
            m //= 2
        return m in (1, 3, 5, 9)

    for n in (2, 33, 161, 485, 1457, 4373):
        m = fft_size(n)
        assert m >= n and allowed(m)
        assert not any(allowed(j) for j in range(n, m))
    assert (fft_size(161), fft_size(485), fft_size(1457), fft_size(4373)) == (192, 512, 1536, 4608)


def test_chunked_kernel_matches_the_vandermonde_formula():
    torch.manual_seed(4)
    layer = DSSM(6, 16, out_channels=2, shared_modes=False)
    with torch.no_grad():
        lam = layer.eigenvalues().to(torch.complex128)  # (H, M)
        dt = torch.exp(layer.log_dt).double().unsqueeze(-1) * 1.5
        C = torch.view_as_complex(layer.C.double())
        ell = torch.arange(100, dtype=torch.float64)
        ref = 2 * torch.einsum("khm,hml->khl", C * (torch.exp(dt * lam) - 1) / lam,
                               torch.exp((dt * lam).unsqueeze(-1) * ell)).real
        K = layer.kernel(100, dt_scale=1.5)
    assert K.shape == (2, 6, 100)
    assert (K.double() - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("anticausal", [False, True])
def test_toeplitz_and_fft_convolutions_agree_with_a_direct_sum(anticausal):
    from hummuss.ssm import apply_conv, conv_operator

    g = torch.Generator().manual_seed(5)
    K, D = torch.randn(2, 3, 20, generator=g), torch.randn(2, 3, generator=g)
    u = torch.randn(3, 1, 20, 4, generator=g)  # (H, P, L, Q)
    ref = torch.zeros(3, 1, 2, 20, 4)
    for i in range(20):
        for j in range(20):
            lag = j - i if anticausal else i - j
            if lag >= 0:
                ref[:, :, :, i] += K.permute(1, 0, 2)[:, None, :, lag, None] * u[:, :, None, j]
    ref += D.t()[:, None, :, None, None] * u[:, :, None]
    for method in ("toeplitz", "fft"):
        y = apply_conv(conv_operator(K, D, [anticausal] * 2, "rows", method), u)
        assert y.shape == (3, 1, 2, 20, 4)
        assert (y - ref).abs().max() < 1e-4
    cols = conv_operator(K, D, [anticausal] * 2, "cols", "toeplitz")  # u (H, P, L, 1)
    y = apply_conv(cols, u.permute(0, 3, 2, 1))
    assert (y[..., 0] - ref[:, 0].permute(0, 3, 1, 2)).abs().max() < 1e-4


def test_taps_convolve_as_the_operator_they_replace():
    """`conv_taps` + `apply_taps` (the compiled streaming step's joint convolution) against a
    direct sum, with one causal and one anti-causal kernel per channel."""
    from hummuss.ssm import apply_conv, apply_taps, conv_operator, conv_taps

    g = torch.Generator().manual_seed(7)
    H, L, P = 5, 17, 3
    K, D = torch.randn(2, H, L, generator=g), torch.randn(2, H, generator=g)
    u = torch.randn(H, P, L, 1, generator=g)
    ref = torch.zeros(H, P, 2, L, 1)
    for r, anti in enumerate((False, True)):
        for i in range(L):
            for j in range(L):
                lag = j - i if anti else i - j
                if lag >= 0:
                    ref[:, :, r, i, 0] += K[r, :, lag, None] * u[:, :, j, 0]
        ref[:, :, r] += D[r, :, None, None, None] * u
    Kz, idx = conv_taps(K, D, [False, True])
    assert Kz.shape == (2 * (L + 1), H) and idx.shape == (L, 2 * L)
    y = apply_taps((Kz, idx), u)
    assert y.shape == (H, P, 2, L, 1) and (y - ref).abs().max() < 1e-4
    op = apply_conv(conv_operator(K, D, [False, True], "cols", "toeplitz"), u)
    assert (y - op).abs().max() < 1e-5


def test_real_arithmetic_state_update_matches_the_complex_one():
    from hummuss.ssm import advance_state_, advance_state_planar, complex_state, planar_state

    torch.manual_seed(6)
    layer = DSSM(5, 8, out_channels=2)
    u = torch.randn(3, 5)
    s0 = torch.randn(3, 5, 4, dtype=torch.complex64)
    assert torch.equal(complex_state(planar_state(s0)), s0)
    assert planar_state(s0)[1, 2, 0, 3] == s0[0, 2, 3].imag  # (Re/Im, channel, stream, mode)

    with torch.no_grad():
        y_ref, s_ref = layer.step(u, s0, 1.3)  # the functional step
        dA, dB = layer.discretise_step(1.3)  # (H, M): shared by the streams
        s1 = s0.clone()
        y1 = advance_state_(s1, dA, dB, u, layer.readout_weight(), layer.D)
        s2, y2 = advance_state_planar(planar_state(s0), planar_state(dA), planar_state(dB), u,
                                      *layer.readout_planes(), layer.D)
        steps = torch.tensor([1.3, 0.5, 2.0])  # one step per stream: (N, H, M)
        y_ref3, s_ref3 = layer.step(u, s0, steps)
        dA3, dB3 = layer.discretise_step(steps)
        s3, y3 = advance_state_planar(planar_state(s0), planar_state(dA3), planar_state(dB3), u,
                                      *layer.readout_planes(), layer.D)
    assert y1.shape == y2.shape == y3.shape == (3, 5, 2) and s2.shape == s3.shape == (2, 5, 3, 4)
    for s, y, sr, yr in ((s1, y1, s_ref, y_ref), (complex_state(s2), y2, s_ref, y_ref),
                         (complex_state(s3), y3, s_ref3, y_ref3)):
        assert (s - sr).abs().max() < 1e-5 and (y - yr).abs().max() < 1e-4
    assert (s_ref - s0).abs().max() > 0.1 and (s_ref3 - s_ref).abs().max() > 0.1  # the steps moved it


def test_evaluation_cache_skips_large_values(monkeypatch):
    import hummuss.ssm.cache as cache  # ParamCache reads the limit from its own module

    layer = DSSM(4, 8)
    u = torch.randn(1, 40, 4)
    with torch.no_grad():
        y = layer(u)
        kept = len(layer.cache._store)
        layer.cache.clear()
        monkeypatch.setattr(cache, "CACHE_MAX_BYTES", 100)  # smaller than the operator
        assert torch.equal(layer(u), y)
    assert kept == 1 and len(layer.cache._store) == 0
