"""Privacy in the core: the payload codec, the keys behind it, and erasure.

`keys` holds the key hierarchy (master keys from settings wrap per-contact data keys kept in the
store), `codec` the Temporal payload codec that encrypts every payload under them, `erasure`
what `DELETE /v1/contacts/{id}` does: store data, data key and runs, with an audit record, and
`scrub` what takes personal values out of error text before it reaches a history or a log.
"""
