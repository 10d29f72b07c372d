// The DSSM kernel's Vandermonde factors and its backward's sum over them, for training
// (hummuss.ssm.conv's `power_factors` and `VandermondeKernel`; their PyTorch operations the
// reference, and the path for float64, GPUs and where the kernels are not built).
//
// With dA = exp(dtlam) per channel h and mode m, and lags l = q b + r (b = ceil(sqrt(L))):
//
//     power_factors:  Q[h, q, m] = dA^(q b)   (H, nq, M) complex, as (H, nq, M, 2) floats
//                     R[h, m, :, r] = (Re dA^r, Im dA^r)   (H, M, 2, b) floats
//     power_sums:     s[h, f, m] = sum_q S[h, f, q, m] Q[h, q, m]   S (H, F, nq, M), s (H, F, M) complex
//
// Each power is exp(x) (cos(a), sin(a)) with x = Re(dtlam) t, a = Im(dtlam) t, by ATen's
// Vectorized<float> exp, cos and sin; a power whose x is below `floor` is zero (no subnormals).
// torch.cos and torch.sin take another vector routine on this build: the factors differed from
// the PyTorch path's by at most 1.8e-7 (moduli at most 1, paper size).
// PyTorch takes some fifteen passes over broadcast, strided tensors (5.3 ms at paper size,
// H 640, M 64, L 243, on a 2-core EPYC, against 0.45 ms for one torch.cos of that size); here
// one pass, channels in parallel (ATen's pool). power_sums replaces a complex product the size
// of S and a sum over q.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/complex.h>
#include <torch/library.h>

#include <tuple>

namespace {

using V = at::vec::Vectorized<float>;
using C = c10::complex<float>;
using VC = at::vec::Vectorized<C>;

// exp(lr t) (cos(li t), sin(li t)) for a vector of t (or of lr, li): zero where lr t < floor
inline void power(const V& lr, const V& li, const V& t, float floor, V& re, V& im) {
  const V x = lr * t;
  V mag = x.exp();
  mag = V::blendv(mag, V(0.f), x < V(floor));
  const V a = li * t;
  re = mag * a.cos();
  im = mag * a.sin();
}

void check_plane(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(),
              "power_factors: ", name, " (H, M) contiguous float32 on the CPU");
}

std::tuple<at::Tensor, at::Tensor> power_factors(const at::Tensor& lr, const at::Tensor& li, int64_t b, int64_t nq,
                                                 double floor) {
  check_plane(lr, "Re(dtlam)");
  check_plane(li, "Im(dtlam)");
  TORCH_CHECK(li.sizes() == lr.sizes() && b >= 1 && nq >= 1, "power_factors: Re and Im of one shape, b, nq >= 1");
  const int64_t H = lr.size(0), M = lr.size(1);
  at::Tensor Q = at::empty({H, nq, M, 2}, lr.options());
  at::Tensor R = at::empty({H, M, 2, b}, lr.options());
  const float* pr = lr.data_ptr<float>();
  const float* pi = li.data_ptr<float>();
  float* q_out = Q.data_ptr<float>();
  float* r_out = R.data_ptr<float>();
  const float fl = static_cast<float>(floor);
  constexpr int64_t n = V::size();
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      const float* lrh = pr + h * M;
      const float* lih = pi + h * M;
      // Q: modes along the vector, (Re, Im) interleaved on the way out
      for (int64_t q = 0; q < nq; ++q) {
        const V t(static_cast<float>(q * b));
        float* row = q_out + (h * nq + q) * M * 2;
        for (int64_t m = 0; m < M; m += n) {
          const int64_t count = std::min<int64_t>(n, M - m);
          V re, im;
          power(V::loadu(lrh + m, count), V::loadu(lih + m, count), t, fl, re, im);
          const auto [lo, hi] = at::vec::interleave2<float>(re, im);
          lo.store(row + 2 * m, std::min<int64_t>(n, 2 * count));
          if (2 * count > n) hi.store(row + 2 * m + n, 2 * count - n);
        }
      }
      // R: one row of Re and one of Im per mode, b steps each
      if (b >= n) {  // the steps r along the vector
        for (int64_t m = 0; m < M; ++m) {
          const V lrv(lrh[m]), liv(lih[m]);
          float* row = r_out + (h * M + m) * 2 * b;
          for (int64_t r = 0; r < b; r += n) {
            const int64_t count = std::min<int64_t>(n, b - r);
            V re, im;
            power(lrv, liv, V::arange(static_cast<float>(r), 1.f), fl, re, im);
            re.store(row + r, count);
            im.store(row + b + r, count);
          }
        }
      } else {  // few steps (b 5 for the 17 joints): the modes along the vector, stored step by step
        float re_buf[n], im_buf[n];
        for (int64_t r = 0; r < b; ++r) {
          const V t(static_cast<float>(r));
          for (int64_t m = 0; m < M; m += n) {
            const int64_t count = std::min<int64_t>(n, M - m);
            V re, im;
            power(V::loadu(lrh + m, count), V::loadu(lih + m, count), t, fl, re, im);
            re.store(re_buf);
            im.store(im_buf);
            for (int64_t i = 0; i < count; ++i) {
              float* row = r_out + (h * M + m + i) * 2 * b;
              row[r] = re_buf[i];
              row[b + r] = im_buf[i];
            }
          }
        }
      }
    }
  });
  return {Q, R};
}

at::Tensor power_sums(const at::Tensor& S, const at::Tensor& Q) {
  TORCH_CHECK(S.dim() == 4 && Q.dim() == 3 && S.size(0) == Q.size(0) && S.size(2) == Q.size(1) &&
                  S.size(3) == Q.size(2),
              "power_sums: S (H, F, nq, M), Q (H, nq, M)");
  for (const auto* t : {&S, &Q}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kComplexFloat && t->is_contiguous() && !t->is_conj(),
                "power_sums: contiguous complex64 CPU tensors without a lazy conjugate");
  }
  const int64_t H = S.size(0), F = S.size(1), nq = S.size(2), M = S.size(3);
  at::Tensor s = at::empty({H, F, M}, S.options());
  const C* ps = S.data_ptr<C>();
  const C* pq = Q.data_ptr<C>();
  C* out = s.data_ptr<C>();
  constexpr int64_t n = VC::size();
  at::parallel_for(0, H * F, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t h = i / F;
      const C* srow = ps + i * nq * M;
      const C* qrow = pq + h * nq * M;
      for (int64_t m = 0; m < M; m += n) {
        const int64_t count = std::min<int64_t>(n, M - m);
        VC acc(C(0, 0));
        for (int64_t q = 0; q < nq; ++q) {
          acc = acc + VC::loadu(srow + q * M + m, count) * VC::loadu(qrow + q * M + m, count);
        }
        acc.store(out + i * M + m, count);
      }
    }
  });
  return s;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("power_factors(Tensor lr, Tensor li, int b, int nq, float floor) -> (Tensor, Tensor)");
  m.def("power_sums(Tensor S, Tensor Q) -> Tensor");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) {
  m.impl("power_factors", &power_factors);
  m.impl("power_sums", &power_sums);
}
