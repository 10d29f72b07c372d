// One streaming step of a temporal block's diagonal SSM, in place on its planar state: the
// CPU kernel behind hummuss.ssm.state_kernel (hummuss.ssm.recurrence.advance_state_planar
// is the same step in PyTorch operations, and stays the reference).
//
//     s_hnm <- a_hm s_hnm + b_hm u_nh                    (complex a, b, s; real u)
//     y_nhc  = sum_m (Rr_hcm Re s_hnm + Ri_hcm Im s_hnm) + D_ch u_nh
//
// s (2, H, N, M) = (Re, Im), channel-major; a, b (2, H, M), or (2, H, N, M) for a step of its
// own per stream; u (N, H); Rr, Ri (H, k, M) = (2 Re C, -2 Im C); D (k, H). Returns y
// (N, H, k). float32 only (the streaming step's dtype). s, a, b and u may have any strides
// with contiguous modes (Re and Im rows alternating, (H, N, 2, M) in memory, measured 16%
// slower than the two planes apart: 4.59 against 3.95 ms for paper-causal's 10 blocks).
//
// The state is read once and written back in place, in the same cache lines: a step that
// writes a new state (what torch.compile makes of advance_state_planar) also reads every line
// of the new buffer before writing it (a write-allocate), half as much traffic again. At batch
// 1 the step is bound by that traffic (paper-causal: 10 blocks of 6.7 MB of state a frame).
// Channels h run in parallel (ATen's pool); a channel's a, b, Rr and Ri stay in L1 while its
// N streams' states go past.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <functional>

namespace {

using at::vec::Vectorized;
using V = Vectorized<float>;

constexpr int64_t kMaxReadouts = 8;

// One channel h, one stream n: the update of its M modes and its k read-outs. K > 0 is k
// known at compile time (the accumulators stay in registers), 0 a run-time k.
template <int K>
inline void channel_stream(float* sr, float* si, const float* ar, const float* ai, const float* br,
                           const float* bi, float u, const float* Rr, const float* Ri, int64_t M, int64_t k,
                           float* acc) {
  const int64_t kk = K > 0 ? K : k;
  V vacc[kMaxReadouts];
  for (int64_t c = 0; c < kk; ++c) vacc[c] = V(0.f);
  const V vu(u);
  int64_t m = 0;
  for (; m + V::size() <= M; m += V::size()) {
    const V xr = V::loadu(sr + m), xi = V::loadu(si + m);
    const V vr = V::loadu(ar + m), vi = V::loadu(ai + m);
    const V nr = at::vec::fmadd(V::loadu(br + m), vu, vr * xr - vi * xi);
    const V ni = at::vec::fmadd(V::loadu(bi + m), vu, vr * xi + vi * xr);
    nr.store(sr + m);
    ni.store(si + m);
    for (int64_t c = 0; c < kk; ++c)
      vacc[c] = at::vec::fmadd(nr, V::loadu(Rr + c * M + m), at::vec::fmadd(ni, V::loadu(Ri + c * M + m), vacc[c]));
  }
  for (int64_t c = 0; c < kk; ++c) acc[c] = at::vec::vec_reduce_all<float>(std::plus<V>(), vacc[c]);  // the lanes' sum
  for (; m < M; ++m) {  // the tail of M that fills no vector
    const float xr = sr[m], xi = si[m];
    const float nr = ar[m] * xr - ai[m] * xi + br[m] * u;
    const float ni = ar[m] * xi + ai[m] * xr + bi[m] * u;
    sr[m] = nr;
    si[m] = ni;
    for (int64_t c = 0; c < kk; ++c) acc[c] += nr * Rr[c * M + m] + ni * Ri[c * M + m];
  }
}

// Strides in elements, of s or of a and b: Re -> Im, channel, stream (the modes are contiguous).
struct Strides {
  int64_t plane, h, n;
};

template <int K>
void run(float* s, const float* a, const float* b, const at::Tensor& u, const float* Rr, const float* Ri,
         const float* D, float* y, int64_t H, int64_t N, int64_t M, int64_t k, Strides ss, Strides sab) {
  const float* up = u.data_ptr<float>();
  const int64_t un = u.stride(0), uh = u.stride(1);
  at::parallel_for(0, H, 8, [&](int64_t h0, int64_t h1) {
    float acc[kMaxReadouts];
    for (int64_t h = h0; h < h1; ++h) {
      const float* R = Rr + h * k * M;
      const float* I = Ri + h * k * M;
      for (int64_t n = 0; n < N; ++n) {
        const int64_t at = h * ss.h + n * ss.n;      // state row (h, n)
        const int64_t ab = h * sab.h + n * sab.n;    // its a, b row (sab.n = 0: one step for all streams)
        const float un_h = up[n * un + h * uh];
        channel_stream<K>(s + at, s + ss.plane + at, a + ab, a + sab.plane + ab, b + ab, b + sab.plane + ab, un_h,
                          R, I, M, k, acc);
        for (int64_t c = 0; c < k; ++c) y[(n * H + h) * k + c] = acc[c] + D[c * H + h] * un_h;
      }
    }
  });
}

at::Tensor state_step_(at::Tensor s, const at::Tensor& a, const at::Tensor& b, const at::Tensor& u,
                       const at::Tensor& Rr, const at::Tensor& Ri, const at::Tensor& D) {
  TORCH_CHECK(s.dim() == 4 && s.size(0) == 2 && s.stride(3) == 1, "state_step_: s (2, H, N, M), its modes contiguous");
  const int64_t H = s.size(1), N = s.size(2), M = s.size(3), k = Rr.size(1);
  const bool per_stream = a.dim() == 4;
  for (const at::Tensor* t : {static_cast<const at::Tensor*>(&s), &a, &b, &u, &Rr, &Ri, &D})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat, "state_step_: float32 CPU tensors");
  for (const auto* t : {&a, &b, &Rr, &Ri, &D}) TORCH_CHECK(t->is_contiguous(), "state_step_: a, b, Rr, Ri, D contiguous");
  if (per_stream) {
    TORCH_CHECK(a.sizes() == s.sizes() && b.sizes() == s.sizes(), "state_step_: a, b (2, H, N, M) like s");
  } else {
    TORCH_CHECK(a.dim() == 3 && a.size(0) == 2 && a.size(1) == H && a.size(2) == M && b.sizes() == a.sizes(),
                "state_step_: a, b (2, H, M)");
  }
  TORCH_CHECK(u.dim() == 2 && u.size(0) == N && u.size(1) == H, "state_step_: u (N, H)");
  TORCH_CHECK(Rr.dim() == 3 && Rr.size(0) == H && Rr.size(2) == M && Ri.sizes() == Rr.sizes(),
              "state_step_: Rr, Ri (H, k, M)");
  TORCH_CHECK(k >= 1 && k <= kMaxReadouts, "state_step_: 1 to ", kMaxReadouts, " read-outs");
  TORCH_CHECK(D.dim() == 2 && D.size(0) == k && D.size(1) == H, "state_step_: D (k, H)");
  at::Tensor y = at::empty({N, H, k}, s.options());
  const Strides ss{s.stride(0), s.stride(1), s.stride(2)};
  const Strides sab{a.stride(0), a.stride(1), per_stream ? a.stride(2) : 0};
  auto go = [&](auto kernel) {
    kernel(s.data_ptr<float>(), a.data_ptr<float>(), b.data_ptr<float>(), u, Rr.data_ptr<float>(),
           Ri.data_ptr<float>(), D.data_ptr<float>(), y.data_ptr<float>(), H, N, M, k, ss, sab);
  };
  if (k == 1) go(run<1>);
  else if (k == 2) go(run<2>);
  else go(run<0>);
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("state_step_(Tensor(a!) s, Tensor a, Tensor b, Tensor u, Tensor Rr, Tensor Ri, Tensor D) -> Tensor");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) {
  m.impl("state_step_", &state_step_);
}
