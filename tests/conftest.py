"""Suite-wide settings.

Hypothesis's per-example deadline (200 ms by default) turns a slow minute of a shared 2-core CI
machine into a failure that says nothing about behaviour; the tests check behaviour, and bench/
measures speed, so no example has a deadline."""

import os

from hypothesis import settings

# Accounts made by tests derive their keys with tiny Argon2id parameters instead of the production
# ones (64 MiB, about 0.5 s each): relay/kdf.py. Inherited by every relay, daemon and CLI the tests
# start; tests/test_relay_accounts.py runs the production parameters without it.
os.environ["P2PSYNC_TEST_ONLY_WEAK_KDF"] = "1"

settings.register_profile("p2psync", deadline=None)
settings.load_profile("p2psync")
