"""flech_sim: a discrete-event simulator of the FLECH flexibility clearinghouse."""

__version__ = "0.1.0"
