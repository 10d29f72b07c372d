// A GDSSM block's input projection after its matmul, in training: the bias and the GELU in
// one pass over the channel-major pre-activations, and in the backward GELU's derivative and
// the bias's gradient in one pass over the output's gradient (hummuss.channel_linear's
// `ChannelMajorGelu`; `F.gelu(W z^T + b)` the reference):
//
//     bias_gelu_:          pre[h, n] += b[h]          act[h, n] = GELU(pre[h, n])
//     gelu_bias_backward:  gpre[h, n] = g[h, n] GELU'(pre[h, n])      gb[h] = sum_n gpre[h, n]
//
// pre, act, g (H, N) float32, rows contiguous and evenly spaced (a block of columns of a wider
// tensor is fine), b (H,). Eagerly these are three passes forward (the matmul's bias copied
// into its output, the GELU's read and write) and two backward (GELU's backward, the sum).
// Rows h run in parallel (ATen's pool); the sums in vector lanes along a row, then in double.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "gelu.h"

#include <tuple>

namespace {

using V = at::vec::Vectorized<float>;

void check_rows(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.device().is_cpu() && t.scalar_type() == at::kFloat && (t.size(1) <= 1 || t.stride(1) == 1),
              "bias_gelu: ", name, " (H, N) float32 on the CPU, rows contiguous");
}

void bias_gelu_(const at::Tensor& pre, const at::Tensor& b, const at::Tensor& act) {
  check_rows(pre, "pre");
  check_rows(act, "act");
  TORCH_CHECK(act.sizes() == pre.sizes() && b.dim() == 1 && b.size(0) == pre.size(0) && b.is_contiguous() &&
                  b.scalar_type() == at::kFloat,
              "bias_gelu_: act of pre's shape, b (H,) contiguous float32");
  const int64_t N = pre.size(1), lp = pre.stride(0), la = act.stride(0);
  float* p = pre.data_ptr<float>();
  float* a = act.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  at::parallel_for(0, pre.size(0), 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      const V bias(bp[h]);
      float* pr = p + h * lp;
      float* ar = a + h * la;
      for (int64_t n = 0; n < N; n += V::size()) {
        const int64_t count = std::min<int64_t>(V::size(), N - n);
        const V x = V::loadu(pr + n, count) + bias;
        x.store(pr + n, count);
        hummuss_gelu::gelu(x).store(ar + n, count);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> gelu_bias_backward(const at::Tensor& g, const at::Tensor& pre) {
  check_rows(g, "g");
  check_rows(pre, "pre");
  TORCH_CHECK(g.sizes() == pre.sizes(), "gelu_bias_backward: g of pre's shape");
  const int64_t H = pre.size(0), N = pre.size(1), lg = g.stride(0), lp = pre.stride(0);
  at::Tensor gpre = at::empty({H, N}, pre.options());
  at::Tensor gb = at::empty({H}, pre.options());
  const float* gp = g.data_ptr<float>();
  const float* pp = pre.data_ptr<float>();
  float* o = gpre.data_ptr<float>();
  float* sb = gb.data_ptr<float>();
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      V lanes(0.f);
      for (int64_t n = 0; n < N; n += V::size()) {
        const int64_t count = std::min<int64_t>(V::size(), N - n);  // the rest loads as zeros
        V act, slope;
        hummuss_gelu::gelu_and_grad(V::loadu(pp + h * lp + n, count), act, slope);
        const V d = V::loadu(gp + h * lg + n, count) * slope;
        d.store(o + h * N + n, count);
        lanes = lanes + d;
      }
      float buf[V::size()];
      lanes.store(buf);
      double sum = 0;
      for (int64_t l = 0; l < V::size(); ++l) sum += buf[l];
      sb[h] = static_cast<float>(sum);
    }
  });
  return {gpre, gb};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("bias_gelu_(Tensor(a!) pre, Tensor b, Tensor(b!) act) -> ()");
  m.def("gelu_bias_backward(Tensor g, Tensor pre) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) {
  m.impl("bias_gelu_", &bias_gelu_);
  m.impl("gelu_bias_backward", &gelu_bias_backward);
}
