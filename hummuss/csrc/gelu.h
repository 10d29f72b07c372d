// GELU (the exact, erf one) and its derivative on ATen's vectors, for the suite's kernels
// (mix_gate.cpp, bias_gelu.cpp): one definition, so that every kernel's GELU gives the same
// numbers.

#pragma once

#include <ATen/cpu/vec/vec.h>

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

#include <cmath>
#include <type_traits>

namespace hummuss_gelu {

using at::vec::Vectorized;

// float: erf(x) = x P(x^2) / Q(x^2) on x clamped to [-4, 4] (where erf is 1 to within float
// rounding), P of degree 6 and Q of degree 4 in x^2, the published coefficients of XLA's and
// Eigen's fast float erf: no exponential and one reciprocal, which with AVX-512 is its 14-bit
// estimate and one Newton step (the division it replaces issues once every several cycles).
// GELU's largest error over [-8, 8] against double precision's is 1.16e-6, ATen's own 1.16e-6
// (rounding near x = 8). On a 2-core Xeon (family 6 model 167) it ran 1.8x as fast as the
// Abramowitz and Stegun 7.1.26 form with an exponential and a division used before (3.80
// against 2.13 G evaluations a second on one core, in L1), and an offline pass of
// paper-bidirectional at F = 243 took 500-503 against 540-553 ms (3 processes of each,
// alternated). double: ATen's (Sleef's) erf.
template <typename T>
inline Vectorized<T> erf(const Vectorized<T>& x0) {
  using V = Vectorized<T>;
  if constexpr (!std::is_same_v<T, float>) {
    return x0.erf();  // double: Sleef's, as ATen's
  } else {
    const V x = at::vec::clamp(x0, V(-4.f), V(4.f));
    const V x2 = x * x;
    V p = at::vec::fmadd(x2, V(-2.72614225801306e-10f), V(2.77068142495902e-08f));
    p = at::vec::fmadd(p, x2, V(-2.10102402082508e-06f));
    p = at::vec::fmadd(p, x2, V(-5.69250639462346e-05f));
    p = at::vec::fmadd(p, x2, V(-7.34990630326855e-04f));
    p = at::vec::fmadd(p, x2, V(-2.95459980854025e-03f));
    p = at::vec::fmadd(p, x2, V(-1.60960333262415e-02f));
    V q = at::vec::fmadd(x2, V(-1.45660718464996e-05f), V(-2.13374055278905e-04f));
    q = at::vec::fmadd(q, x2, V(-1.68282697438203e-03f));
    q = at::vec::fmadd(q, x2, V(-7.37332916720468e-03f));
    q = at::vec::fmadd(q, x2, V(-1.42647390514189e-02f));
#if defined(CPU_CAPABILITY_AVX512)
    V r(_mm512_rcp14_ps(q));
    r = r * (V(2.f) - q * r);  // one Newton step: 1/q to within float rounding
    return p * x * r;
#else
    return p * x / q;
#endif
  }
}

template <typename T>
inline Vectorized<T> gelu(const Vectorized<T>& x) {  // x Phi(x) = x (1 + erf(x / sqrt 2)) / 2
  return x * Vectorized<T>(T(0.5)) * (Vectorized<T>(T(1)) + erf(x * Vectorized<T>(T(M_SQRT1_2))));
}

// GELU and its derivative together: Phi(x) = (1 + erf(x / sqrt 2)) / 2 (the same erf as
// `gelu`, so the backward's GELU values are the forward's) and phi(x) = exp(-x^2 / 2) /
// sqrt(2 pi). GELU(x) = x Phi(x), GELU'(x) = Phi(x) + x phi(x).
template <typename T>
inline void gelu_and_grad(const Vectorized<T>& x, Vectorized<T>& g, Vectorized<T>& d) {
  using V = Vectorized<T>;
  const V e = (x * x * V(T(-0.5))).exp_u20();  // double: exp
  const V cdf = V(T(0.5)) * (V(T(1)) + erf(x * V(T(M_SQRT1_2))));
  g = x * cdf;
  d = cdf + x * (V(T(M_2_SQRTPI * M_SQRT1_2 * 0.5)) * e);
}

}  // namespace hummuss_gelu
