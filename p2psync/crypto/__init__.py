"""Device identity and, later, signing, pairing and relay encryption."""
