"""Operating the system: the fault-injection suite (``ops.chaos``, ``make chaos``) and the
disaster-recovery drill (``ops.drill``, ``make dr-drill``). Repository tooling, not shipped."""
