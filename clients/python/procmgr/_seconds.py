"""The one validator of durations (seconds) for the whole client.

Every duration the client accepts -- timeout, stop_timeout, a ready timeout,
restart window and backoff, read_output's wait -- goes through ``seconds``:
absent (None) means the default, 0 means zero, and NaN, infinities, negative
numbers, bools and non-numbers raise ValueError before anything is sent.
"""

from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ["seconds", "MAX_SECONDS"]

#: The longest duration the protocol accepts (seconds).
MAX_SECONDS = 86400.0


def seconds(value: Any, what: str, maximum: Optional[float] = None) -> float:
    """``value`` as a float number of seconds, or ValueError naming ``what``.

    ``maximum``: the largest value accepted (the protocol's MAX_SECONDS for a
    duration that is sent; None for a wait the client times itself).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("%s must be a number of seconds, not %r" % (what, value))
    f = float(value)
    if math.isnan(f) or math.isinf(f) or f < 0:
        raise ValueError(
            "%s must be a finite, non-negative number of seconds (0 means zero), not %r"
            % (what, value)
        )
    if maximum is not None and f > maximum:
        raise ValueError("%s must be at most %d seconds, not %r" % (what, maximum, value))
    return f
