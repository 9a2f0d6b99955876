"""Trust chain: whitelist, certificate, signed manifest."""
