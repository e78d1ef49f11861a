"""Product registry: product ID -> product implementation class.

The seed makes a new product known "by defining the product ID and the
product implementation in the FLECH configuration". Here that
configuration is the scenario's ``products`` mapping, and an implementation
is found in one of three ways, so the core is never edited to add one:

* ``builtin``: a class in :mod:`flech_sim.products` that registered itself
  with :func:`register_product`;
* ``entry_point``: an installed package exposing it in the entry-point
  group ``flech_sim.products`` under the product ID;
* ``"package.module:Class"``: a dotted path.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .products.base import Product

ENTRY_POINT_GROUP = "flech_sim.products"
_BUILTIN: dict[str, type[Product]] = {}

P = TypeVar("P", bound="type[Product]")


def register_product(product_id: str):  # type: ignore[no-untyped-def]
    """Class decorator used by built-in products to register under their ID."""

    def deco(cls: P) -> P:
        _BUILTIN[product_id] = cls
        return cls

    return deco


def builtin_products() -> dict[str, type[Product]]:
    importlib.import_module("flech_sim.products")  # importing the package registers the built-ins
    return dict(_BUILTIN)


def resolve_product(product_id: str, impl: str = "builtin") -> type[Product]:
    """Find the implementation class; raise LookupError with a helpful text if there is none."""
    from .products.base import Product

    if impl == "builtin":
        found = builtin_products().get(product_id)
        if found is None:
            raise LookupError(
                f"no built-in product {product_id!r} (built-ins: {sorted(builtin_products())}); "
                "name an entry point ('entry_point') or a dotted path 'module:Class'"
            )
        return found
    if impl == "entry_point":
        eps = entry_points(group=ENTRY_POINT_GROUP, name=product_id)
        if not eps:
            raise LookupError(f"no entry point {product_id!r} in group {ENTRY_POINT_GROUP!r}")
        cls = next(iter(eps)).load()
    else:
        module_name, _, attr = impl.partition(":")
        if not module_name or not attr:
            raise LookupError(f"{impl!r} is not 'builtin', 'entry_point' or a dotted path 'module:Class'")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise LookupError(f"cannot load {impl!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Product)):
        raise LookupError(f"{impl!r} is not a subclass of flech_sim.products.base.Product")
    return cls
