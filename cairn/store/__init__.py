"""The store: SQLAlchemy 2 schema, async sessions, repositories and Alembic migrations.

SQLite at `.cairn/cairn.db` by default, any SQLAlchemy async URL by setting. Only activities,
the API and the CLI import this package; workflow code never does.
"""
