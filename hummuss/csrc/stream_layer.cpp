// A causal HumMUSS layer's streaming step, its two streams at once:
//
//     x_st = stagger_block_(joint_block(h))      stream 1: spatial, then temporal
//     x_ts = joint_block(stagger_block_(h))      stream 2: temporal, then spatial
//
// h (N, Dm), N = B J tokens; returns (x_st, x_ts), each (N, Dm), for the layer's fusion. The
// blocks' tensors come as lists in their ops' order without eps (joint_block: ln_w, ln_b,
// Wp_in, bp_in, Kz, idx, w, b, Wp_out, bp_out; stagger_block_: ln_w, ln_b, Wp_in, bp_in, s, ring,
// free, clock, coef, K, D, mw, mb, Wp_out, bp_out, its state updated in place), eps the four
// norms' in the order (spatial_st, temporal_st, temporal_ts, spatial_ts).
//
// The streams share nothing but h. Where ATen's pool has two threads, each runs one stream on
// its own, its kernels inline (ATen runs a parallel loop inside a parallel region in the
// calling thread), where one after the other each kernel splits its work over both threads:
// no wait at the end of each of the layer's twelve parallel loops for the slower thread, and the
// kernels' serial parts (the layer norms, the few-rows tiles' last panels) overlap the other
// stream's work. The same operations on the same numbers: the outputs are equal bit for bit.
// With more threads the streams run one after the other, each kernel over all of them.
// Paper-causal on a 2-core Zen 3 EPYC, eager, the frame with this call against the same kernels
// called block by block, alternated in one process: 0.93 and 0.95 of the time (medians of 12
// rounds of 30 frames, two processes); at dim 16, where the frame is its fixed cost, 0.62.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <tuple>

#include "blocks.h"

namespace {

at::Tensor joint(const at::Tensor& x, at::TensorList a, double eps) {
  TORCH_CHECK(a.size() == 10, "stream_layer: a spatial block's 10 tensors, got ", a.size());
  return hummuss_blocks::joint_block(x, a[0], a[1], eps, a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
}

at::Tensor temporal(const at::Tensor& x, at::TensorList a, double eps) {
  TORCH_CHECK(a.size() == 15, "stream_layer: a temporal block's 15 tensors, got ", a.size());
  return hummuss_blocks::stagger_block_(x, a[0], a[1], eps, a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10],
                                        a[11], a[12], a[13], a[14]);
}

std::tuple<at::Tensor, at::Tensor> stream_layer(const at::Tensor& h, at::TensorList spatial_st, at::TensorList temporal_st,
                                                at::TensorList temporal_ts, at::TensorList spatial_ts,
                                                at::ArrayRef<double> eps) {
  TORCH_CHECK(eps.size() == 4, "stream_layer: the four blocks' eps, got ", eps.size());
  at::Tensor x_st, x_ts;
  const auto stream = [&](int64_t i) {
    if (i == 0) {
      x_st = temporal(joint(h, spatial_st, eps[0]), temporal_st, eps[1]);
    } else {
      x_ts = joint(temporal(h, temporal_ts, eps[2]), spatial_ts, eps[3]);
    }
  };
  if (at::get_num_threads() == 2) {
    const at::ThreadLocalState caller;  // inference or grad mode, dispatch keys: the pool's thread runs as the caller
    at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard as_caller(caller);
      for (int64_t i = begin; i < end; ++i) stream(i);
    });
  } else {
    stream(0);
    stream(1);
  }
  return {x_st, x_ts};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hummuss_cpu, m) {
  m.def("stream_layer(Tensor h, Tensor[] spatial_st, Tensor(a!)[] temporal_st, Tensor(b!)[] temporal_ts, "
        "Tensor[] spatial_ts, float[] eps) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) { m.impl("stream_layer", &stream_layer); }
