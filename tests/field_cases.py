"""Random field-kernel cases shared by the kernel tests (CPU reference, host twin, GPU)."""

import numpy as np

from gpusim.fields import layout as L
from gpusim.fields.coefficients import derive


def random_coef(rng, dt):
    """Plausible random coefficients (positive rates, Km > 0) for a field step of length ``dt``, with
    the fitted G0, G1, SG1 that fields.coefficients derives from them."""
    coef = np.zeros(L.NCOEF)
    coef[L.R], coef[L.DT] = rng.uniform(0.05, 3.0), dt
    coef[L.LAM], coef[L.KV] = rng.uniform(0.0, 0.5), rng.uniform(0.0, 3.0)
    coef[L.KV_CS] = coef[L.KV] * rng.uniform(0.1, 2.0)
    coef[L.VT], coef[L.KMT] = rng.uniform(0.0, 5.0), rng.uniform(0.05, 1.0)
    coef[L.VC], coef[L.KMC] = rng.uniform(0.0, 5.0), rng.uniform(0.05, 1.0)
    coef[L.SEC_T], coef[L.RD] = rng.uniform(0.0, 1.0), rng.uniform(0.1, 10.0)
    return derive(coef)  # R2, B0.., G0, G1, SG1 exactly as the engine derives them
