"""Every side effect of a journey: contacts and scores, conditions, reachability, delivery, ledger."""
