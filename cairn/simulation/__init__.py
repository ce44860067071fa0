"""The simulator: one journey, one scripted contact, the real engine, on a skipping clock.

- `scenario`: the script a simulation plays, parsed and validated (`Scenario`, `load_scenario`).
- `engine`: the `Simulator` that plays it on Temporal's time-skipping test server.
- `triggers`: the events the live sweeps would emit for date and schedule triggers.
- `crowd`: many contacts through the same engine with per-arm behaviour, the experiment's
  figures as the journey report computes them (`play_crowd`).
- `population`: the model of one experiment step (`simulate_experiment`), no engine.
- `report`: what happened, as `cairn simulate --json` prints it (`SimulationReport`).
- `errors`: `ScenarioError` (a scenario that cannot be used) and `SimulationError` (a run that
  could not happen).

Users import these through `starter.testing`, which adds Cairn's own workers.
"""
