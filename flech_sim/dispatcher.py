"""Dispatcher: routes checked messages by product ID, and replies back to the endpoint.

Targets are anything with ``handle(msg) -> str`` (the acknowledged ID):
product implementations, and platform services such as the meter-data
service, which is addressed under its own ID like a product.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from .messages import Bid, Message, Rejected, RejectReason


class Handler(Protocol):
    def handle(self, msg: Message) -> str: ...


class Dispatcher:
    def __init__(self, send: Callable[[Message], None]) -> None:
        self._targets: dict[str, Handler] = {}
        self._bid_handlers: dict[str, Callable[[Bid], str]] = {}
        """Product ID -> the target's ``accept_bid``, where it has one: what its ``handle`` does with a
        :class:`Bid` (the message sent most), without the type tests in front of it."""
        self._send = send

    def register(self, product_id: str, target: Handler) -> None:
        if product_id in self._targets:
            raise ValueError(f"product ID {product_id!r} is already registered")
        self._targets[product_id] = target
        accept_bid = getattr(target, "accept_bid", None)
        if accept_bid is not None:
            self._bid_handlers[product_id] = accept_bid

    @property
    def targets(self) -> Mapping[str, Handler]:
        return self._targets

    def route(self, msg: Message) -> str:
        if type(msg) is Bid:  # a product's own bid type (a subclass) goes through its handle
            accept_bid = self._bid_handlers.get(msg.product_id)
            if accept_bid is not None:
                return accept_bid(msg)
        target = self._targets.get(msg.product_id)
        if target is None:
            raise Rejected(
                RejectReason.UNKNOWN_PRODUCT,
                f"no product {msg.product_id!r} on this platform (known: {sorted(self._targets)})",
            )
        return target.handle(msg)

    def reply(self, msg: Message) -> None:
        """Route a response or notification back through the endpoint."""
        self._send(msg)
