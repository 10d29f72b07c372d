// A temporal GDSSM block's FFT convolution, read-out mix and gate in one pass, forward and
// backward: the CPU kernels behind hummuss/conv_mix_gate.py's `FFTMixGate` (training) and
// `fft_mix_gate_into` (evaluation), for an FFT operator of a power-of-two size n = 2M. Per
// channel h and sequence p (u and x_id of L frames; evaluation applies their GELUs first):
//
//     y_r  = irfft(rfft(u, n) W[h, r], n)[:L]                           r < R = dirs k
//     path_i = b[h, i] + sum_c w[h, i, c] GELU(y_{i k + c})
//     out  = x_id prod_i path_i
//
// the numbers of `FFTConv` then `MixGate` (hummuss/ssm/fft_conv.py, hummuss/fusion.py: the
// reference), which write y (R times u's size) and u's spectra to memory for the backward and
// read them back between their operations. Here one task takes S = V::size() channels (the
// lanes of a vector) of one sequence through all of it in buffers of tens of KB; in training
// the forward also writes y once, in the lanes' layout, for the backward (which would
// otherwise redo 1 + R of its 2 + 2R transforms). With go the output's gradient, q = go x_id
// and gp_i = q prod_{j != i} path_j:
//
//     grad x_id = go prod_i path_i      grad b_i = sum gp_i      grad w_ic = sum gp_i GELU(y_ic)
//     gy_ic = gp_i w_ic GELU'(y_ic)     grad u = irfft(sum_r rfft(gy_r) conj W_r)[:L]
//     S_r = sum_p rfft(gy_r) conj rfft(u)        (the kernels' gradient before `kernel_grads`)
//
// The transforms are written out below, vectorised across the lanes: every number of an FFT
// is a vector of S channels' numbers, so a butterfly is plain vector arithmetic, the same for
// every lane. A real transform of n = 2M points is a complex one of M points on z[m] = x[2m] +
// i x[2m+1]; with Z = FFT_M(z) (Z[M] = Z[0]) and h_k = e^{-2 pi i k / n},
//
//     rfft(x)[k] = a_k Z[k] + b_k conj Z[M-k],    a_k = (1 - i h_k) / 2,  b_k = (1 + i h_k) / 2
//
// and the inverse is its mirror: y[2m] + i y[2m+1] = (1/n) sum_k Z'[k] e^{2 pi i k m / M},
// Z'[k] = A_k Y[k] + B_k conj Y[M-k], A_k = 1 + i / h_k, B_k = 1 - i / h_k. With Y = rfft(x) W_r
// both are linear in Z[k] and conj Z[M-k], so a read-out's Z' comes straight from the forward
// transform: Z'_r[k] = P_r[k] Z[k] + Q_r[k] conj Z[M-k], where, with W' = W_r / n,
//
//     P_r[k] = A_k a_k W'_k + B_k conj(b_{M-k}) conj W'_{M-k}
//     Q_r[k] = A_k b_k W'_k + B_k conj(a_{M-k}) conj W'_{M-k}
//
// (`fft_lane_operator`, once per operator; with conj W for the backward's grad u). FFT_M is
// iterative, decimation in time, two radix-2 stages a pass over the data; its input goes in at
// bit-reversed places as it is written, its output comes out in order. The inverse FFT_M is
// the forward one with the real and imaginary planes swapped on the way in and out (swap(z) =
// i conj z). The lanes' rows come in and go out through 16 x 16 transposes (`transpose_mxn`).
//
// Layouts: u, x_id, out, go and the gradients (H, P, L) float32, each channel's P rows of L
// contiguous and channels evenly spaced (views of a block's (2H, P, L) projections are fine);
// W (H, R, n/2 + 1, 2) the spectra as real pairs; PQ (G, R, n/2, 4, S), G = ceil(H / S): the
// planes Re P, Im P, Re Q, Im Q of each group of S channels in one piece (the last group's
// spare lanes repeat its last channel and are never stored); w (H, dirs, k), b (H, dirs);
// y, where kept, (G, P, R, L, S).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "gelu.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdlib>
#include <memory>
#include <optional>
#include <tuple>
#include <vector>

namespace {

using V = at::vec::Vectorized<float>;
constexpr int64_t S = V::size();  // lanes: the channels a task carries
constexpr double kPi = 3.14159265358979323846;  // (M_PI is not in standard C++)

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], FreeDeleter>;

Buffer buffer(int64_t floats) {  // 64-byte aligned, zeroed
  const size_t bytes = ((static_cast<size_t>(std::max<int64_t>(floats, 1)) * sizeof(float) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes);
  TORCH_CHECK(p != nullptr, "fft_mix_gate: out of memory");
  std::fill(static_cast<float*>(p), static_cast<float*>(p) + bytes / sizeof(float), 0.f);
  return Buffer(static_cast<float*>(p));
}

inline V ld(const float* p, int64_t i) { return V::loadu(p + i * S); }
inline void st(float* p, int64_t i, const V& v) { v.store(p + i * S); }

// The tables of a transform of n = 2M: bit-reversed indices of M, FFT_M's twiddles
// e^{-2 pi i j / M} (j < M), and a_k, b_k (k <= M) of the real transform.
struct Tables {
  int64_t M, bits = 0;
  std::vector<int32_t> rev;
  std::vector<float> cr, ci, ar, ai, br, bi;

  explicit Tables(int64_t M) : M(M) {
    while ((int64_t{1} << bits) < M) ++bits;
    rev.resize(M);
    for (int64_t m = 0; m < M; ++m) {
      int64_t r = 0;
      for (int64_t b = 0; b < bits; ++b) r |= ((m >> b) & 1) << (bits - 1 - b);
      rev[m] = static_cast<int32_t>(r);
    }
    cr.resize(M), ci.resize(M);
    for (int64_t j = 0; j < M; ++j) {
      const double a = -2.0 * kPi * static_cast<double>(j) / static_cast<double>(M);
      cr[j] = static_cast<float>(std::cos(a)), ci[j] = static_cast<float>(std::sin(a));
    }
    ar.resize(M + 1), ai.resize(M + 1), br.resize(M + 1), bi.resize(M + 1);
    for (int64_t k = 0; k <= M; ++k) {
      const std::complex<double> a_k = a(k), b_k = b(k);
      ar[k] = static_cast<float>(a_k.real()), ai[k] = static_cast<float>(a_k.imag());
      br[k] = static_cast<float>(b_k.real()), bi[k] = static_cast<float>(b_k.imag());
    }
  }
  std::complex<double> h(int64_t k) const { return std::polar(1.0, -kPi * static_cast<double>(k) / static_cast<double>(M)); }
  std::complex<double> a(int64_t k) const { return (1.0 - std::complex<double>(0, 1) * h(k)) / 2.0; }
  std::complex<double> b(int64_t k) const { return (1.0 + std::complex<double>(0, 1) * h(k)) / 2.0; }
};

// One radix-4 butterfly of FFT_M's stages of span h and 2h at i0 < i1 < i2 < i3 (h apart), with
// twiddles w1 = e^{-2 pi i 2j / 4h}, w2 = e^{-2 pi i j / 4h} and w3 = w1 w2:
//     c0 = A + C, c2 = A - C, c1 = B - i D, c3 = B + i D,
//     A = a0 + w1 a1, B = a0 - w1 a1, C = w2 a2 + w3 a3, D = w2 a2 - w3 a3
// `all` false: c2 and c3 are not stored (FFT_M's last stage, where only outputs below M/2 are read)
template <bool twiddled>
inline void radix4(float* re, float* im, int64_t i0, int64_t h, const V& w1r, const V& w1i, const V& w2r,
                   const V& w2i, const V& w3r, const V& w3i, bool all = true) {
  const int64_t i1 = i0 + h, i2 = i0 + 2 * h, i3 = i0 + 3 * h;
  const V a0r = ld(re, i0), a0i = ld(im, i0);
  V a1r = ld(re, i1), a1i = ld(im, i1), a2r = ld(re, i2), a2i = ld(im, i2), a3r = ld(re, i3), a3i = ld(im, i3);
  if (twiddled) {
    const V t1r = a1r * w1r - a1i * w1i, t1i = a1r * w1i + a1i * w1r;
    const V t2r = a2r * w2r - a2i * w2i, t2i = a2r * w2i + a2i * w2r;
    const V t3r = a3r * w3r - a3i * w3i, t3i = a3r * w3i + a3i * w3r;
    a1r = t1r, a1i = t1i, a2r = t2r, a2i = t2i, a3r = t3r, a3i = t3i;
  }
  const V Ar = a0r + a1r, Ai = a0i + a1i, Br = a0r - a1r, Bi = a0i - a1i;
  const V Cr = a2r + a3r, Ci = a2i + a3i, Dr = a2r - a3r, Di = a2i - a3i;
  st(re, i0, Ar + Cr), st(im, i0, Ai + Ci);
  st(re, i1, Br + Di), st(im, i1, Bi - Dr);
  if (all) {
    st(re, i2, Ar - Cr), st(im, i2, Ai - Ci);
    st(re, i3, Br - Di), st(im, i3, Bi + Dr);
  }
}

// FFT_M's radix-4 stage pair of span h over elements [from, to) (whole blocks of 4h)
void radix4_pass(float* re, float* im, const Tables& t, int64_t h, int64_t from, int64_t to, bool all) {
  const int64_t s2 = t.M / (4 * h);
  for (int64_t base = from; base < to; base += 4 * h)  // j = 0: no twiddles
    radix4<false>(re, im, base, h, V(), V(), V(), V(), V(), V(), all);
  for (int64_t j = 1; j < h; ++j) {
    const V w1r(t.cr[2 * j * s2]), w1i(t.ci[2 * j * s2]), w2r(t.cr[j * s2]), w2i(t.ci[j * s2]);
    const V w3r(t.cr[3 * j * s2]), w3i(t.ci[3 * j * s2]);
    for (int64_t base = from + j; base < to; base += 4 * h) radix4<true>(re, im, base, h, w1r, w1i, w2r, w2i, w3r, w3i, all);
  }
}

constexpr int64_t kInCache = 64;  // FFT_M's first stages go block by block of this many numbers (8 KB at 16 lanes)

// In place, FFT_M of (re, im) (M vectors each) whose input sits at bit-reversed places:
// out[k] = sum_m in[m] e^{-2 pi i k m / M}, in order. `low_half`: only out[k < M/2] is read
// afterwards (the last stage skips the rest).
void fft(float* re, float* im, const Tables& t, bool low_half = false) {
  const int64_t M = t.M;
  int64_t h = 1;
  const int64_t block = std::min(M, kInCache);
  while (4 * h <= block) h *= 4;  // the stages that fit in one block
  for (int64_t from = 0; from < M; from += block)
    for (int64_t hh = 1; hh < h; hh *= 4) radix4_pass(re, im, t, hh, from, from + block, !(low_half && 4 * hh == M));
  for (; 4 * h <= M; h *= 4) radix4_pass(re, im, t, h, 0, M, !(low_half && 4 * h == M));
  if (2 * h == M) {  // an odd number of stages: the last one alone, span M/2
    for (int64_t j = 0; j < h; ++j) {
      const V wr(t.cr[j]), wi(t.ci[j]);
      const V ar = ld(re, j), ai = ld(im, j), br = ld(re, j + h), bi = ld(im, j + h);
      const V tr = br * wr - bi * wi, ti = br * wi + bi * wr;
      st(re, j, ar + tr), st(im, j, ai + ti);
      if (!low_half) st(re, j + h, ar - tr), st(im, j + h, ai - ti);
    }
  }
}

// Z = FFT_M of z[m] = x[2m] + i x[2m+1], x (L lanes' frames, zero past L) -> (zr, zi)
void forward_transform(const float* x, int64_t L, float* zr, float* zi, const Tables& t) {
  const int64_t half = (L + 1) / 2;  // x[L] is read as zero where L is odd
  for (int64_t m = half; m < t.M; ++m) st(zr, t.rev[m], V(0.f)), st(zi, t.rev[m], V(0.f));
  for (int64_t m = 0; m < half; ++m) {
    st(zr, t.rev[m], ld(x, 2 * m));
    st(zi, t.rev[m], 2 * m + 1 < L ? ld(x, 2 * m + 1) : V(0.f));
  }
  fft(zr, zi, t);
}

// Read-out r's Z'_r from Z (fr, fi) by q = PQ's (M, 4, S) of r, put swapped at bit-reversed
// places of (zr, zi), ready for `fft`
void spectral_product(const float* q, const float* fr, const float* fi, float* zr, float* zi, const Tables& t) {
  const int64_t M = t.M;
  for (int64_t k = 0; k < M; ++k) {
    const int64_t km = (M - k) & (M - 1);
    const V Pr = ld(q, 4 * k), Pi = ld(q, 4 * k + 1), Qr = ld(q, 4 * k + 2), Qi = ld(q, 4 * k + 3);
    const V ar = ld(fr, k), ai = ld(fi, k), br = ld(fr, km), bi = ld(fi, km);
    const V re = Pr * ar - Pi * ai + Qr * br + Qi * bi;  // Z' = P Z[k] + Q conj Z[M-k]
    const V im = Pr * ai + Pi * ar + Qi * br - Qr * bi;
    st(zr, t.rev[k], im), st(zi, t.rev[k], re);  // swapped: the inverse FFT_M is the forward one on (Im, Re)
  }
}

// rfft(x)[k] = a_k Z[k] + b_k conj Z[M-k] (k <= M, Z[M] = Z[0]) from Z = FFT_M of x's packed pairs (zr, zi)
inline void real_spectrum(const float* zr, const float* zi, int64_t k, const Tables& t, V& xr, V& xi) {
  const int64_t M = t.M, ks = k & (M - 1), km = (M - k) & (M - 1);
  const V ar = ld(zr, ks), ai = ld(zi, ks), br = ld(zr, km), bi = ld(zi, km);
  const V car(t.ar[k]), cai(t.ai[k]), cbr(t.br[k]), cbi(t.bi[k]);
  xr = car * ar - cai * ai + cbr * br + cbi * bi;
  xi = car * ai + cai * ar - cbr * bi + cbi * br;
}

// The backward's products for one gradient gy_r with Zg = FFT_M of its packed frames (zr, zi):
// its share of grad u's Z' by q = PQa's (M, 4, S) of r, added swapped at bit-reversed places of
// (gr, gi) as `spectral_product` does, and S_r[k] += G[k] conj U[k] into sr (M + 1, 2, S), G =
// rfft(gy_r) = a_k Zg[k] + b_k conj Zg[M-k], U = rfft(u) (ur, ui); one pass over Zg for both.
void adjoint_product(const float* q, const float* zr, const float* zi, const float* ur, const float* ui, float* gr,
                     float* gi, float* sr, const Tables& t) {
  const int64_t M = t.M;
  for (int64_t k = 0; k <= M; ++k) {
    if (k < M) {
      const int64_t km = (M - k) & (M - 1);
      const V ar = ld(zr, k), ai = ld(zi, k), br = ld(zr, km), bi = ld(zi, km);
      const V Pr = ld(q, 4 * k), Pi = ld(q, 4 * k + 1), Qr = ld(q, 4 * k + 2), Qi = ld(q, 4 * k + 3);
      const int64_t at = t.rev[k];
      st(gr, at, ld(gr, at) + Pr * ai + Pi * ar + Qi * br - Qr * bi);  // Im (P Zg[k] + Q conj Zg[M-k])
      st(gi, at, ld(gi, at) + Pr * ar - Pi * ai + Qr * br + Qi * bi);  // Re
    }
    V Gr, Gi;
    real_spectrum(zr, zi, k, t, Gr, Gi);
    const V Ur = ld(ur, k), Ui = ld(ui, k);
    st(sr, 2 * k, ld(sr, 2 * k) + Gr * Ur + Gi * Ui);
    st(sr, 2 * k + 1, ld(sr, 2 * k + 1) + Gi * Ur - Gr * Ui);
  }
}

// after `fft` of a swapped Z': frame s of the inverse transform
inline V inverse_frame(const float* zr, const float* zi, int64_t s) { return (s & 1) ? ld(zr, s / 2) : ld(zi, s / 2); }

struct Shape {
  int64_t H, P, L, dirs, k, R, M, G;
};

void check_rows(const at::Tensor& t, const char* name, const Shape& s) {
  TORCH_CHECK(t.dim() == 3 && t.size(0) == s.H && t.size(1) == s.P && t.size(2) == s.L && t.device().is_cpu() &&
                  t.scalar_type() == at::kFloat && t.stride(2) == 1 && (s.P == 1 || t.stride(1) == s.L),
              "fft_mix_gate: ", name, " (H, P, L) float32 on the CPU, each channel's P rows of L contiguous");
}

Shape check(const at::Tensor& u, const at::Tensor& x_id, const at::Tensor& PQ, const at::Tensor& w, const at::Tensor& b) {
  TORCH_CHECK(u.dim() == 3 && w.dim() == 3 && b.dim() == 2, "fft_mix_gate: u (H, P, L), w (H, dirs, k), b (H, dirs)");
  Shape s{u.size(0), u.size(1), u.size(2), w.size(1), w.size(2), w.size(1) * w.size(2), 0, (u.size(0) + S - 1) / S};
  check_rows(u, "u", s);
  check_rows(x_id, "x_id", s);
  TORCH_CHECK(w.size(0) == s.H && b.size(0) == s.H && b.size(1) == s.dirs && w.is_contiguous() && b.is_contiguous() &&
                  w.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat,
              "fft_mix_gate: w (H, dirs, k), b (H, dirs) contiguous float32");
  TORCH_CHECK(PQ.dim() == 5 && PQ.size(0) == s.G && PQ.size(1) == s.R && PQ.size(3) == 4 && PQ.size(4) == S &&
                  PQ.is_contiguous() && PQ.scalar_type() == at::kFloat,
              "fft_mix_gate: PQ (ceil(H / S), R, n/2, 4, S) contiguous float32, R = dirs k, S = ", S);
  s.M = PQ.size(2);
  TORCH_CHECK(s.M >= 2 && (s.M & (s.M - 1)) == 0 && 2 * s.M >= 2 * s.L - 1,
              "fft_mix_gate: n a power of two >= 4 and >= 2 L - 1");
  return s;
}

// the per-lane mix weights and biases of the group at h0 (spare lanes: the last channel's)
void lane_weights(const float* wp, const float* bp, const Shape& s, int64_t h0, float* lw, float* lb) {
  for (int64_t l = 0; l < S; ++l) {
    const int64_t h = std::min(h0 + l, s.H - 1);
    for (int64_t r = 0; r < s.R; ++r) lw[r * S + l] = wp[h * s.R + r];
    for (int64_t i = 0; i < s.dirs; ++i) lb[i * S + l] = bp[h * s.dirs + i];
  }
}

// lanes' rows in: (rows of L at src + h stride) -> dst (L, S); out: the reverse
inline void rows_in(const float* src, int64_t stride, int64_t lanes, int64_t L, float* dst) {
  at::vec::transpose_mxn<float>(src, stride, dst, S, static_cast<int>(lanes), static_cast<int>(L));
}
inline void rows_out(const float* src, int64_t lanes, int64_t L, float* dst, int64_t stride) {
  at::vec::transpose_mxn<float>(src, S, dst, stride, static_cast<int>(L), static_cast<int>(lanes));
}

int64_t fft_mix_gate_lanes() { return S; }

// W (H, R, M + 1, 2) -> PQ (G, R, M, 4, S); `adjoint`: of conj W (grad u's transform). W may be
// a view (a complex operator's real pairs as it lies: `torch.view_as_real`), each (h, r) row of
// M + 1 pairs contiguous.
at::Tensor fft_lane_operator(const at::Tensor& W, bool adjoint) {
  TORCH_CHECK(W.dim() == 4 && W.size(3) == 2 && W.stride(3) == 1 && W.stride(2) == 2 && W.scalar_type() == at::kFloat &&
                  W.device().is_cpu(),
              "fft_lane_operator: W (H, R, n/2 + 1, 2) float32 on the CPU, each row of n/2 + 1 pairs contiguous");
  const int64_t H = W.size(0), R = W.size(1), M = W.size(2) - 1, G = (H + S - 1) / S, row = (M + 1) * 2;
  TORCH_CHECK(M >= 2 && (M & (M - 1)) == 0, "fft_lane_operator: n a power of two >= 4");
  // per k: c1 = A a_k, c2 = B conj(b_{M-k}), c3 = A b_k, c4 = B conj(a_{M-k}), and the 1/n
  const Tables t(M);
  std::vector<float> c(8 * M);
  for (int64_t k = 0; k < M; ++k) {
    const std::complex<double> i(0, 1), A = 1.0 + i / t.h(k), B = 1.0 - i / t.h(k);
    const std::complex<double> cs[4] = {A * t.a(k), B * std::conj(t.b(M - k)), A * t.b(k), B * std::conj(t.a(M - k))};
    for (int j = 0; j < 4; ++j) {
      c[8 * k + 2 * j] = static_cast<float>(cs[j].real() / (2.0 * M));
      c[8 * k + 2 * j + 1] = static_cast<float>(cs[j].imag() / (2.0 * M));
    }
  }
  at::Tensor PQ = at::empty({G, R, M, 4, S}, W.options());
  const float* wp = W.data_ptr<float>();
  float* out = PQ.data_ptr<float>();
  const float sign = adjoint ? -1.f : 1.f;
  at::parallel_for(0, G * R, 1, [&](int64_t t0, int64_t t1) {
    Buffer lanes = buffer(row * S);  // (M + 1, 2, S): one read-out's spectra of the group's lanes
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t g = task / R, r = task % R, h0 = g * S, n_lanes = std::min(S, H - h0);
      rows_in(wp + h0 * W.stride(0) + r * W.stride(1), W.stride(0), n_lanes, row, lanes.get());
      for (int64_t l = n_lanes; l < S; ++l)  // spare lanes: the last channel's
        for (int64_t j = 0; j < row; ++j) lanes[j * S + l] = lanes[j * S + n_lanes - 1];
      float* o = out + task * M * 4 * S;
      for (int64_t k = 0; k < M; ++k) {
        const V wr = ld(lanes.get(), 2 * k), wi = ld(lanes.get(), 2 * k + 1) * V(sign);           // W'_k
        const V mr = ld(lanes.get(), 2 * (M - k)), mi = ld(lanes.get(), 2 * (M - k) + 1) * V(-sign);  // conj W'_{M-k}
        const float* ck = c.data() + 8 * k;
        const V pr = V(ck[0]) * wr - V(ck[1]) * wi + V(ck[2]) * mr - V(ck[3]) * mi;
        const V pi = V(ck[0]) * wi + V(ck[1]) * wr + V(ck[2]) * mi + V(ck[3]) * mr;
        const V qr = V(ck[4]) * wr - V(ck[5]) * wi + V(ck[6]) * mr - V(ck[7]) * mi;
        const V qi = V(ck[4]) * wi + V(ck[5]) * wr + V(ck[6]) * mi + V(ck[7]) * mr;
        st(o, 4 * k, pr), st(o, 4 * k + 1, pi), st(o, 4 * k + 2, qr), st(o, 4 * k + 3, qi);
      }
    }
  });
  return PQ;
}

void check_kept(const at::Tensor& y, const Shape& s) {
  TORCH_CHECK(y.dim() == 5 && y.size(0) == s.G && y.size(1) == s.P && y.size(2) == s.R && y.size(3) == s.L &&
                  y.size(4) == S && y.is_contiguous() && y.scalar_type() == at::kFloat,
              "fft_mix_gate: y (ceil(H / S), P, R, L, S) contiguous float32, S = ", S);
}

// out = x_id prod_i path_i; `activate`: u and x_id are pre-activations (evaluation: GELU first);
// y: where given, receives the convolution's outputs (training: for the backward)
void fft_mix_gate_into(const at::Tensor& x_id, const at::Tensor& u, const at::Tensor& PQ, const at::Tensor& w,
                       const at::Tensor& b, const at::Tensor& out, bool activate, const std::optional<at::Tensor>& y) {
  const Shape s = check(u, x_id, PQ, w, b);
  check_rows(out, "out", s);
  if (y) check_kept(*y, s);
  float* py = y ? y->data_ptr<float>() : nullptr;
  const Tables t(s.M);
  const int64_t M = s.M, L = s.L, P = s.P;
  const int64_t sx = x_id.stride(0), su = u.stride(0), so = out.stride(0);
  const float* px = x_id.data_ptr<float>();
  const float* pu = u.data_ptr<float>();
  const float* pq = PQ.data_ptr<float>();
  float* po = out.data_ptr<float>();
  // tasks: a group of S channels and one sequence, a group's sequences one after another (its
  // PQ, R M 4 S floats, stays in cache between them)
  at::parallel_for(0, s.G * P, 1, [&](int64_t t0, int64_t t1) {
    Buffer fr = buffer(M * S), fi = buffer(M * S);  // Z of u
    Buffer zr = buffer(M * S), zi = buffer(M * S);  // one read-out's inverse transform
    Buffer x = buffer(L * S), gate = buffer(L * S), path = buffer(L * S);
    std::vector<float> lw(s.R * S), lb(s.dirs * S);
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t g = task / P, p = task % P, h0 = g * S, lanes = std::min(S, s.H - h0);
      lane_weights(w.data_ptr<float>(), b.data_ptr<float>(), s, h0, lw.data(), lb.data());
      rows_in(pu + h0 * su + p * L, su, lanes, L, x.get());
      rows_in(px + h0 * sx + p * L, sx, lanes, L, gate.get());
      if (activate) {
        for (int64_t f = 0; f < L; ++f) {
          st(x.get(), f, hummuss_gelu::gelu(ld(x.get(), f)));
          st(gate.get(), f, hummuss_gelu::gelu(ld(gate.get(), f)));
        }
      }
      forward_transform(x.get(), L, fr.get(), fi.get(), t);
      for (int64_t i = 0; i < s.dirs; ++i) {
        const V bias = V::loadu(lb.data() + i * S);
        for (int64_t f = 0; f < L; ++f) st(path.get(), f, bias);
        for (int64_t c = 0; c < s.k; ++c) {
          const int64_t r = i * s.k + c;
          spectral_product(pq + (g * s.R + r) * M * 4 * S, fr.get(), fi.get(), zr.get(), zi.get(), t);
          fft(zr.get(), zi.get(), t, true);  // frames below 2 (M/2) >= L
          const V wc = V::loadu(lw.data() + r * S);
          float* kept = py ? py + ((task * s.R + r) * L) * S : nullptr;  // (g, p, r) of (G, P, R, L, S)
          for (int64_t f = 0; f < L; ++f) {
            const V yv = inverse_frame(zr.get(), zi.get(), f);
            if (kept) st(kept, f, yv);
            st(path.get(), f, ld(path.get(), f) + wc * hummuss_gelu::gelu(yv));
          }
        }
        for (int64_t f = 0; f < L; ++f) st(gate.get(), f, ld(gate.get(), f) * ld(path.get(), f));
      }
      rows_out(gate.get(), lanes, L, po + h0 * so + p * L, so);
    }
  });
}

// -> (grad u, grad x_id (H, P, L), grad w (H, dirs, k), grad b (H, dirs), S (H, R, n/2 + 1, 2))
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fft_mix_gate_backward(
    const at::Tensor& go, const at::Tensor& u, const at::Tensor& x_id, const at::Tensor& y, const at::Tensor& PQa,
    const at::Tensor& w, const at::Tensor& b) {
  const Shape s = check(u, x_id, PQa, w, b);
  check_rows(go, "go", s);
  check_kept(y, s);
  const Tables t(s.M);
  const int64_t M = s.M, L = s.L, P = s.P, R = s.R, H = s.H, spec = (M + 1) * 2;
  at::Tensor gu = at::empty({H, P, L}, u.options()), gx = at::empty({H, P, L}, u.options());
  at::Tensor gw = at::empty({H, s.dirs, s.k}, u.options()), gb = at::empty({H, s.dirs}, u.options());
  at::Tensor Sg = at::empty({H, R, M + 1, 2}, u.options());
  const int64_t sx = x_id.stride(0), su = u.stride(0), sg = go.stride(0);
  const float* px = x_id.data_ptr<float>();
  const float* pu = u.data_ptr<float>();
  const float* pgo = go.data_ptr<float>();
  const float* py = y.data_ptr<float>();
  const float* pqa = PQa.data_ptr<float>();
  // tasks: a group of S channels, all its sequences (the sums over them stay in the task)
  at::parallel_for(0, s.G, 1, [&](int64_t t0, int64_t t1) {
    Buffer fr = buffer(M * S), fi = buffer(M * S);      // Z of u
    Buffer zr = buffer(M * S), zi = buffer(M * S);      // a gradient's transform
    Buffer ur = buffer((M + 1) * S), ui = buffer((M + 1) * S);  // rfft(u)
    Buffer gr = buffer(M * S), gi = buffer(M * S);      // grad u's Z', summed over the read-outs
    Buffer x = buffer(L * S), xid = buffer(L * S), gob = buffer(L * S), tmp = buffer(L * S);
    Buffer act = buffer(R * L * S), slope = buffer(R * L * S), path = buffer(s.dirs * L * S);
    Buffer sums = buffer(R * spec * S);  // S_r for the group's lanes: (R, M + 1, 2, S)
    std::vector<float> lw(R * S), lb(s.dirs * S), lane(S);
    std::vector<double> sw(R * S), sb(s.dirs * S);
    std::vector<V> wsum(s.k);  // a direction's grad w sums over a row, per read-out
    for (int64_t g = t0; g < t1; ++g) {
      const int64_t h0 = g * S, lanes = std::min(S, H - h0);
      lane_weights(w.data_ptr<float>(), b.data_ptr<float>(), s, h0, lw.data(), lb.data());
      std::fill(sums.get(), sums.get() + R * spec * S, 0.f);
      std::fill(sw.begin(), sw.end(), 0.0), std::fill(sb.begin(), sb.end(), 0.0);
      for (int64_t p = 0; p < P; ++p) {
        rows_in(pu + h0 * su + p * L, su, lanes, L, x.get());
        rows_in(px + h0 * sx + p * L, sx, lanes, L, xid.get());
        rows_in(pgo + h0 * sg + p * L, sg, lanes, L, gob.get());
        // rfft(u) (for S), each kept y_r's GELU and GELU', the paths
        forward_transform(x.get(), L, fr.get(), fi.get(), t);
        for (int64_t k = 0; k <= M; ++k) {
          V xr, xi;
          real_spectrum(fr.get(), fi.get(), k, t, xr, xi);
          st(ur.get(), k, xr), st(ui.get(), k, xi);
        }
        for (int64_t i = 0; i < s.dirs; ++i) {
          float* pth = path.get() + i * L * S;
          const V bias = V::loadu(lb.data() + i * S);
          for (int64_t f = 0; f < L; ++f) st(pth, f, bias);
          for (int64_t c = 0; c < s.k; ++c) {
            const int64_t r = i * s.k + c;
            const float* kept = py + ((g * P + p) * R + r) * L * S;
            const V wc = V::loadu(lw.data() + r * S);
            float* a = act.get() + r * L * S;
            float* d = slope.get() + r * L * S;
            for (int64_t f = 0; f < L; ++f) {
              V gv, dv;
              hummuss_gelu::gelu_and_grad(ld(kept, f), gv, dv);
              st(a, f, gv), st(d, f, dv);
              st(pth, f, ld(pth, f) + wc * gv);
            }
          }
        }
        // grad x_id = go prod path (into tmp); per direction gp_i, its sums, and gy = gp_i w GELU' (into slope)
        for (int64_t f = 0; f < L; ++f) {
          V prod = ld(gob.get(), f);
          for (int64_t i = 0; i < s.dirs; ++i) prod = prod * ld(path.get() + i * L * S, f);
          st(tmp.get(), f, prod);
        }
        rows_out(tmp.get(), lanes, L, gx.data_ptr<float>() + h0 * L * P + p * L, L * P);
        for (int64_t i = 0; i < s.dirs; ++i) {
          V bsum(0.f);
          std::fill(wsum.begin(), wsum.end(), V(0.f));
          for (int64_t f = 0; f < L; ++f) {
            V gp = ld(gob.get(), f) * ld(xid.get(), f);
            for (int64_t j = 0; j < s.dirs; ++j)
              if (j != i) gp = gp * ld(path.get() + j * L * S, f);
            bsum = bsum + gp;
            for (int64_t c = 0; c < s.k; ++c) {
              const int64_t r = i * s.k + c;
              wsum[c] = wsum[c] + gp * ld(act.get() + r * L * S, f);
              float* d = slope.get() + r * L * S;
              st(d, f, gp * V::loadu(lw.data() + r * S) * ld(d, f));
            }
          }
          bsum.store(lane.data());
          for (int64_t l = 0; l < S; ++l) sb[i * S + l] += lane[l];
          for (int64_t c = 0; c < s.k; ++c) {
            wsum[c].store(lane.data());
            for (int64_t l = 0; l < S; ++l) sw[(i * s.k + c) * S + l] += lane[l];
          }
        }
        // each gy_r: its transform, its share of grad u's Z' and of S_r
        std::fill(gr.get(), gr.get() + M * S, 0.f), std::fill(gi.get(), gi.get() + M * S, 0.f);
        for (int64_t r = 0; r < R; ++r) {
          forward_transform(slope.get() + r * L * S, L, zr.get(), zi.get(), t);
          adjoint_product(pqa + (g * R + r) * M * 4 * S, zr.get(), zi.get(), ur.get(), ui.get(), gr.get(), gi.get(),
                          sums.get() + r * spec * S, t);
        }
        fft(gr.get(), gi.get(), t, true);
        for (int64_t f = 0; f < L; ++f) st(tmp.get(), f, inverse_frame(gr.get(), gi.get(), f));
        rows_out(tmp.get(), lanes, L, gu.data_ptr<float>() + h0 * L * P + p * L, L * P);
      }
      for (int64_t l = 0; l < lanes; ++l) {
        for (int64_t r = 0; r < R; ++r) gw.data_ptr<float>()[(h0 + l) * R + r] = static_cast<float>(sw[r * S + l]);
        for (int64_t i = 0; i < s.dirs; ++i) gb.data_ptr<float>()[(h0 + l) * s.dirs + i] = static_cast<float>(sb[i * S + l]);
      }
      rows_out(sums.get(), lanes, R * spec, Sg.data_ptr<float>() + h0 * R * spec, R * spec);
    }
  });
  return {gu, gx, gw, gb, Sg};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("fft_mix_gate_lanes() -> int");
  m.def("fft_lane_operator(Tensor W, bool adjoint) -> Tensor");
  m.def("fft_mix_gate_into(Tensor x_id, Tensor u, Tensor PQ, Tensor w, Tensor b, Tensor(a!) out, bool activate,"
        " Tensor(b!)? y) -> ()");
  m.def("fft_mix_gate_backward(Tensor go, Tensor u, Tensor x_id, Tensor y, Tensor PQa, Tensor w, Tensor b)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) {
  m.impl("fft_lane_operator", &fft_lane_operator);
  m.impl("fft_mix_gate_into", &fft_mix_gate_into);
  m.impl("fft_mix_gate_backward", &fft_mix_gate_backward);
}

// the lanes S of this build's vectors, PQ's last dimension (no tensor: no dispatch key)
TORCH_LIBRARY_IMPL(hummuss_cpu, CompositeExplicitAutograd, m) { m.impl("fft_mix_gate_lanes", &fft_mix_gate_lanes); }
