"""How hard a new password is to guess, judged on the device before anything is sent (the relay
never sees the password, so it cannot judge it).

zxcvbn (Dropbox's estimator, the Python port) counts the guesses a password needs against what
attackers try first: common passwords, words and names in several languages, keyboard walks,
dates, repeats, l33t substitutions, and the e-mail address itself. A score of 3 ("safely
unguessable" against an offline attack on a slow hash, about 10^8 guesses) is required; with the
Argon2id derivation each guess costs an attacker about half a second of one core and 64 MiB.
"""

from __future__ import annotations

import re

from zxcvbn import zxcvbn

from p2psync.errors import InvalidValue

MIN_SCORE = 3
MAX_JUDGED = 72  # zxcvbn's own limit (it slows with length); a longer password is judged by its start
FALLBACK = "Add another word or two. Uncommon words are better."


def check_new_password(password: str, email: str = "") -> str:
    """password, or InvalidValue in one sentence with the estimator's reason and advice."""
    if not password:
        raise InvalidValue("The password is empty; choose one of several uncommon words.")
    address = email.strip().lower()
    hints = [address, *re.split(r"[@.+_-]+", address), "p2psync"] if address else ["p2psync"]
    result = zxcvbn(password[:MAX_JUDGED], user_inputs=[h for h in hints if h])
    if result["score"] >= MIN_SCORE:
        return password
    feedback = result["feedback"]
    parts = [feedback.get("warning") or "", *(feedback.get("suggestions") or [FALLBACK])]
    reasons = "; ".join(_clause(p) for p in parts if p.strip())
    raise InvalidValue(f"This password is too easy to guess: {reasons}.")


def _clause(text: str) -> str:
    """A sentence of zxcvbn's as a clause: no full stop, lower-case start (unless an acronym)."""
    pieces = text.strip().rstrip(".").split(". ")
    return ", ".join(p[:1].lower() + p[1:] if p[1:2].islower() else p for p in pieces)
