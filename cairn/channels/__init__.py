"""Channel providers: one small class per provider behind the interfaces of `cairn.channels.base`.

Providers do the network call and classify what went wrong; they never touch the store. The
delivery activities own the ledger, so exactly-once lives in one place for every provider.
"""
