"""The shape of every id this service hands out."""
from __future__ import annotations

# Every id the API hands out (uuid hex, "builtin:<name>") matches this. Anything else can
# name nothing, and is refused before it reaches a query (PostgreSQL text cannot even hold
# the NUL character that arbitrary strings may carry).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,63}$"
