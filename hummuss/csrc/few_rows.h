// The few-rows linear layer of few_rows_linear.cpp and a layer norm, for the kernels that run
// a whole streaming block in one call (state_stagger.cpp's `stagger_block_`, mix_gate.cpp's
// `joint_block`): a product into a given buffer, with rows at any stride and an optional residual.
#pragma once

#include <cstdint>

namespace hummuss_few_rows {

// out[m, :N] = act(x[m, :K] W^T + b) + residual[m, :N] for m < M; act GELU (exact) where
// `gelu`, else identity; residual may be null. x's rows are ldx floats apart, out's ldo and
// residual's ldr. Wp, bp packed by `few_rows_pack` for these K and N. Parallel over the panels.
void linear(const float* x, int64_t ldx, int64_t M, int64_t K, const float* Wp, const float* bp, int64_t N,
            bool gelu, float* out, int64_t ldo, const float* residual, int64_t ldr);

// z = LayerNorm(x) (weight w, bias b, eps) over N rows of D: x's rows ldx apart, z contiguous.
void layer_norm(const float* x, int64_t ldx, int64_t N, int64_t D, const float* w, const float* b, float eps, float* z);

// NR, the outputs a packed panel holds on this build (Wp's last dimension).
int64_t panel_width();

}  // namespace hummuss_few_rows
