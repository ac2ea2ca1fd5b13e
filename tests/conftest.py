"""Suite-wide settings.

Hypothesis's per-example deadline (200 ms by default) turns a slow minute of a shared 2-core CI
machine into a failure that says nothing about behaviour; the tests check behaviour, and bench/
measures speed, so no example has a deadline."""

from hypothesis import settings

settings.register_profile("p2psync", deadline=None)
settings.load_profile("p2psync")
