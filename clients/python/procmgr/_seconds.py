"""The one validator of durations (seconds) for the whole client.

Every duration the client accepts -- timeout, stop_timeout, a ready timeout,
restart window and backoff, read_output's wait -- goes through ``seconds``:
absent (None) means the default, 0 (and -0.0) means zero, and NaN, infinities,
ints too large for a float, negative numbers, bools and non-numbers raise
ValueError before anything is sent.
A duration sent to the sidecar is also at most MAX_SECONDS (``sent=True``);
a wait the client times itself has no upper bound.
"""

from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ["seconds", "optional_seconds", "MAX_SECONDS"]

#: The longest duration the protocol accepts (seconds).
MAX_SECONDS = 86400.0


def seconds(value: Any, what: str, sent: bool = False) -> float:
    """``value`` as a float number of seconds, or ValueError naming ``what``.

    ``sent``: the value goes to the sidecar, so it is at most MAX_SECONDS
    (else it is a wait the client times itself, without upper bound).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("%s must be a number of seconds, not %r" % (what, value))
    try:
        f = float(value)
    except OverflowError:  # an int beyond any float: as invalid as an infinity
        raise ValueError(
            "%s must be a finite, non-negative number of seconds (0 means zero), not %r"
            % (what, value)
        ) from None
    if math.isnan(f) or math.isinf(f) or f < 0:
        raise ValueError(
            "%s must be a finite, non-negative number of seconds (0 means zero), not %r"
            % (what, value)
        )
    if sent and f > MAX_SECONDS:
        raise ValueError("%s must be at most %d seconds, not %r" % (what, MAX_SECONDS, value))
    if f == 0.0:
        return 0.0  # -0.0 too: zero is sent as 0, never as -0
    return f


def optional_seconds(value: Any, what: str, sent: bool = False) -> Optional[float]:
    """``seconds(value, ...)``, or None when ``value`` is None (absent: the default)."""
    return None if value is None else seconds(value, what, sent)
