"""The relay ("online account"): a store of ciphertext that carries a library between devices (protocol/relay.md)."""
