"""The event pipeline: a Segment-format call stored once, its hooks applied, then routed.

`calls` holds the Segment call models; `ingest` stores calls and runs the per-event hooks
(`profile_rules` for segments and scoring, `geofencing`, `attribute_changes`); `router` starts and
signals journeys; `relay` routes what was stored but never routed; `feedback` turns provider
reports into events; `imports` loads CSV files. Doors (API, CLI) and activities call these.
"""
