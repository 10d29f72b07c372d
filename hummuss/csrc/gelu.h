// GELU (the exact, erf one) and its derivative on ATen's vectors, for the suite's kernels
// (mix_gate.cpp, bias_gelu.cpp): one definition, so that every kernel's GELU gives the same
// numbers.

#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <type_traits>

namespace hummuss_gelu {

using at::vec::Vectorized;

// float: erf by Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7), the approximation of
// ATen's own vectorised float erf, with ATen's inline exp (exp_u20) in place of its call into
// Sleef: no call in the loops, so nothing to spill around it. double: ATen's (Sleef's) erf.
// `erf_abs` is its polynomial: erf(a) for a >= 0 from e = exp(-a^2), which the callers compute
// (GELU's derivative needs that exponential too).
template <typename T>
inline Vectorized<T> erf_abs(const Vectorized<T>& a, const Vectorized<T>& e) {
  using V = Vectorized<T>;
  const V t = V(T(1)) / at::vec::fmadd(V(T(0.3275911)), a, V(T(1)));
  V r = at::vec::fmadd(V(T(1.061405429)), t, V(T(-1.453152027)));
  r = at::vec::fmadd(r, t, V(T(1.421413741)));
  r = at::vec::fmadd(r, t, V(T(-0.284496736)));
  r = at::vec::fmadd(r, t, V(T(0.254829592)));
  return V(T(1)) - r * t * e;
}

template <typename T>
inline Vectorized<T> erf(const Vectorized<T>& x) {
  using V = Vectorized<T>;
  if constexpr (!std::is_same_v<T, float>) {
    return x.erf();  // double: Sleef's, as ATen's
  }
  const V a = x.abs();
  const V e = erf_abs(a, (V(T(0)) - a * a).exp_u20());  // erf(|x|)
  return V::blendv(e, V(T(0)) - e, x < V(T(0)));
}

template <typename T>
inline Vectorized<T> gelu(const Vectorized<T>& x) {  // x Phi(x) = x (1 + erf(x / sqrt 2)) / 2
  return x * Vectorized<T>(T(0.5)) * (Vectorized<T>(T(1)) + erf(x * Vectorized<T>(T(M_SQRT1_2))));
}

// GELU and its derivative together: Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x) =
// exp(-x^2 / 2) / sqrt(2 pi); the float erf's exponential exp(-(x / sqrt 2)^2) is phi's, so
// one exp serves both. GELU(x) = x Phi(x), GELU'(x) = Phi(x) + x phi(x).
template <typename T>
inline void gelu_and_grad(const Vectorized<T>& x, Vectorized<T>& g, Vectorized<T>& d) {
  using V = Vectorized<T>;
  const V e = (x * x * V(T(-0.5))).exp_u20();  // double: exp
  V cdf;
  if constexpr (std::is_same_v<T, float>) {
    const V erf_a = erf_abs((x * V(T(M_SQRT1_2))).abs(), e);
    cdf = V(T(0.5)) * (V(T(1)) + V::blendv(erf_a, V(T(0)) - erf_a, x < V(T(0))));
  } else {
    cdf = V(T(0.5)) * (V(T(1)) + (x * V(T(M_SQRT1_2))).erf());
  }
  g = x * cdf;
  d = cdf + x * (V(T(M_2_SQRTPI * M_SQRT1_2 * 0.5)) * e);
}

}  // namespace hummuss_gelu
