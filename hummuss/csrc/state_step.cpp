// One streaming step of a temporal block's diagonal SSM, in place on its planar state: the
// CPU kernel behind hummuss.ssm.state_kernel (hummuss.ssm.recurrence.advance_state_planar
// is the same step in PyTorch operations, and stays the reference).
//
//     s_hnm <- a_hm s_hnm + b_hm u_nh                    (complex a, b, s; real u)
//     y_nhc  = sum_m (Rr_hcm Re s_hnm + Ri_hcm Im s_hnm) + D_ch u_nh
//
// s (2, H, N, M) = (Re, Im), channel-major; a, b (2, H, M), or (2, H, N, M) for a step of its
// own per stream; u (N, H); Rr, Ri (H, k, M) = (2 Re C, -2 Im C); D (k, H). Returns y
// (N, H, k), laid out as k planes (N, H) (strides (H, 1, N H)): the mix that follows
// (GELU, weights, sum over k) then runs along contiguous channels. float32 only (the streaming step's dtype). s, a, b and u may have any strides
// with contiguous modes (Re and Im rows alternating, (H, N, 2, M) in memory, measured 16%
// slower than the two planes apart: 4.59 against 3.95 ms for paper-causal's 10 blocks).
//
// The state is read once and written back in place, in the same cache lines: a step that
// writes a new state (what torch.compile makes of advance_state_planar) also reads every line
// of the new buffer before writing it (a write-allocate), half as much traffic again. At batch
// 1 the step is bound by that traffic (paper-causal: 10 blocks of 6.7 MB of state a frame).
// Channels h run in parallel (ATen's pool); a channel's a, b, Rr and Ri stay in L1 while its
// N streams' states go past. Each row asks for the state's lines 2 KB ahead (the rows that
// follow, into the next channel's): paper-causal's 10 blocks from memory on a 2-core AVX-512
// Xeon took 1.92 ms without, 1.69 ms with (1.72 at 4 KB ahead, 1.77 at 8 KB; medians of 50).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "gelu.h"

#include <algorithm>
#include <functional>

namespace {

using at::vec::Vectorized;
using V = Vectorized<float>;

constexpr int64_t kMaxReadouts = 8;
constexpr int64_t kPrefetchFloats = 512;  // how far ahead of a state row to ask for its lines (2 KB),
                                          // to be written (GCC's and Clang's __builtin_prefetch)

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
    __builtin_prefetch(sr + m + kPrefetchFloats, 1, 3);
    __builtin_prefetch(si + m + kPrefetchFloats, 1, 3);
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

// The same for NB streams of channel h that share its a and b (one step for all streams):
// a, b, Rr and Ri are loaded once for the NB streams. One stream at a time issues ten vector
// loads per vector of modes at k = 2, and the loads bounded the step: with the state in
// cache it took 0.7-0.95 of its time from memory. Measured for paper-causal's 10 blocks,
// alternated in one process (200 rounds): 1.79 against 2.44 ms in cache, 3.19 against 3.40
// ms from memory (a pass of mul_ in place 2.60); NB = 4 was faster in cache (1.94 ms) but
// slower from memory (3.78 ms), as was prefetching the next rows (4.30 ms). s[j] are the NB
// state rows (Re; Im at + plane).
template <int K, int NB>
inline void channel_streams(float* const* s, int64_t plane, const float* ar, const float* ai, const float* br,
                            const float* bi, const float* u, const float* Rr, const float* Ri, int64_t M,
                            float* acc) {
  V vacc[NB][K];
  V vu[NB];
  for (int j = 0; j < NB; ++j) {
    vu[j] = V(u[j]);
    for (int c = 0; c < K; ++c) vacc[j][c] = V(0.f);
  }
  int64_t m = 0;
  for (; m + V::size() <= M; m += V::size()) {
    const V vr = V::loadu(ar + m), vi = V::loadu(ai + m);
    const V wr = V::loadu(br + m), wi = V::loadu(bi + m);
    V R[K], I[K];
    for (int c = 0; c < K; ++c) {
      R[c] = V::loadu(Rr + c * M + m);
      I[c] = V::loadu(Ri + c * M + m);
    }
    for (int j = 0; j < NB; ++j) {
      float* sr = s[j] + m;
      float* si = s[j] + plane + m;
      __builtin_prefetch(sr + kPrefetchFloats, 1, 3);  // the rows that follow (next streams, next channel)
      __builtin_prefetch(si + kPrefetchFloats, 1, 3);
      const V xr = V::loadu(sr), xi = V::loadu(si);
      const V nr = at::vec::fmadd(wr, vu[j], vr * xr - vi * xi);
      const V ni = at::vec::fmadd(wi, vu[j], vr * xi + vi * xr);
      nr.store(sr);
      ni.store(si);
      for (int c = 0; c < K; ++c) vacc[j][c] = at::vec::fmadd(nr, R[c], at::vec::fmadd(ni, I[c], vacc[j][c]));
    }
  }
  for (int j = 0; j < NB; ++j)
    for (int c = 0; c < K; ++c) acc[j * K + c] = at::vec::vec_reduce_all<float>(std::plus<V>(), vacc[j][c]);
  for (; m < M; ++m) {  // the tail of M that fills no vector
    for (int j = 0; j < NB; ++j) {
      float* sr = s[j];
      float* si = s[j] + plane;
      const float xr = sr[m], xi = si[m];
      const float nr = ar[m] * xr - ai[m] * xi + br[m] * u[j];
      const float ni = ar[m] * xi + ai[m] * xr + bi[m] * u[j];
      sr[m] = nr;
      si[m] = ni;
      for (int c = 0; c < K; ++c) acc[j * K + c] += nr * Rr[c * M + m] + ni * Ri[c * M + m];
    }
  }
}

// Strides in elements, of s or of a and b: Re -> Im, channel, stream (the modes are contiguous).
struct Strides {
  int64_t plane, h, n;
};

// The read-out mix that follows in the streaming step, x_nh = mb_h + sum_c mw_ch GELU(y_nhc),
// on channels [h0, h1) of the k planes y (k, N, H) that the same thread has just written (in
// cache): vectors along the channels, the GELU of gelu.h.
inline void mix_readouts(const float* y, const float* mw, const float* mb, float* x, int64_t h0, int64_t h1,
                         int64_t H, int64_t N, int64_t k) {
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t h = h0; h < h1; h += V::size()) {
      const int count = static_cast<int>(std::min<int64_t>(V::size(), h1 - h));
      V acc = V::loadu(mb + h, count);
      for (int64_t c = 0; c < k; ++c)
        acc = at::vec::fmadd(V::loadu(mw + c * H + h, count),
                             hummuss_gelu::gelu(V::loadu(y + (c * N + n) * H + h, count)), acc);
      acc.store(x + n * H + h, count);
    }
  }
}

// mw, mb, x: the read-out mix (mix_readouts) after the update where not null.
template <int K>
void run(float* s, const float* a, const float* b, const at::Tensor& u, const float* Rr, const float* Ri,
         const float* D, float* y, int64_t H, int64_t N, int64_t M, int64_t k, Strides ss, Strides sab,
         const float* mw, const float* mb, float* x) {
  const float* up = u.data_ptr<float>();
  const int64_t un = u.stride(0), uh = u.stride(1);
  at::parallel_for(0, H, 8, [&](int64_t h0, int64_t h1) {
    float acc[kMaxReadouts];
    for (int64_t h = h0; h < h1; ++h) {
      const float* R = Rr + h * k * M;
      const float* I = Ri + h * k * M;
      int64_t n = 0;
      if constexpr (K > 0) {
        constexpr int NB = 2;  // streams at a time (4: faster in cache, slower from memory)
        for (; sab.n == 0 && n + NB <= N; n += NB) {
          float* rows[NB];
          float un_h[NB];
          float accs[NB * K];
          for (int j = 0; j < NB; ++j) {
            rows[j] = s + h * ss.h + (n + j) * ss.n;
            un_h[j] = up[(n + j) * un + h * uh];
          }
          channel_streams<K, NB>(rows, ss.plane, a + h * sab.h, a + sab.plane + h * sab.h, b + h * sab.h,
                                 b + sab.plane + h * sab.h, un_h, R, I, M, accs);
          for (int j = 0; j < NB; ++j)
            for (int64_t c = 0; c < K; ++c)
              y[(c * N + n + j) * H + h] = accs[j * K + c] + D[c * H + h] * un_h[j];
        }
      }
      for (; n < N; ++n) {
        const int64_t at = h * ss.h + n * ss.n;      // state row (h, n)
        const int64_t ab = h * sab.h + n * sab.n;    // its a, b row (sab.n = 0: one step for all streams)
        const float un_h = up[n * un + h * uh];
        channel_stream<K>(s + at, s + ss.plane + at, a + ab, a + sab.plane + ab, b + ab, b + sab.plane + ab, un_h,
                          R, I, M, k, acc);
        for (int64_t c = 0; c < k; ++c) y[(c * N + n) * H + h] = acc[c] + D[c * H + h] * un_h;
      }
    }
    if (mw != nullptr) mix_readouts(y, mw, mb, x, h0, h1, H, N, k);
  });
}

// Checks the arguments, runs the update and, given the mix's weights mw (k, H) and bias mb
// (H,), the mix into x (N, H). Returns the k planes y (k, N, H).
at::Tensor step(at::Tensor& s, const at::Tensor& a, const at::Tensor& b, const at::Tensor& u, const at::Tensor& Rr,
                const at::Tensor& Ri, const at::Tensor& D, const at::Tensor* mw, const at::Tensor* mb, at::Tensor* x) {
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
  if (mw != nullptr) {
    for (const auto* t : {mw, mb})
      TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->is_contiguous(),
                  "state_step_mix_: mix weights, float32 CPU and contiguous");
    TORCH_CHECK(mw->dim() == 2 && mw->size(0) == k && mw->size(1) == H, "state_step_mix_: mix weights (k, H)");
    TORCH_CHECK(mb->dim() == 1 && mb->size(0) == H, "state_step_mix_: mix bias (H,)");
  }
  at::Tensor y = at::empty({k, N, H}, s.options());  // planes
  const Strides ss{s.stride(0), s.stride(1), s.stride(2)};
  const Strides sab{a.stride(0), a.stride(1), per_stream ? a.stride(2) : 0};
  auto go = [&](auto kernel) {
    kernel(s.data_ptr<float>(), a.data_ptr<float>(), b.data_ptr<float>(), u, Rr.data_ptr<float>(),
           Ri.data_ptr<float>(), D.data_ptr<float>(), y.data_ptr<float>(), H, N, M, k, ss, sab,
           mw ? mw->data_ptr<float>() : nullptr, mb ? mb->data_ptr<float>() : nullptr,
           x ? x->data_ptr<float>() : nullptr);
  };
  if (k == 1) go(run<1>);
  else if (k == 2) go(run<2>);
  else go(run<0>);
  return y;
}

at::Tensor state_step_(at::Tensor s, const at::Tensor& a, const at::Tensor& b, const at::Tensor& u,
                       const at::Tensor& Rr, const at::Tensor& Ri, const at::Tensor& D) {
  return step(s, a, b, u, Rr, Ri, D, nullptr, nullptr, nullptr).permute({1, 2, 0});  // (N, H, k)
}

at::Tensor state_step_mix_(at::Tensor s, const at::Tensor& a, const at::Tensor& b, const at::Tensor& u,
                           const at::Tensor& Rr, const at::Tensor& Ri, const at::Tensor& D, const at::Tensor& mw,
                           const at::Tensor& mb) {
  at::Tensor x = at::empty({s.size(2), s.size(1)}, s.options());  // (N, H)
  step(s, a, b, u, Rr, Ri, D, &mw, &mb, &x);
  return x;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("state_step_(Tensor(a!) s, Tensor a, Tensor b, Tensor u, Tensor Rr, Tensor Ri, Tensor D) -> Tensor");
  m.def("state_step_mix_(Tensor(a!) s, Tensor a, Tensor b, Tensor u, Tensor Rr, Tensor Ri, Tensor D, Tensor mw, "
        "Tensor mb) -> Tensor");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) {
  m.impl("state_step_", &state_step_);
  m.impl("state_step_mix_", &state_step_mix_);
}
