// A GDSSM block's read-out mix and gate aggregation, forward and backward, in one pass
// over the convolutions' outputs: the CPU kernel behind hummuss.fusion.MixGate.
//
//     g_ic   = GELU(y_ic)                              (i < n directions, c < k read-outs)
//     path_i = b_i + sum_c w_ic g_ic
//     out    = x_id prod_i path_i
//
// y (H, P, n k, M), w (H, n, k), b (H, n), x_id (H, P, M), M = L Q contiguous; float or
// double. The backward recomputes g and the paths from y (nothing but the inputs is saved)
// and gives, with q = go x_id and gp_i = q prod_{j != i} path_j:
//
//     grad y_ic = gp_i w_ic GELU'(y_ic)      grad w_ic = sum gp_i g_ic
//     grad b_i  = sum gp_i                   grad x_id = go prod_i path_i
//
// Eager PyTorch runs this as about 5 n k passes over tensors of y's size (GELU, products,
// sums, GELU's backward), each one reading and writing memory; here every element of y is
// read once per direction of the computation and stays in registers between the steps.
// GELU is the exact (erf) one, written as ATen's own vectorised kernel writes it.
//
// Channels h run in parallel (ATen's thread pool); the sums for grad w and grad b are
// per channel, in vector lanes for one row of M and in double across rows.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "blocks.h"
#include "few_rows.h"
#include "gelu.h"

#include <cmath>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

using at::vec::Vectorized;
using hummuss_gelu::gelu;
using hummuss_gelu::gelu_and_grad;

constexpr int64_t kMaxPaths = 16;  // n k read-outs held in registers at once
constexpr int64_t kJointChunk = 128;  // channels of a chunk in `joint_conv_mix_gate`

struct Shape {
  int64_t H, P, n, k, M;
  int64_t row;  // elements from one row of y (h, p, r) to the next: M, or more for a view (evaluation)
};

// The spacing of a (H, P, n k, M) tensor's rows of M, from its first dimension above M that has
// more than one entry; and whether its rows are contiguous and evenly spaced by it.
int64_t row_spacing(const at::Tensor& y) {
  return y.size(2) > 1 ? y.stride(2) : y.size(1) > 1 ? y.stride(1) : y.size(0) > 1 ? y.stride(0) : y.size(3);
}

bool evenly_spaced_rows(const at::Tensor& y, int64_t row) {
  return (y.size(3) == 1 || y.stride(3) == 1) && row >= y.size(3) && (y.size(1) == 1 || y.stride(1) == y.size(2) * row) &&
         (y.size(0) == 1 || y.stride(0) == y.size(1) * y.size(2) * row) && (y.size(2) == 1 || y.stride(2) == row);
}

Shape check(const at::Tensor& y, const at::Tensor& w, const at::Tensor& b, const at::Tensor& x_id) {
  TORCH_CHECK(y.dim() == 4 && w.dim() == 3 && b.dim() == 2 && x_id.dim() == 3,
              "mix_gate: y (H, P, n k, M), w (H, n, k), b (H, n), x_id (H, P, M)");
  const int64_t row = row_spacing(y);
  Shape s{y.size(0), y.size(1), w.size(1), w.size(2), y.size(3), row};
  TORCH_CHECK(y.size(2) == s.n * s.k && w.size(0) == s.H && b.size(0) == s.H && b.size(1) == s.n,
              "mix_gate: y's read-outs, w and b disagree");
  TORCH_CHECK(x_id.size(0) == s.H && x_id.size(1) == s.P && x_id.size(2) == s.M, "mix_gate: x_id's shape");
  TORCH_CHECK(s.n * s.k <= kMaxPaths, "mix_gate: at most ", kMaxPaths, " read-outs");
  for (const auto* t : {&y, &w, &b, &x_id}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == y.scalar_type(), "mix_gate: CPU tensors of one floating dtype");
    TORCH_CHECK(t == &y || t->is_contiguous(), "mix_gate: w, b and x_id contiguous");
  }
  // y: rows of M contiguous elements, evenly spaced (a view of the first M of longer rows)
  TORCH_CHECK(evenly_spaced_rows(y, s.row), "mix_gate: y's rows must be contiguous and evenly spaced");
  return s;
}

// Rows (h, p) go in blocks of about kBlock elements of y (all of a block's read-outs, one
// contiguous range): first GELU (and in the backward GELU') over the whole range into
// buffers that stay in cache, in one plain vector loop; then the mix, the gate and their
// gradients from the buffers. Keeping the transcendental functions in a loop of their own
// keeps the vector registers free across their calls into Sleef, whose calling convention
// saves none; and the spatial blocks' short rows (M = 17) cost one tail per block, not per row.
constexpr int64_t kBlock = 2048;

inline int64_t rows_per_block(const Shape& s) {  // rows (h, p) of a block: kBlock numbers of y, at least one row
  return std::max<int64_t>(1, kBlock / (s.n * s.k * s.M));
}

template <typename T, typename F>
inline void map_range(const T* in, int64_t len, T* out, const F& f) {  // out[:len] = f(in[:len]), padded
  using V = Vectorized<T>;
  for (int64_t j = 0; j < len; j += V::size()) {
    f(V::loadu(in + j, std::min<int64_t>(V::size(), len - j)), out + j);
  }
}

// N, K > 0: the directions and read-outs known when compiling (the presets' (2, 2), (2, 1),
// (1, 2), (1, 1)), so that the loops over them unroll and their vectors stay in registers;
// 0: read from the shape.
template <typename T, int N, int K>
void forward_kernel(const Shape& s, const T* y, const T* w, const T* b, const T* x, T* out, bool gelu_x, T* y_copy) {
  using V = Vectorized<T>;
  const int64_t n = N ? N : s.n, k = K ? K : s.k;
  const int64_t R = n * k, M = s.M, G = rows_per_block(s);
  at::parallel_for(0, s.H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<T> gbuf(G * R * M + V::size());
    for (int64_t h = h0; h < h1; ++h) {
      for (int64_t p0 = 0; p0 < s.P; p0 += G) {
        const int64_t rows = std::min(G, s.P - p0), row0 = h * s.P + p0;
        const auto to_gelu = [](const V& v, T* o) { gelu(v).store(o); };
        if (s.row == M) {
          map_range(y + row0 * R * M, rows * R * M, gbuf.data(), to_gelu);
          if (y_copy != nullptr) std::memcpy(y_copy + row0 * R * M, y + row0 * R * M, rows * R * M * sizeof(T));
        } else {  // a view: row by row into the packed buffer (and the copy), each row read once from memory
          for (int64_t j = 0; j < rows * R; ++j) {
            map_range(y + (row0 * R + j) * s.row, M, gbuf.data() + j * M, to_gelu);
            if (y_copy != nullptr) std::memcpy(y_copy + (row0 * R + j) * M, y + (row0 * R + j) * s.row, M * sizeof(T));
          }
        }
        for (int64_t rr = 0; rr < rows; ++rr) {
          const T* g = gbuf.data() + rr * R * M;
          const int64_t row = row0 + rr;
          for (int64_t m = 0; m < M; m += V::size()) {
            const int64_t count = std::min<int64_t>(V::size(), M - m);
            V prod = V::loadu(x + row * M + m, count);
            if (gelu_x) prod = gelu(prod);
            for (int64_t i = 0; i < n; ++i) {
              V path(b[h * n + i]);
              for (int64_t c = 0; c < k; ++c) {
                const int64_t r = i * k + c;
                path = at::vec::fmadd(V::loadu(g + r * M + m, count), V(w[h * R + r]), path);
              }
              prod = prod * path;
            }
            prod.store(out + row * M + m, count);
          }
        }
      }
    }
  });
}

template <typename T, int N, int K>
void backward_kernel(const Shape& s, const T* go, const T* y, const T* w, const T* b, const T* x,
                     T* gy, int64_t gy_row, T* gw, T* gb, T* gx) {
  using V = Vectorized<T>;
  const int64_t n = N ? N : s.n, k = K ? K : s.k;
  const int64_t R = n * k, M = s.M, G = rows_per_block(s);
  at::parallel_for(0, s.H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<T> gbuf(G * R * M + V::size()), dbuf(G * R * M + V::size());
    for (int64_t h = h0; h < h1; ++h) {
      double sum_w[kMaxPaths] = {0}, sum_b[kMaxPaths] = {0};
      for (int64_t p0 = 0; p0 < s.P; p0 += G) {
        const int64_t rows = std::min(G, s.P - p0), row0 = h * s.P + p0;
        T* gb_ = gbuf.data();
        T* db_ = dbuf.data();
        map_range(y + row0 * R * M, rows * R * M, gb_, [&](const V& v, T* o) {
          V g, d;
          gelu_and_grad(v, g, d);
          g.store(o);
          d.store(db_ + (o - gb_));
        });
        V lane_w[kMaxPaths], lane_b[kMaxPaths];
        for (int64_t r = 0; r < R; ++r) lane_w[r] = V(T(0));
        for (int64_t i = 0; i < n; ++i) lane_b[i] = V(T(0));
        for (int64_t rr = 0; rr < rows; ++rr) {
          const int64_t row = row0 + rr;
          const T* g = gb_ + rr * R * M;
          const T* d = db_ + rr * R * M;
          T* gyr = gy + row * R * gy_row;
          for (int64_t m = 0; m < M; m += V::size()) {
            const int64_t count = std::min<int64_t>(V::size(), M - m);  // the rest loads as zeros
            const V g_out = V::loadu(go + row * M + m, count);
            V path[kMaxPaths];
            for (int64_t i = 0; i < n; ++i) {
              path[i] = V(b[h * n + i]);
              for (int64_t c = 0; c < k; ++c) {
                const int64_t r = i * k + c;
                path[i] = at::vec::fmadd(V::loadu(g + r * M + m, count), V(w[h * R + r]), path[i]);
              }
            }
            const V q = g_out * V::loadu(x + row * M + m, count);
            if (gx != nullptr) {
              V all = g_out;
              for (int64_t i = 0; i < n; ++i) all = all * path[i];
              all.store(gx + row * M + m, count);
            }
            for (int64_t i = 0; i < n; ++i) {
              V gp = q;
              for (int64_t j = 0; j < n; ++j) {
                if (j != i) gp = gp * path[j];
              }
              lane_b[i] = lane_b[i] + gp;
              for (int64_t c = 0; c < k; ++c) {
                const int64_t r = i * k + c;
                lane_w[r] = at::vec::fmadd(gp, V::loadu(g + r * M + m, count), lane_w[r]);
                (gp * V(w[h * R + r]) * V::loadu(d + r * M + m, count)).store(gyr + r * gy_row + m, count);
              }
            }
          }
        }
        T buf[V::size()];
        for (int64_t r = 0; r < R; ++r) {
          lane_w[r].store(buf);
          for (int64_t l = 0; l < V::size(); ++l) sum_w[r] += buf[l];
        }
        for (int64_t i = 0; i < n; ++i) {
          lane_b[i].store(buf);
          for (int64_t l = 0; l < V::size(); ++l) sum_b[i] += buf[l];
        }
      }
      for (int64_t r = 0; r < R; ++r) gw[h * R + r] = T(sum_w[r]);
      for (int64_t i = 0; i < n; ++i) gb[h * n + i] = T(sum_b[i]);
    }
  });
}

template <typename F>
void with_paths(const Shape& s, const F& f) {  // f(std::integral_constant N, K) for (s.n, s.k)
  using std::integral_constant;
  if (s.n == 2 && s.k == 2) return f(integral_constant<int, 2>(), integral_constant<int, 2>());
  if (s.n == 2 && s.k == 1) return f(integral_constant<int, 2>(), integral_constant<int, 1>());
  if (s.n == 1 && s.k == 2) return f(integral_constant<int, 1>(), integral_constant<int, 2>());
  if (s.n == 1 && s.k == 1) return f(integral_constant<int, 1>(), integral_constant<int, 1>());
  f(integral_constant<int, 0>(), integral_constant<int, 0>());
}

// out = x prod_i path_i, x = GELU(x_id) if gelu_x else x_id; out contiguous, of x_id's shape.
// y_copy, if given: receives y, contiguous (y may be a view of longer rows: the first L of an
// inverse FFT's n outputs, copied while they are read, not in a pass of their own).
void mix_gate_into(const at::Tensor& y, const at::Tensor& w, const at::Tensor& b, const at::Tensor& x_id,
                   const at::Tensor& out, bool gelu_x, const std::optional<at::Tensor>& y_copy) {
  const Shape s = check(y, w, b, x_id);
  TORCH_CHECK(out.sizes() == x_id.sizes() && out.is_contiguous() && out.scalar_type() == y.scalar_type(),
              "mix_gate: out contiguous, of x_id's shape and dtype");
  const bool copy = y_copy.has_value() && y_copy->defined();
  TORCH_CHECK(!copy || (y_copy->sizes() == y.sizes() && y_copy->is_contiguous() && y_copy->scalar_type() == y.scalar_type()),
              "mix_gate: y_copy contiguous, of y's shape and dtype");
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "mix_gate", [&] {
    with_paths(s, [&](auto N, auto K) {
      forward_kernel<scalar_t, N, K>(s, y.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                                     x_id.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), gelu_x,
                                     copy ? y_copy->data_ptr<scalar_t>() : nullptr);
    });
  });
}

at::Tensor mix_gate(const at::Tensor& y, const at::Tensor& w, const at::Tensor& b, const at::Tensor& x_id) {
  auto out = at::empty_like(x_id, at::MemoryFormat::Contiguous);
  mix_gate_into(y, w, b, x_id, out, false, std::nullopt);
  return out;
}

// gy_out, if given: y's gradient is written there, rows of M evenly spaced (a view of the first
// M of longer rows: the zero-padded input of the FFT convolution's backward transform), and
// returned as the first output.
std::vector<at::Tensor> mix_gate_backward(const at::Tensor& go, const at::Tensor& y, const at::Tensor& w,
                                          const at::Tensor& b, const at::Tensor& x_id, bool grad_x,
                                          const std::optional<at::Tensor>& gy_out) {
  const Shape s = check(y, w, b, x_id);
  TORCH_CHECK(y.is_contiguous(), "mix_gate_backward: y contiguous");
  TORCH_CHECK(go.sizes() == x_id.sizes() && go.is_contiguous() && go.scalar_type() == y.scalar_type(),
              "mix_gate_backward: the output's gradient, contiguous, of x_id's shape");
  const bool given = gy_out.has_value() && gy_out->defined();
  auto gy = given ? *gy_out : at::empty_like(y);
  const int64_t gy_row = given ? row_spacing(gy) : s.M;
  TORCH_CHECK(!given || (gy.sizes() == y.sizes() && gy.scalar_type() == y.scalar_type() && evenly_spaced_rows(gy, gy_row)),
              "mix_gate_backward: gy_out of y's shape and dtype, rows of M evenly spaced");
  auto gw = at::empty_like(w), gb = at::empty_like(b);
  auto gx = grad_x ? at::empty_like(x_id) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "mix_gate_backward", [&] {
    with_paths(s, [&](auto N, auto K) {
      backward_kernel<scalar_t, N, K>(s, go.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                      b.data_ptr<scalar_t>(), x_id.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), gy_row,
                                      gw.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(),
                                      grad_x ? gx.data_ptr<scalar_t>() : nullptr);
    });
  });
  return grad_x ? std::vector<at::Tensor>{gy, gw, gb, gx} : std::vector<at::Tensor>{gy, gw, gb};
}

// The streaming step's spatial block between its projections, token-major (float32):
//
//     y_r[p, l, h] = sum_j Kz[idx[j, r L + l], h] u[p L + j, h]      (the joints' convolution)
//     out[p L + l, h] = x_id[p L + l, h] prod_i (b[i, h] + sum_c w[i k + c, h] GELU(y_{i k + c}[p, l, h]))
//
// both (P L, 2 H) = [x_id, u], the input projections after their GELU, as the packed
// projection writes them; Kz (R (L + 1), H) and idx (L, R L), the taps of the Toeplitz
// operator (hummuss.ssm.conv_taps: one padded kernel of L + 1 lags per read-out r, lag L a
// zero); w (R, H), b (n, H) with R = n k. Returns out (P L, H), what the output projection
// reads. Vectorised along the channels, which run in parallel in chunks: for paper-causal's joints a
// block reads 111 KB of taps where the prepared operator (H, L, R L) is 1.8 MB, and the
// transposes to channel-major and back, the convolution, the GELUs, the mix and the gate
// are one pass.
at::Tensor joint_conv_mix_gate(const at::Tensor& both, const at::Tensor& Kz, const at::Tensor& idx,
                               const at::Tensor& w, const at::Tensor& b) {
  TORCH_CHECK(both.dim() == 2 && Kz.dim() == 2 && idx.dim() == 2 && w.dim() == 2 && b.dim() == 2,
              "joint_conv_mix_gate: both (P L, 2 H), Kz (R (L + 1), H), idx (L, R L), w (R, H), b (n, H)");
  for (const auto* t : {&both, &Kz, &w, &b})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->is_contiguous(),
                "joint_conv_mix_gate: contiguous float32 CPU tensors");
  TORCH_CHECK(idx.device().is_cpu() && idx.scalar_type() == at::kLong && idx.is_contiguous(),
              "joint_conv_mix_gate: idx contiguous int64");
  const int64_t N = both.size(0), H = both.size(1) / 2, L = idx.size(0), R = L > 0 ? idx.size(1) / L : 0;
  const int64_t n = b.size(0), k = n > 0 ? R / n : 0;
  TORCH_CHECK(L > 0 && both.size(1) == 2 * H && N % L == 0 && idx.size(1) == R * L && R == n * k && R <= kMaxPaths &&
                  Kz.size(0) == R * (L + 1) && Kz.size(1) == H && w.size(0) == R && w.size(1) == H && b.size(1) == H,
              "joint_conv_mix_gate: shapes disagree");
  // each output (r, l): its taps that lie on the kernel's band, as (tap row, input joint);
  // output r L + l reads kernel r's rows [r (L + 1), r (L + 1) + L], the last a zero
  std::vector<int64_t> start(R * L + 1, 0), tap, joint;
  tap.reserve(R * L * L);
  joint.reserve(R * L * L);
  const int64_t* ix = idx.data_ptr<int64_t>();
  for (int64_t o = 0; o < R * L; ++o) {
    const int64_t first = (o / L) * (L + 1), zero = first + L;
    for (int64_t j = 0; j < L; ++j) {
      const int64_t t = ix[j * R * L + o];
      TORCH_CHECK(t >= first && t <= zero, "joint_conv_mix_gate: idx must read each output's own kernel");
      if (t != zero) {
        tap.push_back(t);
        joint.push_back(j);
      }
    }
    start[o + 1] = static_cast<int64_t>(tap.size());
  }
  at::Tensor out = at::empty({N, H}, both.options());
  const float *x = both.data_ptr<float>(), *K = Kz.data_ptr<float>(), *wp = w.data_ptr<float>(), *bp = b.data_ptr<float>();
  float* op = out.data_ptr<float>();
  using V = Vectorized<float>;
  // channels in chunks of kJointChunk: each tap and input row is read as one contiguous run
  // of the chunk (a channel vector at a time, the rows 3 KB apart, left the prefetchers idle)
  at::parallel_for(0, (H + kJointChunk - 1) / kJointChunk, 1, [&](int64_t c0, int64_t c1) {
    float acc[kJointChunk], path[kJointChunk];
    for (int64_t h0 = c0 * kJointChunk; h0 < std::min(H, c1 * kJointChunk); h0 += kJointChunk) {
      const int64_t width = std::min<int64_t>(kJointChunk, H - h0);
      auto each = [&](auto f) {  // f(offset, lanes) over the chunk's vectors
        for (int64_t v = 0; v < width; v += V::size()) f(v, std::min<int64_t>(V::size(), width - v));
      };
      for (int64_t t = 0; t < N; ++t) {  // token p L + l
        const int64_t p = t / L, l = t % L;
        const float* u = x + p * L * 2 * H + H + h0;  // u[p L + j, h0 + .] at u + j 2 H
        float* o = op + t * H + h0;
        each([&](int64_t v, int64_t lanes) { V::loadu(x + t * 2 * H + h0 + v, lanes).store(o + v, lanes); });  // x_id
        for (int64_t i = 0; i < n; ++i) {
          each([&](int64_t v, int64_t lanes) { V::loadu(bp + i * H + h0 + v, lanes).store(path + v, lanes); });
          for (int64_t c = 0; c < k; ++c) {
            const int64_t r = i * k + c, q = r * L + l;
            each([&](int64_t v, int64_t lanes) { V(0.f).store(acc + v, lanes); });
            for (int64_t e = start[q]; e < start[q + 1]; ++e) {
              const float* kt = K + tap[e] * H + h0;
              const float* uj = u + joint[e] * 2 * H;
              each([&](int64_t v, int64_t lanes) {
                at::vec::fmadd(V::loadu(kt + v, lanes), V::loadu(uj + v, lanes), V::loadu(acc + v, lanes)).store(acc + v, lanes);
              });
            }
            each([&](int64_t v, int64_t lanes) {
              at::vec::fmadd(V::loadu(wp + r * H + h0 + v, lanes), gelu(V::loadu(acc + v, lanes)), V::loadu(path + v, lanes))
                  .store(path + v, lanes);
            });
          }
          each([&](int64_t v, int64_t lanes) { (V::loadu(o + v, lanes) * V::loadu(path + v, lanes)).store(o + v, lanes); });
        }
      }
    }
  });
  return out;
}

}  // namespace

// A spatial GDSSM block's whole streaming step over one frame's joints (the gate aggregation;
// hummuss.gdssm.GDSSM.forward with `stream_constants`), in one call:
//
//     z = LayerNorm(x)                                   (N, Dm), N = P L tokens
//     both = GELU(z W_in^T + b_in)                       (N, 2H), W_in packed (few_rows_pack)
//     y = joint_conv_mix_gate(both, Kz, idx, w, b)       (N, H)
//     out = y W_out^T + b_out + x                        (N, Dm)
at::Tensor hummuss_blocks::joint_block(const at::Tensor& x, const at::Tensor& ln_w, const at::Tensor& ln_b, double eps,
                                       const at::Tensor& Wp_in, const at::Tensor& bp_in, const at::Tensor& Kz, const at::Tensor& idx,
                                       const at::Tensor& w, const at::Tensor& b, const at::Tensor& Wp_out, const at::Tensor& bp_out) {
  TORCH_CHECK(Kz.dim() == 2, "joint_block: Kz (R (L + 1), H)");
  const int64_t N = x.dim() == 2 ? x.size(0) : 0, H = Kz.size(1);
  const int64_t Dm = hummuss_few_rows::check_block(x, -1, H, ln_w, ln_b, Wp_in, bp_in, Wp_out, bp_out, "joint_block");
  at::Tensor z = at::empty({N, Dm}, x.options()), both = at::empty({N, 2 * H}, x.options());
  at::Tensor out = at::empty({N, Dm}, x.options());
  const float* xp = x.data_ptr<float>();
  hummuss_few_rows::layer_norm(xp, x.stride(0), N, Dm, ln_w.data_ptr<float>(), ln_b.data_ptr<float>(),
                               static_cast<float>(eps), z.data_ptr<float>());
  hummuss_few_rows::linear(z.data_ptr<float>(), Dm, N, Dm, Wp_in.data_ptr<float>(), bp_in.data_ptr<float>(), 2 * H, true,
                           both.data_ptr<float>(), 2 * H, nullptr, 0);
  const at::Tensor y = joint_conv_mix_gate(both, Kz, idx, w, b);
  hummuss_few_rows::linear(y.data_ptr<float>(), H, N, H, Wp_out.data_ptr<float>(), bp_out.data_ptr<float>(), Dm, false,
                           out.data_ptr<float>(), Dm, xp, x.stride(0));
  return out;
}

TORCH_LIBRARY(hummuss_cpu, m) {
  m.def("mix_gate(Tensor y, Tensor w, Tensor b, Tensor x_id) -> Tensor");
  m.def("mix_gate_into(Tensor y, Tensor w, Tensor b, Tensor x_id, Tensor(a!) out, bool gelu_x, Tensor(b!)? y_copy=None) -> ()");
  m.def("mix_gate_backward(Tensor go, Tensor y, Tensor w, Tensor b, Tensor x_id, bool grad_x, Tensor(a!)? gy_out=None) -> Tensor[]");
  m.def("joint_conv_mix_gate(Tensor both, Tensor Kz, Tensor idx, Tensor w, Tensor b) -> Tensor");
  m.def("joint_block(Tensor x, Tensor ln_w, Tensor ln_b, float eps, Tensor Wp_in, Tensor bp_in, Tensor Kz, Tensor idx, "
        "Tensor w, Tensor b, Tensor Wp_out, Tensor bp_out) -> Tensor");
}

TORCH_LIBRARY_IMPL(hummuss_cpu, CPU, m) {
  m.impl("mix_gate", &mix_gate);
  m.impl("mix_gate_into", &mix_gate_into);
  m.impl("mix_gate_backward", &mix_gate_backward);
  m.impl("joint_conv_mix_gate", &joint_conv_mix_gate);
  m.impl("joint_block", &hummuss_blocks::joint_block);
}
