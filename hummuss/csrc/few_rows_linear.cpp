// A linear layer for a few rows at a time: the streaming step's projections, where one frame
// is 17 tokens (its joints) and each of paper-causal's 40 projections is a (17, K) @ (K, N)
// product (hummuss.packed_linear calls it; oneDNN's packed matmul and torch.addmm stay beside
// it where these kernels are not built).
//
//     out_mn = b_n + sum_k x_mk W_nk          then GELU (exact, erf) where asked
//
// x (M, K); W (N, K) and b (N,) are packed once (`few_rows_pack`) into column panels of NR
// outputs, NR = kPanelVectors vectors of this CPU's width: Wp (P, K, NR) and bp (P, NR),
// P = ceil(N / NR), zero-padded past N. A panel's K rows are read in order, one stride apart.
//
// For so few rows a library matmul pays a fixed cost that matters: oneDNN's packed call took
// 30-33 us on a (17, 16) @ (16, 96) product, where this kernel takes 7 us; on paper-causal's
// shapes (2-core AVX2 EPYC, medians of 300, two rounds) 108-111 against 139-147 us for
// (17, 256) @ (256, 1536) and 55-56 against 89 us for (17, 768) @ (768, 256). Each tile keeps
// MR rows x NR outputs of accumulators in registers (AVX2's 16: 6 x 16; AVX-512's 32:
// 12 x 32), broadcasts one x value per row and step k, and reads a panel's values once per
// tile; the rows run in the fewest tiles of near-equal size (17 = 6 + 6 + 5 on AVX2) and the panels in parallel.
//
// In a stream the weights come from memory every frame (45 MB for paper-causal; the states'
// 67 MB pass between two uses of a panel), and the hardware prefetcher stops at each 4 KB
// page, so the tile asks for the panel's lines 4 KB ahead of its reads. On a 2-core AVX-512
// Xeon (480 MB L3), 20 weight sets in turn with a 6.7 MB pass between calls (medians of 400):
// 111 -> 65 us for (17, 256) @ (256, 1536), 48 -> 35 us for (17, 768) @ (768, 256); 2 KB
// ahead 75 and 34, 8 KB 70 and 36.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <cmath>
#include <functional>
#include <tuple>

#include "few_rows.h"

namespace {

using at::vec::Vectorized;
using V = Vectorized<float>;

constexpr int64_t kVector = V::size();
constexpr int kPanelVectors = 2;                                   // NR = 2 vectors of outputs
constexpr int64_t kPanel = kPanelVectors * kVector;                // NR
constexpr int kMaxTileRows = kVector >= 16 ? 12 : 6;               // MR: accumulators fill 3/4 of the registers
constexpr int64_t kLineFloats = 16;                                // a 64-byte cache line
constexpr int64_t kPrefetchAhead = 4096 / (kPanel * 4);            // steps k ahead: 4 KB of the panel

// One tile: rows [0, MR) of x (ldx apart) against one panel, written to out's first `cols`
// columns (plus the residual's, where given).
template <int MR>
inline void tile(const float* x, int64_t ldx, const float* pw, const float* pb, int64_t K, float* out,
                 int64_t ldo, int64_t cols, bool gelu, const float* res, int64_t ldr) {
  V acc[MR][kPanelVectors];
  for (int j = 0; j < kPanelVectors; ++j) {
    const V b = V::loadu(pb + j * kVector);
    for (int r = 0; r < MR; ++r) acc[r][j] = b;
  }
  for (int64_t k = 0; k < K; ++k) {
    // the weights stream from memory once per frame: the hardware prefetcher stops at each
    // 4 KB page, so ask for the panel (and the next panel, past its end) 4 KB ahead (GCC's and
    // Clang's builtin: hummuss.cpu_kernels builds with their flags)
    for (int64_t l = 0; l < kPanel; l += kLineFloats) __builtin_prefetch(pw + (k + kPrefetchAhead) * kPanel + l, 0, 3);
    V w[kPanelVectors];
    for (int j = 0; j < kPanelVectors; ++j) w[j] = V::loadu(pw + k * kPanel + j * kVector);
    for (int r = 0; r < MR; ++r) {
      const V a(x[r * ldx + k]);
      for (int j = 0; j < kPanelVectors; ++j) acc[r][j] = at::vec::fmadd(a, w[j], acc[r][j]);
    }
  }
  const V half(0.5f), one(1.f), inv_sqrt2(0.70710678118654752440f);
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < kPanelVectors; ++j) {
      V y = acc[r][j];
      if (gelu) y = y * half * (one + (y * inv_sqrt2).erf());
      const int64_t c0 = j * kVector;
      if (c0 + kVector <= cols) {
        if (res) y = y + V::loadu(res + r * ldr + c0);
        y.store(out + r * ldo + c0);
      } else if (c0 < cols) {
        const int n = static_cast<int>(cols - c0);
        if (res) y = y + V::loadu(res + r * ldr + c0, n);
        y.store(out + r * ldo + c0, n);
      }
    }
}

// All M rows against one panel: ceil(M / kMaxTileRows) tiles of near-equal size.
inline void panel(const float* x, int64_t ldx, int64_t M, int64_t K, const float* pw, const float* pb, float* out,
                  int64_t ldo, int64_t cols, bool gelu, const float* res, int64_t ldr) {
  const int64_t tiles = (M + kMaxTileRows - 1) / kMaxTileRows;
  for (int64_t t = 0, r0 = 0; t < tiles; ++t) {
    const int64_t mr = (M - r0) / (tiles - t);
    const float* xr = x + r0 * ldx;
    float* o = out + r0 * ldo;
    const float* rr = res ? res + r0 * ldr : nullptr;
    switch (mr) {  // (on AVX2 tiles have at most 6 rows)
#define HUMMUSS_TILE(n) case n: tile<n>(xr, ldx, pw, pb, K, o, ldo, cols, gelu, rr, ldr); break;
      HUMMUSS_TILE(1) HUMMUSS_TILE(2) HUMMUSS_TILE(3) HUMMUSS_TILE(4) HUMMUSS_TILE(5) HUMMUSS_TILE(6)
      HUMMUSS_TILE(7) HUMMUSS_TILE(8) HUMMUSS_TILE(9) HUMMUSS_TILE(10) HUMMUSS_TILE(11) HUMMUSS_TILE(12)
#undef HUMMUSS_TILE
      default: TORCH_CHECK(false, "few_rows_linear: a tile of ", mr, " rows");
    }
    r0 += mr;
  }
}

void check_float_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, "few_rows_linear: ", name,
              " must be a float32 CPU tensor");
}

// W (N, K), b (N,) -> (Wp (P, K, NR), bp (P, NR)), zero-padded past N.
std::tuple<at::Tensor, at::Tensor> few_rows_pack(const at::Tensor& W, const at::Tensor& b) {
  check_float_cpu(W, "W");
  check_float_cpu(b, "b");
  TORCH_CHECK(W.dim() == 2 && b.dim() == 1 && b.size(0) == W.size(0), "few_rows_pack: W (N, K) and b (N,)");
  const int64_t N = W.size(0), K = W.size(1), P = (N + kPanel - 1) / kPanel;
  auto wp = at::zeros({P * kPanel, K}, W.options());
  wp.narrow(0, 0, N).copy_(W);
  auto bp = at::zeros({P * kPanel}, b.options());
  bp.narrow(0, 0, N).copy_(b);
  return {wp.view({P, kPanel, K}).transpose(1, 2).contiguous(), bp.view({P, kPanel})};
}

// x (M, K) -> (M, N): x W^T + b, then GELU where `gelu`.
at::Tensor few_rows_linear(const at::Tensor& x, const at::Tensor& Wp, const at::Tensor& bp, int64_t N, bool gelu) {
  check_float_cpu(x, "x");
  check_float_cpu(Wp, "Wp");
  check_float_cpu(bp, "bp");
  TORCH_CHECK(x.dim() == 2, "few_rows_linear: x (M, K)");
  const int64_t M = x.size(0), K = x.size(1), P = (N + kPanel - 1) / kPanel;
  TORCH_CHECK(N >= 1 && Wp.dim() == 3 && Wp.size(0) == P && Wp.size(1) == K && Wp.size(2) == kPanel &&
                  Wp.is_contiguous(), "few_rows_linear: Wp (", P, ", ", K, ", ", kPanel,
              ") from few_rows_pack for N = ", N, " outputs and x's K = ", K);
  TORCH_CHECK(bp.dim() == 2 && bp.size(0) == P && bp.size(1) == kPanel && bp.is_contiguous(),
              "few_rows_linear: bp (P, NR) from few_rows_pack");
  const auto xc = x.stride(1) == 1 ? x : x.contiguous();  // rows at any stride
  auto out = at::empty({M, N}, x.options());
  if (M == 0) return out;
  hummuss_few_rows::linear(xc.data_ptr<float>(), xc.stride(0), M, K, Wp.data_ptr<float>(), bp.data_ptr<float>(), N,
                           gelu, out.data_ptr<float>(), N, nullptr, 0);
  return out;
}

}  // namespace

// z = LayerNorm(x) over rows of D (x's ldx apart, z's contiguous): each row's mean, then its
// (biased) variance about the mean, vectorised.
void hummuss_few_rows::layer_norm(const float* x, int64_t ldx, int64_t N, int64_t D, const float* w, const float* b, float eps, float* z) {
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * ldx;
    float* zr = z + n * D;
    V acc(0.f);
    int64_t d = 0;
    for (; d + V::size() <= D; d += V::size()) acc = acc + V::loadu(xr + d);
    float sum = at::vec::vec_reduce_all<float>(std::plus<V>(), acc);
    for (; d < D; ++d) sum += xr[d];
    const float mean = sum / static_cast<float>(D);
    const V vm(mean);
    acc = V(0.f);
    for (d = 0; d + V::size() <= D; d += V::size()) {
      const V c = V::loadu(xr + d) - vm;
      acc = at::vec::fmadd(c, c, acc);
    }
    float sq = at::vec::vec_reduce_all<float>(std::plus<V>(), acc);
    for (; d < D; ++d) sq += (xr[d] - mean) * (xr[d] - mean);
    const float rstd = 1.f / std::sqrt(sq / static_cast<float>(D) + eps);
    const V vr(rstd);
    for (d = 0; d + V::size() <= D; d += V::size())
      at::vec::fmadd((V::loadu(xr + d) - vm) * vr, V::loadu(w + d), V::loadu(b + d)).store(zr + d);
    for (; d < D; ++d) zr[d] = (xr[d] - mean) * rstd * w[d] + b[d];
  }
}

int64_t hummuss_few_rows::check_block(const at::Tensor& x, int64_t N, int64_t H, const at::Tensor& ln_w,
                                      const at::Tensor& ln_b, const at::Tensor& Wp_in, const at::Tensor& bp_in,
                                      const at::Tensor& Wp_out, const at::Tensor& bp_out, const char* op) {
  for (const auto* t : {&x, &ln_w, &ln_b, &Wp_in, &bp_in, &Wp_out, &bp_out})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat, op, ": float32 CPU tensors");
  TORCH_CHECK(x.dim() == 2 && (N < 0 || x.size(0) == N) && x.stride(1) == 1, op, ": x (N, Dm), rows contiguous");
  const int64_t Dm = x.size(1), Pin = (2 * H + kPanel - 1) / kPanel, Pout = (Dm + kPanel - 1) / kPanel;
  TORCH_CHECK(ln_w.dim() == 1 && ln_w.size(0) == Dm && ln_b.sizes() == ln_w.sizes() && ln_w.is_contiguous() &&
                  ln_b.is_contiguous(), op, ": ln_w, ln_b (Dm,)");
  TORCH_CHECK(Wp_in.sizes() == at::IntArrayRef({Pin, Dm, kPanel}) && Wp_in.is_contiguous() &&
                  bp_in.sizes() == at::IntArrayRef({Pin, kPanel}) && bp_in.is_contiguous(),
              op, ": Wp_in (", Pin, ", ", Dm, ", ", kPanel, "), bp_in from few_rows_pack of W_in (2H, Dm)");
  TORCH_CHECK(Wp_out.sizes() == at::IntArrayRef({Pout, H, kPanel}) && Wp_out.is_contiguous() &&
                  bp_out.sizes() == at::IntArrayRef({Pout, kPanel}) && bp_out.is_contiguous(),
              op, ": Wp_out (", Pout, ", ", H, ", ", kPanel, "), bp_out from few_rows_pack of W_out (Dm, H)");
  return Dm;
}

void hummuss_few_rows::linear(const float* x, int64_t ldx, int64_t M, int64_t K, const float* Wp, const float* bp,
                              int64_t N, bool gelu, float* out, int64_t ldo, const float* residual, int64_t ldr) {
  const int64_t P = (N + kPanel - 1) / kPanel;
  at::parallel_for(0, P, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p)
      panel(x, ldx, M, K, Wp + p * K * kPanel, bp + p * kPanel, out + p * kPanel, ldo, std::min(kPanel, N - p * kPanel),
            gelu, residual ? residual + p * kPanel : nullptr, ldr);
  });
}

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("few_rows_pack(Tensor W, Tensor b) -> (Tensor, Tensor)");
  m.def("few_rows_linear(Tensor x, Tensor Wp, Tensor bp, int N, bool gelu) -> Tensor");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) {
  m.impl("few_rows_pack", &few_rows_pack);
  m.impl("few_rows_linear", &few_rows_linear);
}
