// A spatial GDSSM block's convolution over the joints as its Toeplitz product, per channel,
// and the product's two backward products (hummuss.ssm.conv's `apply_conv` with a "cols"
// Toeplitz operator; torch.bmm the reference):
//
//     toeplitz_product:         y[h, p, c]  = sum_j u[h, p, j] T[h, j, c]     u (H, P, L), T (H, L, C)
//     toeplitz_input_grad:      gu[h, p, j] = sum_c gy[h, p, c] T[h, j, c]    gy (H, P, C)
//     toeplitz_weight_grad:     gT[h, j, c] = sum_p u[h, p, j] gy[h, p, c]
//
// float32, contiguous. For the 17 joints (L 17, C = R L = 34) each channel's matrices are a
// few KB, which MKL's batched product handles slowly: on a 2-core EPYC, paper size (H 640,
// P 486), 6.6 ms forward and 11.2 for the two backward products. Here a channel's T (or its transpose) is
// copied into a zero-padded buffer of whole vectors, and rows of u (or gy) go four at a time
// against it, their sums in registers (NV vectors a row; C and L up to 64). Channels run in
// parallel (ATen's pool). With huge pages (as the suite runs), paper size: forward 6.3 ms
// against bmm's 6.6 (y's writes set the pace), gu 3.4 against 5.3, gT 5.3 against 5.9.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <vector>

namespace {

using V = at::vec::Vectorized<float>;
constexpr int64_t kW = V::size();
constexpr int64_t kRows = 4;  // rows of the left factor per pass
constexpr int64_t kMaxColumns = 64;  // C and L up to this many (four AVX-512 vectors, eight AVX2 ones)

// out[p, :N] = sum_k a[p, k] B[k, :] for p < P: a (P, K) rows spaced lda, B (K, NV kW) padded
// with zeros past N, out rows spaced ldo.
template <int NV>
void rows_times(const float* a, int64_t lda, const float* B, int64_t P, int64_t K, int64_t N, float* out, int64_t ldo) {
  const int64_t tail = N - (NV - 1) * kW;  // columns in the last vector
  int64_t p = 0;
  for (; p + kRows <= P; p += kRows) {
    V acc[kRows][NV];
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = V(0.f);
    for (int64_t k = 0; k < K; ++k) {
      V b[NV];
      for (int v = 0; v < NV; ++v) b[v] = V::loadu(B + k * NV * kW + v * kW);
      for (int r = 0; r < kRows; ++r) {
        const V x(a[(p + r) * lda + k]);
        for (int v = 0; v < NV; ++v) acc[r][v] = at::vec::fmadd(x, b[v], acc[r][v]);
      }
    }
    for (int r = 0; r < kRows; ++r) {
      float* o = out + (p + r) * ldo;
      for (int v = 0; v < NV - 1; ++v) acc[r][v].store(o + v * kW);
      acc[r][NV - 1].store(o + (NV - 1) * kW, tail);
    }
  }
  for (; p < P; ++p) {
    V acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = V(0.f);
    for (int64_t k = 0; k < K; ++k) {
      const V x(a[p * lda + k]);
      for (int v = 0; v < NV; ++v) acc[v] = at::vec::fmadd(x, V::loadu(B + k * NV * kW + v * kW), acc[v]);
    }
    float* o = out + p * ldo;
    for (int v = 0; v < NV - 1; ++v) acc[v].store(o + v * kW);
    acc[NV - 1].store(o + (NV - 1) * kW, tail);
  }
}

// gT[j, :C] = sum_p u[p, j] gy[p, :C]: u (P, L), gy (P, C), gT (L, C); rows j four at a time
template <int NV>
void outer_sums(const float* u, const float* gy, int64_t P, int64_t L, int64_t C, float* gT) {
  const int64_t tail = C - (NV - 1) * kW;
  for (int64_t j0 = 0; j0 < L; j0 += kRows) {
    const int64_t nj = std::min<int64_t>(kRows, L - j0);
    V acc[kRows][NV];
    for (int r = 0; r < kRows; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = V(0.f);
    for (int64_t p = 0; p < P; ++p) {
      V g[NV];
      for (int v = 0; v < NV - 1; ++v) g[v] = V::loadu(gy + p * C + v * kW);
      g[NV - 1] = V::loadu(gy + p * C + (NV - 1) * kW, tail);
      for (int r = 0; r < kRows; ++r) {
        if (r >= nj) break;
        const V x(u[p * L + j0 + r]);
        for (int v = 0; v < NV; ++v) acc[r][v] = at::vec::fmadd(x, g[v], acc[r][v]);
      }
    }
    for (int r = 0; r < nj; ++r) {
      float* o = gT + (j0 + r) * C;
      for (int v = 0; v < NV - 1; ++v) acc[r][v].store(o + v * kW);
      acc[r][NV - 1].store(o + (NV - 1) * kW, tail);
    }
  }
}

template <typename F>
void dispatch(int64_t nv, F&& f) {
  switch (nv) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
  }
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 3 && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(),
              "toeplitz_product: ", name, " contiguous (H, ., .) float32 on the CPU");
}

int64_t vectors(int64_t n) {
  TORCH_CHECK(n >= 1 && n <= kMaxColumns && (n + kW - 1) / kW <= 8, "toeplitz_product: 1 to ", kMaxColumns,
              " columns, got ", n);
  return (n + kW - 1) / kW;
}

// B (H, K, N) -> channel h's rows padded to nv whole vectors (transposed: B^T, (N, K) -> (K, N))
void padded(const float* B, int64_t K, int64_t N, int64_t nv, bool transpose, std::vector<float>& out) {
  out.assign(K * nv * kW, 0.f);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) out[k * nv * kW + n] = transpose ? B[n * K + k] : B[k * N + n];
}

// out[h] = a[h] (P, K) @ B[h] (K, N) for each channel h, with B (H, K, N), or B^T for B (H, N, K)
at::Tensor channel_products(const at::Tensor& a, const at::Tensor& B, int64_t K, int64_t N, bool transpose) {
  const int64_t H = a.size(0), P = a.size(1), nv = vectors(N);
  at::Tensor out = at::empty({H, P, N}, a.options());
  const float *pa = a.data_ptr<float>(), *pb = B.data_ptr<float>();
  float* po = out.data_ptr<float>();
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> buf;
    for (int64_t h = h0; h < h1; ++h) {
      padded(pb + h * K * N, K, N, nv, transpose, buf);
      dispatch(nv, [&](auto NV) { rows_times<NV>(pa + h * P * K, K, buf.data(), P, K, N, po + h * P * N, N); });
    }
  });
  return out;
}

at::Tensor toeplitz_product(const at::Tensor& u, const at::Tensor& T) {
  check(u, "u");
  check(T, "T");
  TORCH_CHECK(T.size(0) == u.size(0) && T.size(1) == u.size(2), "toeplitz_product: T (H, L, C) for u (H, P, L)");
  return channel_products(u, T, T.size(1), T.size(2), false);  // u T
}

at::Tensor toeplitz_input_grad(const at::Tensor& gy, const at::Tensor& T) {
  check(gy, "gy");
  check(T, "T");
  TORCH_CHECK(T.size(0) == gy.size(0) && T.size(2) == gy.size(2), "toeplitz_input_grad: T (H, L, C) for gy (H, P, C)");
  return channel_products(gy, T, T.size(2), T.size(1), true);  // gy T^T
}

at::Tensor toeplitz_weight_grad(const at::Tensor& u, const at::Tensor& gy) {
  check(u, "u");
  check(gy, "gy");
  const int64_t H = u.size(0), P = u.size(1), L = u.size(2), C = gy.size(2);
  TORCH_CHECK(gy.size(0) == H && gy.size(1) == P, "toeplitz_weight_grad: gy (H, P, C) for u (H, P, L)");
  const int64_t nv = vectors(C);
  at::Tensor gT = at::empty({H, L, C}, u.options());
  const float *pu = u.data_ptr<float>(), *pg = gy.data_ptr<float>();
  float* pt = gT.data_ptr<float>();
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h)
      dispatch(nv, [&](auto NV) { outer_sums<NV>(pu + h * P * L, pg + h * P * C, P, L, C, pt + h * L * C); });
  });
  return gT;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("toeplitz_product(Tensor u, Tensor T) -> Tensor");
  m.def("toeplitz_input_grad(Tensor gy, Tensor T) -> Tensor");
  m.def("toeplitz_weight_grad(Tensor u, Tensor gy) -> Tensor");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) {
  m.impl("toeplitz_product", &toeplitz_product);
  m.impl("toeplitz_input_grad", &toeplitz_input_grad);
  m.impl("toeplitz_weight_grad", &toeplitz_weight_grad);
}
