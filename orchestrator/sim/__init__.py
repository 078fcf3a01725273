"""Simulation on a virtual clock (DESIGN.md §6 ``sim/``).

- ``runner.py``: ``simulate(counts_per_second, controller, setup) -> SimResult``: a controller's pure
  step every Δ over a trace, its actions applied through ``SimCloud``; ``SimSetup`` says what is
  simulated (model, SLO, instance types, batching, Lambda, spot, prices, seed);
- ``engine.py``: the serving model, per request and event-driven: the front door's dispatch
  (``policy/dispatch.decide``), workers batching by ``ec2_worker/discipline.batch_due`` with
  lognormal T(b), Lambda with cold starts, idle TTL, concurrency and prewarm;
- ``cloud.py``: ``SimCloud``, the in-memory ``Cloud`` (boot lag, billing through the one ledger,
  capacity errors, spot notices and reclaim); also the tests' fake cloud;
- ``results.py``: what a run returns (``SimResult``, ``MinuteSeries``);
- ``batch_queue.py``: the exact one-worker simulation that the batching policy's analytic capacity
  is checked against.
"""
