"""Simulated participants: buyers, aggregators (sellers) and the data provider.

Agents talk to the platform only through their :class:`~flech_sim.endpoint.Connection`;
none holds a reference to another agent.
"""
