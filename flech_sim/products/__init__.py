"""Built-in product implementations; importing this package registers them by product ID."""

from . import bl, cl, crp, mfrr, srp  # noqa: F401  (registers BL, CL, CRP, mFRR, SRP)
