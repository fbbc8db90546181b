"""The one validator of durations (procmgr/_seconds.py): its edge cases.

No sidecar needed.
"""

from __future__ import annotations

import math
import unittest

from procmgr._seconds import MAX_SECONDS, seconds


class SecondsEdgeTest(unittest.TestCase):
    def test_an_int_too_large_for_a_float_is_a_value_error(self):
        for sent in (False, True):
            with self.assertRaises(ValueError) as cm:
                seconds(10**400, "timeout", sent=sent)
            self.assertIn("timeout", str(cm.exception))
            self.assertNotIsInstance(cm.exception, OverflowError)
        with self.assertRaises(ValueError):
            seconds(-(10**400), "timeout")

    def test_negative_zero_is_zero(self):
        for v in (-0.0, 0.0, 0):
            f = seconds(v, "timeout")
            self.assertEqual(f, 0.0)
            self.assertEqual(math.copysign(1.0, f), 1.0, "%r gave %r" % (v, f))

    def test_a_huge_int_that_fits_a_float_is_over_the_limit_when_sent(self):
        self.assertEqual(seconds(10**300, "wait"), 1e300)
        with self.assertRaises(ValueError):
            seconds(10**300, "wait", sent=True)
        self.assertEqual(seconds(int(MAX_SECONDS), "wait", sent=True), MAX_SECONDS)


if __name__ == "__main__":
    unittest.main()
