"""The simulator: one journey, one scripted contact, the real engine, on a skipping clock.

- `scenario`: the script a simulation plays, parsed and validated (`Scenario`, `load_scenario`).
- `engine`: the `Simulator` that plays it on Temporal's time-skipping test server.
- `triggers`: the events the live sweeps would emit for date and schedule triggers.
- `report`: what happened, as `cairn simulate --json` prints it (`SimulationReport`).
- `errors`: `ScenarioError` (a scenario that cannot be used) and `SimulationError` (a run that
  could not happen).

Users import these through `starter.testing`, which adds Cairn's own workers.
"""
