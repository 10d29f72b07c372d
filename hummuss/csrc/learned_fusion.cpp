// The streaming step's learned fusion of a layer's two streams (hummuss.fusion.Aggregate,
// kind "learned", channels last), for one frame's tokens in one call:
//
//     l_ti  = c_i + sum_d W_id a_td + sum_d W_i(D+d) b_td          (i < 2: a linear layer of [a, b])
//     alpha = softmax_i(l_t)
//     out_t = alpha_t0 a_t + alpha_t1 b_t
//
// a, b (N, D) rows contiguous (any row stride), W (2, 2 D) and c (2,) contiguous; float32 on
// the CPU. Eagerly this is seven operations on 17 x 512 numbers (cat, the product, softmax, two
// slices, mul, addcmul), each dispatched, allocated and run on its own: 44 us a layer for
// paper-causal on a 2-core Zen 3 EPYC, where this call takes 6 us. One thread: a frame's work
// is too small to share.

#include <ATen/ATen.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

namespace {

using V = at::vec::Vectorized<float>;

void check(const at::Tensor& t, int64_t rows, int64_t cols, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 2 && t.size(0) == rows &&
                  t.size(1) == cols && (cols <= 1 || t.stride(1) == 1),
              "learned_fusion: ", name, " (", rows, ", ", cols, ") float32 on the CPU with contiguous rows, got ",
              t.sizes());
}

// sum over d < D of w[d] x[d]: vector lanes, then one reduction
inline float dot(const float* w, const float* x, int64_t D) {
  V acc(0.f);
  int64_t d = 0;
  for (; d + V::size() <= D; d += V::size()) acc = at::vec::fmadd(V::loadu(w + d), V::loadu(x + d), acc);
  float lanes[V::size()];
  acc.store(lanes);
  float s = 0.f;
  for (int64_t l = 0; l < V::size(); ++l) s += lanes[l];
  for (; d < D; ++d) s += w[d] * x[d];
  return s;
}

at::Tensor learned_fusion(const at::Tensor& a, const at::Tensor& b, const at::Tensor& W, const at::Tensor& c) {
  TORCH_CHECK(a.dim() == 2, "learned_fusion: a (N, D), got ", a.sizes());
  const int64_t N = a.size(0), D = a.size(1);
  check(a, N, D, "a");
  check(b, N, D, "b");
  check(W, 2, 2 * D, "W");
  TORCH_CHECK(W.is_contiguous() && c.is_contiguous() && c.dim() == 1 && c.size(0) == 2 && c.device().is_cpu() &&
                  c.scalar_type() == at::kFloat,
              "learned_fusion: W (2, 2 D) and c (2,) contiguous float32 on the CPU");
  at::Tensor out = at::empty({N, D}, a.options().memory_format(at::MemoryFormat::Contiguous));
  const float *ap = a.data_ptr<float>(), *bp = b.data_ptr<float>(), *w = W.data_ptr<float>(), *cp = c.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for (int64_t t = 0; t < N; ++t) {
    const float* at_ = ap + t * a.stride(0);
    const float* bt = bp + t * b.stride(0);
    const float l0 = cp[0] + dot(w, at_, D) + dot(w + D, bt, D);
    const float l1 = cp[1] + dot(w + 2 * D, at_, D) + dot(w + 3 * D, bt, D);
    const float top = std::max(l0, l1), e0 = std::exp(l0 - top), e1 = std::exp(l1 - top);
    const V w0(e0 / (e0 + e1)), w1(e1 / (e0 + e1));
    float* o = op + t * D;
    int64_t d = 0;
    for (; d + V::size() <= D; d += V::size())
      at::vec::fmadd(w1, V::loadu(bt + d), w0 * V::loadu(at_ + d)).store(o + d);
    const int64_t rest = D - d;
    if (rest > 0) at::vec::fmadd(w1, V::loadu(bt + d, rest), w0 * V::loadu(at_ + d, rest)).store(o + d, rest);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("learned_fusion(Tensor a, Tensor b, Tensor W, Tensor c) -> Tensor");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) { m.impl("learned_fusion", &learned_fusion); }
