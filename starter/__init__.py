"""The outside world's way in: HTTP API, event router, Python client, CLI and the main job."""
