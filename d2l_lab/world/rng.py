"""How every generator in the world accepts its randomness.

A generator takes either an integer seed or a caller's ``random.Random``.
A seed gives a fresh, reproducible stream for one document; a shared
``Random`` lets a caller draw many different documents from one seeded stream
(as ``make_fact_documents`` and the corpus do) while staying deterministic.
"""

from __future__ import annotations

import random

RandomSource = random.Random | int


def as_rng(source: RandomSource) -> random.Random:
    """Return ``source`` itself if it is a ``Random``, else a new one seeded with it."""
    if isinstance(source, random.Random):
        return source
    return random.Random(source)
