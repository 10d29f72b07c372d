// The streaming step's staggered state update: each frame advances one T-th of a temporal
// block's channels by T frames at once, and reads every channel out from the responses its
// last advance left plus a short convolution of the inputs since. The CPU kernel behind
// hummuss.ssm.stagger; its reference is the per-frame recurrence it rearranges
// (hummuss.ssm.recurrence.advance_state_planar, and state_step.cpp on the CPU), which
// tests/test_stagger.py computes in complex float64. s, ring, free and u must not overlap.
//
// Channel group g = [g H / T, (g + 1) H / T) is advanced at the frames t with t mod T = g:
//
//     s_hnm <- E_hm s_hnm + sum_{l<T} P_lhm u_{t-l,nh}         E = a^T, P_l = a^l b (complex)
//     f_jcnh = sum_m (Gr_jchm Re s_hnm + Gi_jchm Im s_hnm)      G_jc = 2 C_c a^j (Gi = -Im), j < T
//
// and at every frame each channel h, advanced j = (t - g) mod T frames ago, reads out
//
//     y_cnh = f_jcnh + sum_{l<j} K_lch u_{t-l,nh} + D_ch u_t,nh    K_l = 2 Re(C a^l b)
//     x_nh  = mb_h + sum_c mw_ch GELU(y_cnh)                        (the read-out mix)
//
// which is the per-frame recurrence s <- a s + b u, y = 2 Re(C s) + D u, rearranged: the
// same numbers up to float rounding. Each frame reads and rewrites a T-th of the state (at
// batch 1 the per-frame step is bound by that traffic: 6.7 MB a block for paper-causal) and
// a T-th of the channels' coefficients (1 + T + T k rows of 2M floats a channel).
//
// s (2, H, N, M) = (Re, Im); ring (T, N, H) the last T inputs, u_t in slot t mod T; free
// (T, k, N, H) the responses f; clock (1,) int64, this frame's t mod T (advanced by one);
// coef (H, 1 + T + T k, 2, M) = [E, P_0 .. P_{T-1}, G_00, G_01, .., G_{T-1,k-1}], each a
// (Re, Im) pair of rows; K (T, k, H); D, mw (k, H); mb (H,); u (N, H), any strides.
// All float32 and contiguous but u. T in {2, 4, 8}, k in {1, 2}.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "blocks.h"
#include "few_rows.h"
#include "gelu.h"

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <functional>

namespace {

using at::vec::Vectorized;
using V = Vectorized<float>;

constexpr int64_t kPrefetchFloats = 512;  // how far ahead of a state row to ask for its lines (2 KB)

// First channel of group g of T over H channels.
inline int64_t group_start(int64_t g, int64_t H, int64_t T) { return g * H / T; }

// The lane sums of C vectors: out[i] = sum of acc[i]'s lanes. With AVX-512 or AVX2, eight
// at a time in one transposing tree of horizontal adds (about 3 instructions a sum where
// one vector's own reduction takes about 10).
template <int C>
__attribute__((always_inline)) inline void lane_sums(const V* acc, float* out) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  if constexpr (C % 8 == 0) {
    for (int i = 0; i < C; i += 8) {
      __m256 w[8];
      for (int j = 0; j < 8; ++j) {
#if defined(CPU_CAPABILITY_AVX512)
        const __m512 v = acc[i + j];
        w[j] = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
#else
        w[j] = acc[i + j];
#endif
      }
      const __m256 q0 = _mm256_hadd_ps(_mm256_hadd_ps(w[0], w[1]), _mm256_hadd_ps(w[2], w[3]));
      const __m256 q1 = _mm256_hadd_ps(_mm256_hadd_ps(w[4], w[5]), _mm256_hadd_ps(w[6], w[7]));
      _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31)));
    }
    return;
  }
#endif
  for (int i = 0; i < C; ++i) out[i] = at::vec::vec_reduce_all<float>(std::plus<V>(), acc[i]);
}

// One channel's advance by T frames for one stream: its state rows sr, si (M modes each) in
// place, and sums[jj * K + c] = f_jj,c. coef: the channel's 1 + T + T K pairs of rows; uu[l]
// = u_{t-l}. MM > 0: M known at compile time (every coefficient at a constant offset from
// one pointer), 0: M at run time.
template <int T, int K, int MM>
inline void advance_channel(float* sr, float* si, const float* coef, const float* uu, int64_t M_, float* sums) {
  const int64_t M = MM > 0 ? MM : M_;
  const int64_t row = 2 * M;  // one (Re, Im) pair of coefficient rows
  const float* E = coef;
  const float* P = coef + row;
  const float* G = coef + (1 + T) * row;
  V acc[T * K];
  for (int i = 0; i < T * K; ++i) acc[i] = V(0.f);
  int64_t m = 0;
  for (; m + V::size() <= M; m += V::size()) {
    __builtin_prefetch(sr + m + kPrefetchFloats, 1, 3);  // the rows that follow (next streams, next channel)
    __builtin_prefetch(si + m + kPrefetchFloats, 1, 3);
    const V er = V::loadu(E + m), ei = V::loadu(E + M + m);
    const V xr = V::loadu(sr + m), xi = V::loadu(si + m);
    V nr = er * xr - ei * xi, ni = er * xi + ei * xr;
    for (int l = 0; l < T; ++l) {
      const V vu(uu[l]);
      nr = at::vec::fmadd(V::loadu(P + l * row + m), vu, nr);
      ni = at::vec::fmadd(V::loadu(P + l * row + M + m), vu, ni);
    }
    nr.store(sr + m);
    ni.store(si + m);
    for (int i = 0; i < T * K; ++i)
      acc[i] = at::vec::fmadd(nr, V::loadu(G + i * row + m), at::vec::fmadd(ni, V::loadu(G + i * row + M + m), acc[i]));
  }
  lane_sums<T * K>(acc, sums);
  for (; m < M; ++m) {  // the tail of M that fills no vector
    const float xr = sr[m], xi = si[m];
    float nr = E[m] * xr - E[M + m] * xi, ni = E[m] * xi + E[M + m] * xr;
    for (int l = 0; l < T; ++l) {
      nr += P[l * row + m] * uu[l];
      ni += P[l * row + M + m] * uu[l];
    }
    sr[m] = nr;
    si[m] = ni;
    for (int i = 0; i < T * K; ++i) sums[i] += nr * G[i * row + m] + ni * G[i * row + M + m];
  }
}

struct Args {
  float* s;
  float* ring;
  const float* u;  // u_t, row n at u + n * ldu
  float* free;
  const float* coef;
  const float* K;
  const float* D;
  const float* mw;
  const float* mb;
  float* x;
  int64_t H, N, M, p, ldu;
  const float* gate = nullptr;  // where given, x = gate * the mix (the gate aggregation), row n at gate + n * ldg
  int64_t ldg = 0;
};

// Group p's channels advanced by T frames (its u from the ring), their responses into free.
template <int T, int K, int MM>
void advance_group(const Args& A) {
  const int64_t H = A.H, N = A.N, M = A.M, NH = N * H, plane = H * N * M;
  const int64_t crow = (1 + T + T * K) * 2 * M;  // a channel's coefficients
  const float* slot[T];  // u_{t-l} (N, H): u_t from u itself (the read-out puts it in the ring)
  for (int l = 1; l < T; ++l) slot[l] = A.ring + ((A.p - l + T) % T) * NH;
  at::parallel_for(group_start(A.p, H, T), group_start(A.p + 1, H, T), 4, [&](int64_t h0, int64_t h1) {
    float uu[T];
    float sums[T * K];
    const int64_t ahead = (crow + N - 1) / N;  // the next channel's coefficients, a share per stream
    for (int64_t h = h0; h < h1; ++h) {
      const float* coef = A.coef + h * crow;
      for (int64_t n = 0; n < N; ++n) {
        if (h + 1 < h1)
          for (int64_t f = n * ahead; f < std::min(crow, (n + 1) * ahead); f += 16) __builtin_prefetch(coef + crow + f, 0, 3);
        uu[0] = A.u[n * A.ldu + h];
        for (int l = 1; l < T; ++l) uu[l] = slot[l][n * H + h];
        float* sr = A.s + (h * N + n) * M;
        advance_channel<T, K, MM>(sr, sr + plane, coef, uu, M, sums);
        for (int i = 0; i < T * K; ++i) A.free[(i * N + n) * H + h] = sums[i];
      }
    }
  });
}

// Every channel's read-out (its group's responses, the inputs since its advance), the mix and
// where given the gate; u_t into its ring slot on the way.
template <int T, int K>
void read_out_mix(const Args& A) {
  const int64_t H = A.H, N = A.N, NH = N * H;
  at::parallel_for(0, H, 64, [&](int64_t h0, int64_t h1) {
    for (int64_t g = 0; g < T; ++g) {
      const int64_t lo = std::max(h0, group_start(g, H, T)), hi = std::min(h1, group_start(g + 1, H, T));
      if (lo >= hi) continue;
      const int64_t j = (A.p - g + T) % T;  // frames since the group's advance
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t h = lo; h < hi; h += V::size()) {
          const int count = static_cast<int>(std::min<int64_t>(V::size(), hi - h));
          const V ut = V::loadu(A.u + n * A.ldu + h, count);
          ut.store(A.ring + A.p * NH + n * H + h, count);
          V acc = V::loadu(A.mb + h, count);
          for (int c = 0; c < K; ++c) {
            V y = at::vec::fmadd(V::loadu(A.D + c * H + h, count), ut,
                                 V::loadu(A.free + ((j * K + c) * N + n) * H + h, count));
            for (int64_t l = 0; l < j; ++l)
              y = at::vec::fmadd(V::loadu(A.K + (l * K + c) * H + h, count),
                                 V::loadu(A.ring + ((A.p - l + T) % T) * NH + n * H + h, count), y);
            acc = at::vec::fmadd(V::loadu(A.mw + c * H + h, count), hummuss_gelu::gelu(y), acc);
          }
          if (A.gate) acc = acc * V::loadu(A.gate + n * A.ldg + h, count);
          acc.store(A.x + n * H + h, count);
        }
      }
    }
  });
}

template <int T, int K>
void run(const Args& A) {
  if (A.M == 64) advance_group<T, K, 64>(A);  // paper sizes
  else if (A.M == 16) advance_group<T, K, 16>(A);  // the cpu preset
  else advance_group<T, K, 0>(A);
  read_out_mix<T, K>(A);
}

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, "state_stagger: ", name, " float32 on the CPU");
}

// Checks the staggered state and its constants (u aside), and returns this frame's t mod T.
int64_t check_stagger(const at::Tensor& s, const at::Tensor& ring, const at::Tensor& free, const at::Tensor& clock,
                      const at::Tensor& coef, const at::Tensor& K, const at::Tensor& D, const at::Tensor& mw,
                      const at::Tensor& mb, const char* op) {
  TORCH_CHECK(s.dim() == 4 && s.size(0) == 2, op, ": s (2, H, N, M)");
  TORCH_CHECK(ring.dim() == 3 && D.dim() == 2, op, ": ring (T, N, H), D (k, H)");
  const int64_t H = s.size(1), N = s.size(2), M = s.size(3), T = ring.size(0), k = D.size(0);
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{s, "s"}, {ring, "ring"}, {free, "free"},
                                {coef, "coef"}, {K, "K"}, {D, "D"}, {mw, "mw"}, {mb, "mb"}}) {
    check_float(t, name);
    TORCH_CHECK(t.is_contiguous(), op, ": ", name, " contiguous");
  }
  TORCH_CHECK(T == 2 || T == 4 || T == 8, op, ": T (ring.size(0)) 2, 4 or 8, got ", T);
  TORCH_CHECK(k == 1 || k == 2, op, ": 1 or 2 read-outs, got ", k);
  TORCH_CHECK(ring.sizes() == at::IntArrayRef({T, N, H}), op, ": ring (T, N, H)");
  TORCH_CHECK(free.sizes() == at::IntArrayRef({T, k, N, H}), op, ": free (T, k, N, H)");
  TORCH_CHECK(coef.sizes() == at::IntArrayRef({H, 1 + T + T * k, 2, M}), op, ": coef (H, 1 + T + T k, 2, M)");
  TORCH_CHECK(K.sizes() == at::IntArrayRef({T, k, H}), op, ": K (T, k, H)");
  TORCH_CHECK(D.sizes() == at::IntArrayRef({k, H}) && mw.sizes() == D.sizes(), op, ": D, mw (k, H)");
  TORCH_CHECK(mb.dim() == 1 && mb.size(0) == H, op, ": mb (H,)");
  TORCH_CHECK(clock.numel() == 1 && clock.scalar_type() == at::kLong && clock.device().is_cpu(), op,
              ": clock, one int64 on the CPU");
  const int64_t t = *clock.data_ptr<int64_t>();
  TORCH_CHECK(t >= 0 && t < T, op, ": clock in [0, T), got ", t);
  return t;
}

// One frame of the staggered update into x (N, H): u_t rows at u (ldu apart), the gate's at
// gate (null: none); the clock advanced.
void advance(at::Tensor& s, at::Tensor& ring, at::Tensor& free, at::Tensor& clock, const at::Tensor& coef,
             const at::Tensor& K, const at::Tensor& D, const at::Tensor& mw, const at::Tensor& mb, int64_t t,
             const float* u, int64_t ldu, const float* gate, int64_t ldg, float* x) {
  const int64_t H = s.size(1), N = s.size(2), M = s.size(3), T = ring.size(0), k = D.size(0);
  Args A{s.data_ptr<float>(), ring.data_ptr<float>(), u, free.data_ptr<float>(), coef.data_ptr<float>(),
         K.data_ptr<float>(), D.data_ptr<float>(), mw.data_ptr<float>(), mb.data_ptr<float>(), x, H, N, M, t, ldu};
  A.gate = gate;
  A.ldg = ldg;
  if (T == 2) k == 1 ? run<2, 1>(A) : run<2, 2>(A);
  else if (T == 4) k == 1 ? run<4, 1>(A) : run<4, 2>(A);
  else k == 1 ? run<8, 1>(A) : run<8, 2>(A);
  *clock.data_ptr<int64_t>() = (t + 1) % T;
}

at::Tensor state_stagger_mix_(at::Tensor s, at::Tensor ring, at::Tensor free, at::Tensor clock, const at::Tensor& coef,
                              const at::Tensor& u, const at::Tensor& K, const at::Tensor& D, const at::Tensor& mw,
                              const at::Tensor& mb) {
  const int64_t t = check_stagger(s, ring, free, clock, coef, K, D, mw, mb, "state_stagger_mix_");
  const int64_t H = s.size(1), N = s.size(2);
  check_float(u, "u");
  TORCH_CHECK(u.dim() == 2 && u.size(0) == N && u.size(1) == H, "state_stagger_mix_: u (N, H)");
  const at::Tensor uc = u.stride(1) == 1 ? u : u.contiguous();  // rows of u_t, any row stride
  // u is read while s, free and the ring are written: it must share no memory with them
  const float* u0 = uc.data_ptr<float>();
  const float* u1 = u0 + (N - 1) * uc.stride(0) + H;
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{s, "s"}, {ring, "ring"}, {free, "free"}}) {
    const float* t0 = t.data_ptr<float>();
    TORCH_CHECK(u1 <= t0 || t0 + t.numel() <= u0, "state_stagger_mix_: u overlaps ", name);
  }
  at::Tensor x = at::empty({N, H}, s.options());
  advance(s, ring, free, clock, coef, K, D, mw, mb, t, uc.data_ptr<float>(), uc.stride(0), nullptr, 0, x.data_ptr<float>());
  return x;
}

}  // namespace

// A temporal GDSSM block's whole streaming step with the staggered update and the gate
// aggregation (hummuss.gdssm.GDSSM.step), in one call:
//
//     z = LayerNorm(x)                          (N, Dm), weight ln_w, bias ln_b, eps
//     [x_id, u] = GELU(z W_in^T + b_in)         (N, 2H), W_in packed (few_rows_pack)
//     x_f = the staggered update and mix of u   (N, H), as state_stagger_mix_
//     out = (x_f * x_id) W_out^T + b_out + x    (N, Dm)
at::Tensor hummuss_blocks::stagger_block_(const at::Tensor& x, const at::Tensor& ln_w, const at::Tensor& ln_b, double eps,
                                          const at::Tensor& Wp_in, const at::Tensor& bp_in, at::Tensor s, at::Tensor ring,
                                          at::Tensor free, at::Tensor clock, const at::Tensor& coef, const at::Tensor& K,
                                          const at::Tensor& D, const at::Tensor& mw, const at::Tensor& mb, const at::Tensor& Wp_out,
                                          const at::Tensor& bp_out) {
  const int64_t t = check_stagger(s, ring, free, clock, coef, K, D, mw, mb, "stagger_block_");
  const int64_t H = s.size(1), N = s.size(2);
  const int64_t Dm = hummuss_few_rows::check_block(x, N, H, ln_w, ln_b, Wp_in, bp_in, Wp_out, bp_out, "stagger_block_");
  at::Tensor z = at::empty({N, Dm}, x.options()), h = at::empty({N, 2 * H}, x.options());
  at::Tensor g = at::empty({N, H}, x.options()), out = at::empty({N, Dm}, x.options());
  const float* xp = x.data_ptr<float>();
  float* zp = z.data_ptr<float>();
  hummuss_few_rows::layer_norm(xp, x.stride(0), N, Dm, ln_w.data_ptr<float>(), ln_b.data_ptr<float>(), static_cast<float>(eps), zp);
  float* hp = h.data_ptr<float>();
  hummuss_few_rows::linear(zp, Dm, N, Dm, Wp_in.data_ptr<float>(), bp_in.data_ptr<float>(), 2 * H, true, hp, 2 * H,
                           nullptr, 0);
  advance(s, ring, free, clock, coef, K, D, mw, mb, t, hp + H, 2 * H, hp, 2 * H, g.data_ptr<float>());
  hummuss_few_rows::linear(g.data_ptr<float>(), H, N, H, Wp_out.data_ptr<float>(), bp_out.data_ptr<float>(), Dm,
                           false, out.data_ptr<float>(), Dm, xp, x.stride(0));
  return out;
}

namespace {

// Every channel's state brought to the last frame (clock - 1): its group's inputs since its
// last advance, one frame at a time (s <- a s + b u); a, b (2, H, M).
void state_stagger_sync_(at::Tensor s, const at::Tensor& ring, const at::Tensor& clock, const at::Tensor& a,
                         const at::Tensor& b) {
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{s, "s"}, {ring, "ring"}, {a, "a"}, {b, "b"}}) {
    check_float(t, name);
    TORCH_CHECK(t.is_contiguous(), "state_stagger_sync_: ", name, " contiguous");
  }
  TORCH_CHECK(s.dim() == 4 && s.size(0) == 2, "state_stagger_sync_: s (2, H, N, M)");
  const int64_t H = s.size(1), N = s.size(2), M = s.size(3), T = ring.dim() == 3 ? ring.size(0) : 0;
  TORCH_CHECK(T == 2 || T == 4 || T == 8, "state_stagger_sync_: T (ring.size(0)) 2, 4 or 8, got ", T);
  TORCH_CHECK(ring.sizes() == at::IntArrayRef({T, N, H}), "state_stagger_sync_: ring (T, N, H)");
  TORCH_CHECK(a.sizes() == at::IntArrayRef({2, H, M}) && b.sizes() == a.sizes(), "state_stagger_sync_: a, b (2, H, M)");
  TORCH_CHECK(clock.numel() == 1 && clock.scalar_type() == at::kLong && clock.device().is_cpu(),
              "state_stagger_sync_: clock, one int64 on the CPU");
  const int64_t now = clock.item<int64_t>();
  TORCH_CHECK(now >= 0 && now < T, "state_stagger_sync_: clock in [0, T), got ", now);
  const int64_t last = (now - 1 + T) % T;
  float* sp = s.data_ptr<float>();
  const float *rp = ring.data_ptr<float>(), *ap = a.data_ptr<float>(), *bp = b.data_ptr<float>();
  const int64_t plane = H * N * M, NH = N * H;
  at::parallel_for(0, H, 8, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      int64_t g = 0;  // its group: group_start(g) <= h < group_start(g + 1)
      while (group_start(g + 1, H, T) <= h) ++g;
      const int64_t j = (last - g + T) % T;
      const float *ar = ap + h * M, *ai = ap + H * M + h * M, *br = bp + h * M, *bi = bp + H * M + h * M;
      for (int64_t n = 0; n < N; ++n) {
        float* sr = sp + (h * N + n) * M;
        float* si = sr + plane;
        for (int64_t l = j - 1; l >= 0; --l) {  // oldest input first
          const float un = rp[((last - l + T) % T) * NH + n * H + h];
          for (int64_t m = 0; m < M; ++m) {
            const float xr = sr[m], xi = si[m];
            sr[m] = ar[m] * xr - ai[m] * xi + br[m] * un;
            si[m] = ar[m] * xi + ai[m] * xr + bi[m] * un;
          }
        }
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("state_stagger_mix_(Tensor(a!) s, Tensor(b!) ring, Tensor(c!) free, Tensor(d!) clock, Tensor coef, Tensor u, "
        "Tensor K, Tensor D, Tensor mw, Tensor mb) -> Tensor");
  m.def("stagger_block_(Tensor x, Tensor ln_w, Tensor ln_b, float eps, Tensor Wp_in, Tensor bp_in, Tensor(a!) s, "
        "Tensor(b!) ring, Tensor(c!) free, Tensor(d!) clock, Tensor coef, Tensor K, Tensor D, Tensor mw, Tensor mb, "
        "Tensor Wp_out, Tensor bp_out) -> Tensor");
  m.def("state_stagger_sync_(Tensor(a!) s, Tensor ring, Tensor clock, Tensor a, Tensor b) -> ()");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) {
  m.impl("state_stagger_mix_", &state_stagger_mix_);
  m.impl("stagger_block_", &hummuss_blocks::stagger_block_);
  m.impl("state_stagger_sync_", &state_stagger_sync_);
}
