// The spectral products of the FFT convolution's backward (hummuss.ssm.fft_conv.FFTConv), for
// one channel group, in one pass over the output gradient's spectra:
//
//     GU[g, p, f]  = sum_r Gf[g, p, r, f] conj(W[g, r, f])      (the input's gradient, before irfft)
//     S[g, r, f]   = sum_p Gf[g, p, r, f] conj(U[g, p, f])      (each kernel's gradient, before irfft)
//
// Gf (G, P, R, F), W (G, R, F), U (G, P, F): complex64, contiguous. The PyTorch operations
// (FFTConv's reference path) take four passes: two products of Gf's size and two sums; here
// Gf is read once, W and U from L1, GU and S written once. Channels g run in parallel
// (ATen's pool); the frequencies are vectorised (ATen's Vectorized<complex<float>>).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/complex.h>
#include <torch/library.h>

#include <tuple>

namespace {

using C = c10::complex<float>;
using VC = at::vec::Vectorized<C>;

std::tuple<at::Tensor, at::Tensor> spectral_backward(const at::Tensor& Gf, const at::Tensor& W, const at::Tensor& U,
                                                     bool input_grad, bool kernel_grad) {
  TORCH_CHECK(Gf.dim() == 4 && W.dim() == 3 && U.dim() == 3,
              "spectral_backward: Gf (G, P, R, F), W (G, R, F), U (G, P, F)");
  const int64_t G = Gf.size(0), P = Gf.size(1), R = Gf.size(2), F = Gf.size(3);
  TORCH_CHECK(W.size(0) == G && W.size(1) == R && W.size(2) == F, "spectral_backward: W (G, R, F) for Gf (G, P, R, F)");
  TORCH_CHECK(U.size(0) == G && U.size(1) == P && U.size(2) == F, "spectral_backward: U (G, P, F) for Gf (G, P, R, F)");
  for (const auto* t : {&Gf, &W, &U}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kComplexFloat && t->is_contiguous(),
                "spectral_backward: contiguous complex64 CPU tensors");
    TORCH_CHECK(!t->is_conj(), "spectral_backward: tensors without a lazy conjugate");
  }
  at::Tensor GU = at::empty({input_grad ? G : 0, P, F}, Gf.options());
  at::Tensor S = at::zeros({kernel_grad ? G : 0, R, F}, Gf.options());
  const C* gf = Gf.data_ptr<C>();
  const C* w = W.data_ptr<C>();
  const C* u = U.data_ptr<C>();
  C* gu = input_grad ? GU.data_ptr<C>() : nullptr;
  C* s = kernel_grad ? S.data_ptr<C>() : nullptr;
  constexpr int64_t n = VC::size();
  at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      for (int64_t p = 0; p < P; ++p) {
        const C* grow = gf + (g * P + p) * R * F;  // Gf[g, p, :, :]
        const C* urow = u + (g * P + p) * F;
        C* gurow = gu ? gu + (g * P + p) * F : nullptr;
        for (int64_t f = 0; f < F; f += n) {
          const int64_t count = std::min<int64_t>(n, F - f);
          const VC uc = kernel_grad ? VC::loadu(urow + f, count).conj() : VC(C(0, 0));
          VC acc(C(0, 0));
          for (int64_t r = 0; r < R; ++r) {
            const VC x = VC::loadu(grow + r * F + f, count);
            if (gurow) acc = acc + x * VC::loadu(w + (g * R + r) * F + f, count).conj();
            if (s) {
              C* srow = s + (g * R + r) * F + f;
              (VC::loadu(srow, count) + x * uc).store(srow, count);
            }
          }
          if (gurow) acc.store(gurow + f, count);
        }
      }
    }
  });
  return {GU, S};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("spectral_backward(Tensor Gf, Tensor W, Tensor U, bool input_grad, bool kernel_grad) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) {
  m.impl("spectral_backward", &spectral_backward);
}
