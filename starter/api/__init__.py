"""The HTTP API: one router module per resource, assembled by `starter.api.app.create_app`."""
