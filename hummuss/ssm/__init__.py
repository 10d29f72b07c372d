"""DSSM, the diagonal state-space layer of HumMUSS (in the manner of S4D), and its fast routes.

    dssm.py        the model: eigenvalue init schemes, zero- or first-order-hold discretisation, the
                   kernel as a Vandermonde product, forward (convolution), step (recurrence),
                   scan (one step size per frame); the math is in its docstring
    conv.py        convolution: the kernel's factored Vandermonde product, Toeplitz and FFT
                   operators and the choice between them (`conv_method`)
    fft_conv.py    the FFT convolution: sizes (`fft_size`), spectra, channel groups, and
                   `FFTConv` for training (its backward products in hummuss/csrc/spectral.cpp)
    recurrence.py  read-out, blocked scans, streaming state updates (complex in place, or
                   planar real states for torch.compile)
    state_kernel.py  the planar streaming update in place, in the compiled CPU kernel
                   (hummuss/csrc/state_step.cpp)
    stagger.py     the staggered streaming update: a T-th of the channels advanced by T
                   frames each frame (hummuss/csrc/state_stagger.cpp)
    cache.py       `ParamCache` (values derived from parameters, kept without autograd until
                   a parameter changes) and `cexp` (complex exp through real ops)

The names below are the package's public surface; module constants (TOEPLITZ_MAX_LENGTH,
CACHE_MAX_BYTES, ...) are read from their own files, so patch them there.
"""

from hummuss.ssm import stagger, state_kernel
from hummuss.ssm.cache import ParamCache, cexp
from hummuss.ssm.conv import (
    ConvOperator,
    apply_conv,
    apply_taps,
    conv_method,
    conv_operator,
    conv_taps,
    operator_bytes,
    toeplitz,
)
from hummuss.ssm.dssm import (
    DISCRETIZATIONS,
    DSSM,
    INIT_SCHEMES,
    foh,
    init_eigenvalues,
    legs_frequencies,
    phi12,
    zoh,
)
from hummuss.ssm.fft_conv import fft_size
from hummuss.ssm.recurrence import advance_state_, advance_state_planar, complex_state, planar_state

__all__ = [
    "DISCRETIZATIONS", "DSSM", "INIT_SCHEMES", "ConvOperator", "ParamCache", "advance_state_", "advance_state_planar",
    "apply_conv", "apply_taps", "cexp", "complex_state", "conv_method", "conv_operator", "conv_taps", "fft_size", "foh", "init_eigenvalues",
    "legs_frequencies", "operator_bytes", "phi12", "planar_state", "stagger", "state_kernel", "toeplitz", "zoh",
]
