// The DSSM kernel's Vandermonde factors, the kernel from them and its backward's sums over
// them, for training (hummuss.ssm.conv's `power_factors`, `_factored_kernel` and
// `VandermondeKernel`; their PyTorch operations the reference, and the path for float64, GPUs
// and where the kernels are not built).
//
// With dA = exp(dtlam) per channel h and mode m, and lags l = q b + r (b = ceil(sqrt(L))):
//
//     power_factors:    Q[h, q, m] = dA^(q b)   (H, nq, M) complex, as (H, nq, M, 2) floats
//                       R[h, m, :, r] = (Re dA^r, Im dA^r)   (H, M, 2, b) floats
//     factored_kernel:  K[c, h, q b + r] = 2 Re(sum_m W[c, h, m] Q[h, q, m] dA_m^r)   (k, H, L)
//     kernel_sums:      s[h, 0, c, m] = sum_l g dA_m^l,  s[h, 1, c, m] = sum_l g l dA_m^l,
//                       g = 2 gK[c, h, l]   (H, 2, k, M) complex
//
// Each power is exp(x) (cos(a), sin(a)) with x = Re(dtlam) t, a = Im(dtlam) t, by ATen's
// Vectorized<float> exp, cos and sin; a power whose x is below `floor` is zero (no subnormals).
// torch.cos and torch.sin take another vector routine on this build: the factors differed from
// the PyTorch path's by at most 1.8e-7 (moduli at most 1, paper size).
// PyTorch takes some fifteen passes over broadcast, strided tensors (5.3 ms at paper size,
// H 640, M 64, L 243, on a 2-core EPYC, against 0.45 ms for one torch.cos of that size); here
// one pass, channels in parallel (ATen's pool). factored_kernel and kernel_sums do per channel
// what PyTorch does as batched matmuls of tiny matrices (640 of 32 x 128 by 128 x 16 at paper
// size) and, for the sums, a complex product and a sum over q through a (H, 2k, nq, M) tensor
// (21 MB): on a 2-core EPYC, for a temporal kernel (k 2, H 640, M 64, L 243), 1.2 against 0.57 ms
// forward and 4.4-5.1 against 1.7 ms backward.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/complex.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

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

// Re, Im planes of a channel's (M) complex row, zero-padded to Mp (a whole number of vectors)
inline void planes(const C* row, int64_t M, int64_t Mp, float* re, float* im) {
  for (int64_t m = 0; m < Mp; ++m) {
    re[m] = m < M ? row[m].real() : 0.f;
    im[m] = m < M ? row[m].imag() : 0.f;
  }
}

// q rows per tile of `factored_kernel`, each its own accumulator: at paper size (k 2, H 640,
// M 64, L 243) on a 2-core AVX-512 EPYC, tiles of 2, 4, 8 and 16 took 0.86, 0.57, 1.19 and
// 1.37 ms (medians of 50 calls; 8 and 16 were slower on one thread too)
constexpr int64_t QT = 4;

at::Tensor factored_kernel(const at::Tensor& W, const at::Tensor& Q, const at::Tensor& R, int64_t L) {
  TORCH_CHECK(W.dim() == 3 && Q.dim() == 3 && R.dim() == 3 && W.size(1) == Q.size(0) && W.size(2) == Q.size(2) &&
                  R.size(0) == Q.size(0) && R.size(1) == 2 * Q.size(2) && L >= 1 && L <= Q.size(1) * R.size(2),
              "factored_kernel: W (k, H, M), Q (H, nq, M), R (H, 2M, b), 1 <= L <= nq b");
  for (const auto* t : {&W, &Q}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kComplexFloat && t->is_contiguous() && !t->is_conj(),
                "factored_kernel: W and Q contiguous complex64 CPU tensors without a lazy conjugate");
  }
  TORCH_CHECK(R.device().is_cpu() && R.scalar_type() == at::kFloat && R.is_contiguous(),
              "factored_kernel: R contiguous float32 on the CPU");
  const int64_t k = W.size(0), H = W.size(1), M = W.size(2), nq = Q.size(1), b = R.size(2);
  at::Tensor K = at::empty({k, H, L}, R.options());
  const C* pw = W.data_ptr<C>();
  const C* pq = Q.data_ptr<C>();
  const float* pr = R.data_ptr<float>();
  float* out = K.data_ptr<float>();
  constexpr int64_t n = V::size(), nc = VC::size();
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> B(2 * nq * M);  // conj(W Q) of one channel and read-out: (Re, -Im) per q, m
    for (int64_t h = h0; h < h1; ++h) {
      const C* qh = pq + h * nq * M;
      const float* rh = pr + h * 2 * M * b;
      for (int64_t c = 0; c < k; ++c) {
        const C* wh = pw + (c * H + h) * M;
        for (int64_t q = 0; q < nq; ++q) {
          C* brow = reinterpret_cast<C*>(B.data()) + q * M;
          for (int64_t m = 0; m < M; m += nc) {
            const int64_t count = std::min<int64_t>(nc, M - m);
            (VC::loadu(wh + m, count) * VC::loadu(qh + q * M + m, count)).conj().store(brow + m, count);
          }
        }
        float* kh = out + (c * H + h) * L;
        for (int64_t q0 = 0; q0 < nq && q0 * b < L; q0 += QT) {
          for (int64_t r0 = 0; r0 < b; r0 += n) {
            const int64_t count = std::min<int64_t>(n, b - r0);
            V acc[QT];
            for (int64_t j = 0; j < QT; ++j) acc[j] = V(0.f);
            // K[q b + r] = sum over the 2M rows j of B[q, j] R[j, r]: the tile's q independent
            const float* bq[QT];  // the tile's rows of B; past nq a row repeats, not stored
            for (int64_t t = 0; t < QT; ++t) bq[t] = B.data() + std::min<int64_t>(q0 + t, nq - 1) * 2 * M;
            for (int64_t j = 0; j < 2 * M; ++j) {
              const V row = V::loadu(rh + j * b + r0, count);
              for (int64_t t = 0; t < QT; ++t) acc[t] = at::vec::fmadd(V(bq[t][j]), row, acc[t]);
            }
            for (int64_t t = 0; t < QT && q0 + t < nq; ++t) {
              const int64_t l = (q0 + t) * b + r0;
              if (l < L) (acc[t] * V(2.f)).store(kh + l, std::min<int64_t>(count, L - l));
            }
          }
        }
      }
    }
  });
  return K;
}

// kernel_sums for U vectors of modes from m, one q: T0 = sum_r g[q b + r] dA^r and
// T1 = sum_r g[q b + r] (q b + r) dA^r (g = 2 gK), times dA^(q b), added to the four sums
template <int U>
inline void sums_step(const float* g, int64_t q, int64_t b, int64_t steps, int64_t Mp, int64_t m,
                      const std::vector<float>& rre, const std::vector<float>& rim, const std::vector<float>& qre,
                      const std::vector<float>& qim, std::vector<float>& sum) {
  constexpr int64_t n = V::size();
  V t0r[U], t0i[U], t1r[U], t1i[U];
  for (int u = 0; u < U; ++u) t0r[u] = t0i[u] = t1r[u] = t1i[u] = V(0.f);
  for (int64_t r = 0; r < steps; ++r) {
    const float gl = 2.f * g[q * b + r];
    const V g0(gl), g1(gl * static_cast<float>(q * b + r));
    for (int u = 0; u < U; ++u) {
      const V a = V::loadu(&rre[r * Mp + m + u * n]), bb = V::loadu(&rim[r * Mp + m + u * n]);
      t0r[u] = at::vec::fmadd(g0, a, t0r[u]);
      t0i[u] = at::vec::fmadd(g0, bb, t0i[u]);
      t1r[u] = at::vec::fmadd(g1, a, t1r[u]);
      t1i[u] = at::vec::fmadd(g1, bb, t1i[u]);
    }
  }
  for (int u = 0; u < U; ++u) {
    const int64_t mm = m + u * n;
    const V xr = V::loadu(&qre[q * Mp + mm]), xi = V::loadu(&qim[q * Mp + mm]);
    float* s0r = &sum[mm];
    float* s0i = &sum[Mp + mm];
    float* s1r = &sum[2 * Mp + mm];
    float* s1i = &sum[3 * Mp + mm];
    (V::loadu(s0r) + t0r[u] * xr - t0i[u] * xi).store(s0r);
    (V::loadu(s0i) + t0r[u] * xi + t0i[u] * xr).store(s0i);
    (V::loadu(s1r) + t1r[u] * xr - t1i[u] * xi).store(s1r);
    (V::loadu(s1i) + t1r[u] * xi + t1i[u] * xr).store(s1i);
  }
}

at::Tensor kernel_sums(const at::Tensor& gK, const at::Tensor& Q, const at::Tensor& R) {
  TORCH_CHECK(gK.dim() == 3 && Q.dim() == 3 && R.dim() == 3 && gK.size(1) == Q.size(0) && R.size(0) == Q.size(0) &&
                  R.size(1) == 2 * Q.size(2) && gK.size(2) <= Q.size(1) * R.size(2),
              "kernel_sums: gK (k, H, L), Q (H, nq, M), R (H, 2M, b), L <= nq b");
  TORCH_CHECK(Q.device().is_cpu() && Q.scalar_type() == at::kComplexFloat && Q.is_contiguous() && !Q.is_conj(),
              "kernel_sums: Q contiguous complex64 on the CPU without a lazy conjugate");
  for (const auto* t : {&gK, &R}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->is_contiguous(),
                "kernel_sums: gK and R contiguous float32 on the CPU");
  }
  const int64_t k = gK.size(0), H = gK.size(1), L = gK.size(2), M = Q.size(2), nq = Q.size(1), b = R.size(2);
  at::Tensor s = at::empty({H, 2, k, M}, Q.options());
  const float* pg = gK.data_ptr<float>();
  const C* pq = Q.data_ptr<C>();
  const float* pr = R.data_ptr<float>();
  C* out = s.data_ptr<C>();
  constexpr int64_t n = V::size();
  const int64_t Mp = (M + n - 1) / n * n;
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    // per channel, planar and zero-padded to Mp: R's rows by step r, Q's by q, the four sums
    std::vector<float> rre(b * Mp), rim(b * Mp), qre(nq * Mp), qim(nq * Mp), sum(4 * Mp);
    for (int64_t h = h0; h < h1; ++h) {
      const float* rh = pr + h * 2 * M * b;
      for (int64_t r = 0; r < b; ++r) {
        for (int64_t m = 0; m < Mp; ++m) {
          rre[r * Mp + m] = m < M ? rh[(2 * m) * b + r] : 0.f;
          rim[r * Mp + m] = m < M ? rh[(2 * m + 1) * b + r] : 0.f;
        }
      }
      for (int64_t q = 0; q < nq; ++q) planes(pq + (h * nq + q) * M, M, Mp, &qre[q * Mp], &qim[q * Mp]);
      for (int64_t c = 0; c < k; ++c) {
        const float* g = pg + (c * H + h) * L;
        std::fill(sum.begin(), sum.end(), 0.f);  // Re, Im of sum_l g dA^l, then of sum_l g l dA^l
        for (int64_t q = 0; q < nq && q * b < L; ++q) {
          const int64_t steps = std::min<int64_t>(b, L - q * b);
          int64_t m = 0;
          for (; m + 4 * n <= Mp; m += 4 * n) sums_step<4>(g, q, b, steps, Mp, m, rre, rim, qre, qim, sum);
          for (; m < Mp; m += n) sums_step<1>(g, q, b, steps, Mp, m, rre, rim, qre, qim, sum);
        }
        C* s0 = out + ((h * 2 + 0) * k + c) * M;
        C* s1 = out + ((h * 2 + 1) * k + c) * M;
        for (int64_t m = 0; m < M; ++m) {
          s0[m] = C(sum[m], sum[Mp + m]);
          s1[m] = C(sum[2 * Mp + m], sum[3 * Mp + m]);
        }
      }
    }
  });
  return s;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("power_factors(Tensor lr, Tensor li, int b, int nq, float floor) -> (Tensor, Tensor)");
  m.def("factored_kernel(Tensor W, Tensor Q, Tensor R, int L) -> Tensor");
  m.def("kernel_sums(Tensor gK, Tensor Q, Tensor R) -> Tensor");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) {
  m.impl("power_factors", &power_factors);
  m.impl("factored_kernel", &factored_kernel);
  m.impl("kernel_sums", &kernel_sums);
}
