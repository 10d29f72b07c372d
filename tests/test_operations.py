"""suite.operations: the heavy operations of a call, counted while it runs, and their floor.

Expected counts are worked out by hand from the shapes (plain calls) and from the HumMUSS
block structure (hummuss/gdssm.py's docstring): per block, GELUs on x_id, u and the R
read-outs of the convolution; per FFT-convolved sequence one rfft and R irffts forward.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from hummuss.model import HumMUSS, HumMUSSConfig
from hummuss.ssm.conv import conv_method, fft_size
from suite.operations import count_operations, operation_floor, operation_rates


def test_plain_calls_are_counted_from_their_shapes():
    a, b = torch.randn(5, 7), torch.randn(7, 3)
    x = torch.randn(10, 10, requires_grad=True)

    def calls():
        torch.mm(a, b)  # 5 * 7 * 3 = 105
        torch.addmm(torch.zeros(3), a, b)  # 105
        torch.bmm(torch.randn(2, 5, 7), torch.randn(2, 7, 3))  # 210
        F.linear(torch.randn(4, 6, 7), torch.randn(3, 7))  # 4 * 6 rows * 7 * 3 = 504
        F.gelu(x).sum().backward()  # 100 forward, 100 backward
        torch.fft.rfft(torch.randn(6, 20), n=32)  # 6 transforms of 32 points
        torch.fft.irfft(torch.randn(4, 3, 17, dtype=torch.complex64), n=32, dim=-1)  # 12 of 32
        torch.fft.fft(torch.randn(8, dtype=torch.complex64))  # one complex transform of 8

    counts = count_operations(calls)
    assert counts["matmul_macs"] == 105 + 105 + 210 + 504
    assert counts["gelu"] == 100 and counts["gelu_backward"] == 100
    assert counts["fft"] == {"r2c:32": 6, "c2r:32": 12, "c2c:8": 1}


def test_inference_transforms_are_counted_once():
    """Under inference_mode the composite rfft reaches the counter itself; its transform must
    not be counted a second time below it."""
    with torch.inference_mode():
        counts = count_operations(lambda: torch.fft.rfft(torch.randn(5, 100), n=128, dim=1))
    assert counts["fft"] == {"r2c:128": 5}


def _small_model() -> HumMUSS:
    torch.manual_seed(0)
    return HumMUSS(HumMUSSConfig(dim=16, dim_rep=32, depth=1, state_size=8, expand=2.0))


B, T, J = 2, 50, 17  # temporal blocks: 50 frames, B J = 34 sequences -> FFT; spatial: 17 joints -> Toeplitz


def _per_block():
    H, N = 32, B * T * J  # width = expand * dim, tokens
    n = fft_size(2 * T - 1)
    assert conv_method(T, B * J) == "fft" and conv_method(J, B * T) == "toeplitz" and n == 128
    return H, N, n


def _linear_macs(model) -> int:
    return B * T * J * sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_a_hummuss_pass_counts_its_blocks_operations():
    model = _small_model().eval()
    x = torch.randn(B, T, J, 3)
    with torch.inference_mode():
        model(x)  # the convolution operators are cached from here on
        counts = count_operations(lambda: model(x))
    H, N, n = _per_block()
    # spatial blocks: R = 2 (one read-out each way), temporal: R = 4 (two each way); 2 of each
    assert counts["gelu"] == 2 * (2 + 2) * H * N + 2 * (2 + 4) * H * N
    assert counts["gelu_backward"] == 0
    sequences = B * J
    assert counts["fft"] == {f"r2c:{n}": 2 * H * sequences, f"c2r:{n}": 2 * 4 * H * sequences}
    toeplitz = H * (B * T) * J * (2 * J)  # (H, frames, J) @ (H, J, R J) per spatial block
    assert counts["matmul_macs"] == _linear_macs(model) + 2 * toeplitz


def test_a_training_step_counts_the_backward_too():
    model = _small_model().train()
    x = torch.randn(B, T, J, 3)
    H, N, n = _per_block()

    def step():
        model(x).square().mean().backward()

    counts = count_operations(step)
    assert counts["gelu"] == counts["gelu_backward"] == 2 * 4 * H * N + 2 * 6 * H * N
    # per temporal block (R = 4, transforms of a power-of-two size: hummuss/csrc/fft_mix_gate.cpp):
    # forward rfft of u and of the R kernels, R irffts; backward rfft of u again (its spectra are
    # not kept), R rffts of the outputs' gradients, one irfft of u's, R irffts of the kernels' gradients
    sequences = B * J
    assert counts["fft"] == {f"r2c:{n}": 2 * (H * sequences + 4 * H + H * sequences + 4 * H * sequences),
                             f"c2r:{n}": 2 * (4 * H * sequences + H * sequences + 4 * H)}
    assert counts["matmul_macs"] > 3 * _linear_macs(model)  # forward, the two products of each backward, kernels


def test_the_floor_adds_each_count_at_its_rate():
    counts = dict(matmul_macs=2e9, gelu=1e8, gelu_backward=5e7, fft={"r2c:512": 1e5, "c2r:512": 2e5})
    rates = dict(gelu_per_s=2e9, gelu_backward_per_s=1e9, fft_us={"r2c:512": 0.5, "c2r:512": 0.25})
    floor = operation_floor(counts, rates, matmul_gmacs=50.0)
    # 2e9 / 50e9 = 0.04 s; 1e8 / 2e9 = 0.05; 5e7 / 1e9 = 0.05; 1e5 x 0.5 us + 2e5 x 0.25 us = 0.1
    assert floor == pytest.approx(dict(matmul=0.04, gelu=0.05, gelu_backward=0.05, fft=0.1, total=0.24))
    counts["fft"]["c2r:1024"] = 1
    assert operation_floor(counts, rates, 50.0) is None  # an unmeasured size: no floor


def test_rates_are_measured_for_the_sizes_asked():
    rates = operation_rates(["r2c:64", "c2r:64", "c2c:16"], repeats=2, elements=1 << 12, batches=(8,))
    assert set(rates["fft_us"]) == {"r2c:64", "c2r:64", "c2c:16"}
    values = [rates["gelu_per_s"], rates["gelu_backward_per_s"], *rates["fft_us"].values()]
    assert all(v > 0 and math.isfinite(v) for v in values)
    with pytest.raises(ValueError, match="unknown FFT key"):
        operation_rates(["fft:64"], repeats=1, elements=16, batches=(1,))


def test_motionbert_counts_what_its_macs_per_frame_says():
    """MotionBERT's own count (Linear layers and the attention products, hummuss/baselines/
    motionbert.py) against the operations its pass runs: the fused attention counted too."""
    from hummuss.zoo import build_model

    torch.manual_seed(0)
    model = build_model("motionbert", "cpu").eval()
    frames = 27
    with torch.inference_mode():
        counts = count_operations(lambda: model(torch.randn(2, frames, 17, 3)))
    assert counts["matmul_macs"] == 2 * frames * model.macs_per_frame(frames)
    assert counts["gelu"] > 0 and counts["fft"] == {}


def test_fused_attention_backward_counts_its_five_products():
    q, k, v = (torch.randn(2, 3, 5, 4, requires_grad=True) for _ in range(3))

    def step():
        F.scaled_dot_product_attention(q, k, v).sum().backward()

    counts = count_operations(step)
    # 2 x 3 heads, L = S = 5, E = Ev = 4: forward 6 x 5 x 5 x 8 = 1,200; backward 6 x 25 x 20 = 3,000
    assert counts["matmul_macs"] == 1200 + 3000


def test_the_spatial_convolutions_compiled_products_are_counted():
    """hummuss.ssm.conv.ToeplitzProduct (hummuss/csrc/toeplitz_product.cpp) forward and backward:
    three products of H P L C multiply-accumulates, as torch.bmm's would count."""
    from hummuss import cpu_kernels
    from hummuss.ssm.conv import toeplitz_product

    if cpu_kernels.ops() is None:
        pytest.skip("the compiled CPU kernels are not built here")
    H, P, L, C = 3, 10, 17, 34
    u, T = torch.randn(H, P, L, requires_grad=True), torch.randn(H, L, C, requires_grad=True)
    counts = count_operations(lambda: toeplitz_product(u, T).sum().backward())
    assert counts["matmul_macs"] == 3 * H * P * L * C
    with torch.no_grad():  # without autograd: torch.bmm
        assert count_operations(lambda: toeplitz_product(u, T))["matmul_macs"] == H * P * L * C
