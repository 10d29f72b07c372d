// The few-rows linear layer of few_rows_linear.cpp and a layer norm, for the kernels that run
// a whole streaming block in one call (state_stagger.cpp's `stagger_block_`, mix_gate.cpp's
// `joint_block`): a product into a given buffer, with rows at any stride and an optional residual.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace hummuss_few_rows {

// out[m, :N] = act(x[m, :K] W^T + b) + residual[m, :N] for m < M; act GELU (exact) where
// `gelu`, else identity; residual may be null. x's rows are ldx floats apart, out's ldo and
// residual's ldr. Wp, bp packed by `few_rows_pack` for these K and N. Parallel over the panels.
void linear(const float* x, int64_t ldx, int64_t M, int64_t K, const float* Wp, const float* bp, int64_t N,
            bool gelu, float* out, int64_t ldo, const float* residual, int64_t ldr);

// z = LayerNorm(x) (weight w, bias b, eps) over N rows of D: x's rows ldx apart, z contiguous.
void layer_norm(const float* x, int64_t ldx, int64_t N, int64_t D, const float* w, const float* b, float eps, float* z);

// The checks of a one-call block's tensors: x (N, Dm) with contiguous rows (N < 0: any), the
// norm's ln_w, ln_b (Dm,), W_in (2H, Dm) and W_out (Dm, H) packed by `few_rows_pack`, all
// float32 on the CPU; `op` names the caller in the errors. Returns Dm.
int64_t check_block(const at::Tensor& x, int64_t N, int64_t H, const at::Tensor& ln_w, const at::Tensor& ln_b,
                    const at::Tensor& Wp_in, const at::Tensor& bp_in, const at::Tensor& Wp_out, const at::Tensor& bp_out,
                    const char* op);

}  // namespace hummuss_few_rows
