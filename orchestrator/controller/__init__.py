"""The proactive controller (DESIGN.md §3 "Controller"): one pure step, ``step(state, observation,
context) -> Tick``, driven by the simulator on a virtual clock and by the live loop (``loop``,
observing through ``observe``).

``actions`` (what a step asks the cloud to do, as data), ``state`` (what a step carries to the next,
what it observes, the ``Tick`` it records), ``step`` and ``reconcile`` (pure), ``policies`` (the named
configurations compared in ``mark simulate``); ``observe`` and ``loop`` (live: all of the I/O).
"""
