"""The operator console at `/console`: journeys, a journey's graph and figures, contacts, tasks
and the outbox, as server-rendered pages over the same service functions as the API.

`pages` holds the routes and `install_console` (called by `starter.api.app.create_app`),
`session` the login cookie and CSRF tokens, `views` presentation helpers, `screenshots` the
script that takes docs/console/*.png. Templates and assets ship in the package (no CDN).
"""
