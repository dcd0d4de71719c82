"""The fault-injection suite (``python -m ops.chaos``, ``make chaos``): the whole system under a
steady load while faults are injected one after another, and the invariants checked in its
databases after each. See ``ops.chaos.run`` for the course of a run."""
