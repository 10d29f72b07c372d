"""The FFT convolution: transform sizes, the kernels' spectra, and the convolution itself in
channel groups, for evaluation (`fft_conv`) and for training (`FFTConv`, a hand-written
backward whose spectral products run in the compiled CPU kernel hummuss/csrc/spectral.cpp
where it applies). `hummuss.ssm.conv` chooses between this and the Toeplitz product and
prepares either as a `ConvOperator`.
"""

from __future__ import annotations

import torch

FFT_ODD_FACTORS = (1, 3, 5, 9)  # FFT sizes 2^a c, see `fft_size`


def fft_size(n: int) -> int:
    """The smallest 2^a c >= n with c in (1, 3, 5, 9): FFT sizes that are mostly twos.

    On this project's 2-core AVX-512 CPU (MKL) they beat the smallest 5-smooth sizes: for
    L = 243 frames (n >= 485) 512 runs about 30% faster than 486 = 2 3^5; for L = 729, 1536
    beats 1458 = 2 3^6.
    """
    best = None
    for c in FFT_ODD_FACTORS:
        m = c
        while m < n:
            m *= 2
        best = m if best is None else min(best, m)
    return best


def fft_weight(K: torch.Tensor, D: torch.Tensor, anticausal: tuple[bool, ...], n: int) -> torch.Tensor:
    """K (R, H, L), D (R, H) -> the spectra (H, 1, R, n/2+1, 1) of the kernels with D at lag 0,
    conjugated for anti-causal kernels (correlation: y_i = sum_{j >= i} K[j - i] u_j)."""
    R = K.shape[0]
    K = torch.cat([K[..., :1] + D.unsqueeze(-1), K[..., 1:]], -1)  # the skip D u is lag 0
    Kf = torch.fft.rfft(K if K.dtype == torch.float64 else K.float(), n=n)  # (R, H, n/2+1)
    if any(anticausal):
        anti = torch.tensor(list(anticausal), device=K.device).view(R, 1, 1)
        Kf = torch.where(anti, Kf.conj(), Kf)
    return Kf.permute(1, 0, 2)[:, None, :, :, None]  # (H, 1, R, n/2+1, 1)


FFT_CHUNK_BYTES = 4 << 20  # FFTConv and evaluation work on channel groups whose spectra take about this much


class FFTConv(torch.autograd.Function):
    """The FFT convolution for training: u (H, P, L, Q), kernels K (R, H, L) and skips D (R, H)
    (and W, their `fft_weight` if already computed) -> y (H, P, R, L, Q), as `apply_conv`,
    with a hand-written backward:

        grad u = irfft(sum_r rfft(gy_r) conj(W_r))        (one inverse transform, not R)
        grad k = irfft(sum_{p,q} rfft(gy_r) conj(rfft(u)))  (the circular kernel's gradient,
                 read at lags 0..L-1, or at -l for an anti-causal kernel; D's is lag 0)

    instead of autograd's adjoints of rfft and irfft (zero-filled padding, a complex-to-complex
    transform, R inverse transforms) and its complex products with the weight.

    Both passes go through the channels in groups of about FFT_CHUNK_BYTES of spectra (P R
    (n/2+1) Q complex numbers per channel), so each group's transforms, products and sums
    stay in cache: one pass over main memory for u, y and their gradients instead of one per
    operation. `cpu` preset's temporal block (H 128, P 136, R 4, F 243), forward and backward:
    1,082 ms whole, 352 ms in 4 MiB groups (one thread, shared machine; the kernel gradient's
    sum as an einsum then, 1.51 ms a group against 0.38 ms as the product and sum used here).
    Only on the CPU: a GPU takes all channels in one launch per operation.
    """

    @staticmethod
    def forward(ctx, u, K, D, anticausal, n, W=None):
        H, P, L, Q = u.shape
        W = fft_weight(K, D, anticausal, n) if W is None else W  # (H, 1, R, f, 1): `conv_operator`'s
        Uf = torch.empty(H, P, W.shape[3], Q, dtype=W.dtype, device=u.device)  # saved for the backward
        y, group = fft_conv(u, W, n, spectra=Uf)
        ctx.save_for_backward(Uf, W)
        ctx.anticausal, ctx.n, ctx.group = anticausal, n, group
        return y

    @staticmethod
    def backward(ctx, gy):
        Uf, W = ctx.saved_tensors
        n, group = ctx.n, ctx.group
        H, P, R, L, Q = gy.shape
        f = W.shape[3]
        gu = gy.new_empty(H, P, L, Q) if ctx.needs_input_grad[0] else None
        need_kernel = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        S = W.new_empty(H, R, f) if need_kernel else None  # sum_{p,q} Gf conj(Uf)
        kernels = spectral_kernel(gy, W)
        Wk = W.reshape(H, R, f).contiguous() if kernels else None  # for the kernel: (H, R, f), dense
        Wc = W.conj()
        for h in range(0, H, group):
            s = slice(h, h + group)
            Gf = torch.fft.rfft(gy[s], n=n, dim=3)  # (g, P, R, f, Q)
            if kernels:  # both products in one pass over Gf (hummuss/csrc/spectral.cpp)
                g = Gf.shape[0]
                gu_s, S_s = spectral_grads(kernels, Gf.reshape(g, P, R, f), Wk[s], Uf[s].reshape(g, P, f), n, L,
                                           gu is not None, need_kernel)
                if gu is not None:
                    gu[s] = gu_s.unsqueeze(-1)
                if need_kernel:
                    S[s] = S_s
                continue
            if gu is not None:
                gu[s] = torch.fft.irfft((Gf * Wc[s]).sum(2), n=n, dim=2)[:, :, :L]
            if need_kernel:
                S[s] = (Gf * Uf[s].conj().unsqueeze(2)).sum((1, 4))  # (an einsum: a bmm of tiny matrices, 4x slower)
        gK, gD = kernel_grads(S, ctx.anticausal, n, L) if need_kernel else (None, None)
        return gu, gK, gD, None, None, None


def kernel_grads(S: torch.Tensor, anticausal: tuple[bool, ...], n: int, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S (H, R, n/2+1) = sum_{p,q} rfft(gy_r) conj(rfft(u)) -> the gradients of the kernels K
    (R, H, L) and of the skips D (R, H): the circular kernels' gradients irfft(S) read at lags
    0..L-1, or at -l for an anti-causal kernel; D's is lag 0."""
    c = torch.fft.irfft(S.transpose(0, 1), n=n)  # (R, H, n): gradient of each circular kernel
    lags = torch.arange(L, device=c.device)
    gK = torch.stack([c[r, :, (n - lags) % n] if a else c[r, :, :L] for r, a in enumerate(anticausal)])
    return gK, gK[..., 0].clone()


def spectral_grads(kernels, Gf: torch.Tensor, W: torch.Tensor, Uf: torch.Tensor, n: int, L: int,
                   input_grad: bool, kernel_grad: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One channel group's backward by the compiled kernel (`kernels`: torch.ops.hummuss_cpu):
    the spectra Gf (g, P, R, f) of the output's gradient, the kernels' W (g, R, f) and the
    input's Uf (g, P, f) -> (the input's gradient irfft(sum_r Gf_r conj(W_r))[:L], (g, P, L),
    and S = sum_p Gf_p conj(Uf_p), (g, R, f) for `kernel_grads`), each None where not asked for."""
    GU, S = kernels.spectral_backward(Gf, W, Uf, input_grad, kernel_grad)
    gu = torch.fft.irfft(GU, n=n, dim=2)[..., :L] if input_grad else None
    return gu, (S if kernel_grad else None)


def spectral_kernel(gy: torch.Tensor, W: torch.Tensor):
    """torch.ops.hummuss_cpu for `FFTConv`'s backward products (hummuss/csrc/spectral.cpp), or
    None: it takes float32 on the CPU with one column per sequence (Q = 1, the training layout
    of the temporal blocks), and not under torch.compile."""
    if gy.device.type != "cpu" or W.dtype != torch.complex64 or gy.shape[4] != 1 or torch.compiler.is_compiling():
        return None
    from hummuss.cpu_kernels import ops

    return ops()


def fft_conv(u: torch.Tensor, W: torch.Tensor, n: int, spectra: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, int]:
    """u (H, P, L, Q), spectra W (H, 1, R, n/2+1, 1) -> (y (H, P, R, L, Q), channels per group):
    y = irfft(rfft(u) W)[..., :L], a channel group at a time on the CPU (see `FFTConv`), y written
    once, dense; `spectra` (H, P, n/2+1, Q), if given, receives rfft(u) (kept for the backward).
    With all channels in one group and no spectra kept (evaluation: `GDSSM._grouped`'s groups,
    all channels on a GPU), y is instead a strided view of the inverse transform, not a copy."""
    H, P, L, Q = u.shape
    R, f = W.shape[2], W.shape[3]
    group = channel_group(P * R * f * Q, W.element_size(), torch.get_num_threads()) if u.device.type == "cpu" else H
    if group >= H and spectra is None:
        return conv_group(u, W, n), H
    y = u.new_empty(H, P, R, L, Q)
    for h in range(0, H, group):
        s = slice(h, h + group)
        y[s] = conv_group(u[s], W[s], n, None if spectra is None else spectra[s])
    return y, group


def conv_group(u: torch.Tensor, W: torch.Tensor, n: int, spectra: torch.Tensor | None = None) -> torch.Tensor:
    """`fft_conv` of channels u (g, P, L, Q) -> the view irfft(rfft(u) W)[..., :L] (g, P, R, L, Q)."""
    Uf = torch.fft.rfft(u, n=n, dim=2, out=spectra)  # (g, P, f, Q)
    return torch.fft.irfft(Uf.unsqueeze(2) * W, n=n, dim=3)[:, :, :, :u.shape[2]]


def channel_group(numbers_per_channel: int, bytes_per_number: int, threads: int = 1, budget: int | None = None) -> int:
    """Channels per group of `FFTConv`: about `budget` bytes (default FFT_CHUNK_BYTES) of
    spectra, at least one, and a multiple of `threads` (the compiled kernels share a group's
    channels among the threads: at the `cpu` preset's batch 8, 3 channels a group kept one of
    2 threads idle a third of the time)."""
    budget = FFT_CHUNK_BYTES if budget is None else budget
    group = max(1, budget // (numbers_per_channel * bytes_per_number))
    return -(-group // threads) * threads
