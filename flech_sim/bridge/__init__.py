"""Outside participants: a second transport behind the communication endpoint (issue 15).

:class:`Bridge` carries the traffic of participants marked ``external: true`` over a wire --
:class:`~flech_sim.bridge.mqtt.MqttWire` (a Mosquitto broker) or :class:`LoopbackWire` (in-process) --
and runs the clock (real time, or as fast as they answer). Pass it as ``transport`` to
:func:`flech_sim.simulation.run`; ``flech-sim serve`` does that. The paho import is kept to
:mod:`flech_sim.bridge.mqtt`, so the in-process path does not need it.
"""

from .transport import Bridge, BridgeStats, Incoming, LoopbackWire, RateLimit, Transport, Wire

__all__ = ["Bridge", "BridgeStats", "Incoming", "LoopbackWire", "RateLimit", "Transport", "Wire"]
