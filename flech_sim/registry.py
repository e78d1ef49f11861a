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
import importlib.machinery
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Literal, TypeVar, overload

if TYPE_CHECKING:
    from .products.base import Product

ENTRY_POINT_GROUP = "flech_sim.products"
_BUILTIN: dict[str, type[Product]] = {}

P = TypeVar("P", bound="type[Product]")


def register_product(product_id: str) -> Callable[[P], P]:
    """Class decorator used by built-in products to register under their ID."""

    def deco(cls: P) -> P:
        _BUILTIN[product_id] = cls
        return cls

    return deco


def builtin_products() -> dict[str, type[Product]]:
    importlib.import_module("flech_sim.products")  # importing the package registers the built-ins
    return dict(_BUILTIN)


DOTTED_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


@overload
def resolve_product(product_id: str, impl: str = ..., load: Literal[True] = ...) -> type[Product]: ...
@overload
def resolve_product(product_id: str, impl: str, load: bool) -> type[Product] | None: ...


def resolve_product(product_id: str, impl: str = "builtin", load: bool = True) -> type[Product] | None:
    """Find the implementation class; raise LookupError with a helpful text if there is none.

    With ``load=False`` (validation) no code the scenario names is run: an entry point is only
    looked up, and a dotted path's module is only located on the import path, not imported --
    unless it is imported already, in which case its class is checked at once. None is returned
    when the class could not be checked without importing it; ``load=True`` (a run) imports it.
    """
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
        if not load:
            return None
        try:
            cls = next(iter(eps)).load()
        except Exception as exc:  # noqa: BLE001 -- third-party code: whatever it raises is a load failure
            raise LookupError(f"cannot load entry point {product_id!r}: {type(exc).__name__}: {exc}") from None
        where = f"entry point {product_id!r}"
    else:
        if not DOTTED_PATH.match(impl):
            raise LookupError(f"{impl!r} is not 'builtin', 'entry_point' or a dotted path 'package.module:Class'")
        module_name, _, attr = impl.partition(":")
        if not load and module_name not in sys.modules:
            _locate(module_name, impl)
            return None
        try:
            module = sys.modules.get(module_name) or importlib.import_module(module_name)
            cls = getattr(module, attr)
        except AttributeError:
            raise LookupError(f"cannot load {impl!r}: module {module_name!r} has no attribute {attr!r}") from None
        except Exception as exc:  # noqa: BLE001 -- an import runs arbitrary code: any failure is reported
            raise LookupError(f"cannot load {impl!r}: {type(exc).__name__}: {exc}") from None
        where = repr(impl)
    if not (isinstance(cls, type) and issubclass(cls, Product)):
        raise LookupError(f"{where} is not a subclass of flech_sim.products.base.Product")
    if cls is Product or inspect.isabstract(cls):
        raise LookupError(f"{where} is abstract; name a concrete product class")
    return cls


def _locate(module_name: str, impl: str) -> None:
    """Find a module's file on the import path without executing it (nor its parent packages)."""
    parts = module_name.split(".")
    spec = None
    search: list[str] | None = None
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        if name in sys.modules:
            spec = getattr(sys.modules[name], "__spec__", None)
        elif i == 0:
            spec = importlib.util.find_spec(name)  # top level: locates, never executes
        else:
            spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None:
            raise LookupError(f"cannot load {impl!r}: no module named {name!r}")
        search = list(spec.submodule_search_locations or [])
        if i < len(parts) - 1 and not search:
            raise LookupError(f"cannot load {impl!r}: {name!r} is not a package")
