"""Built-in product implementations; importing this package registers them by product ID."""

from . import srp  # noqa: F401  (registers SRP)
