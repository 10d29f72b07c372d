// The streaming step's one-call blocks (mix_gate.cpp's `joint_block`, state_stagger.cpp's
// `stagger_block_`; their comments there say what they compute), for stream_layer.cpp, which
// runs a layer's two streams at once.
#pragma once

#include <ATen/ATen.h>

namespace hummuss_blocks {

// A spatial block over one frame's joints: x (N, Dm) -> (N, Dm).
at::Tensor joint_block(const at::Tensor& x, const at::Tensor& ln_w, const at::Tensor& ln_b, double eps,
                       const at::Tensor& Wp_in, const at::Tensor& bp_in, const at::Tensor& Kz, const at::Tensor& idx,
                       const at::Tensor& w, const at::Tensor& b, const at::Tensor& Wp_out, const at::Tensor& bp_out);

// A temporal block's frame with the staggered update, its state (s, ring, free, clock) in place:
// x (N, Dm) -> (N, Dm).
at::Tensor stagger_block_(const at::Tensor& x, const at::Tensor& ln_w, const at::Tensor& ln_b, double eps,
                          const at::Tensor& Wp_in, const at::Tensor& bp_in, at::Tensor s, at::Tensor ring,
                          at::Tensor free, at::Tensor clock, const at::Tensor& coef, const at::Tensor& K,
                          const at::Tensor& D, const at::Tensor& mw, const at::Tensor& mb, const at::Tensor& Wp_out,
                          const at::Tensor& bp_out);

}  // namespace hummuss_blocks
