"""Runs the Python client's unittest suite like `python3 -m unittest discover
-v` and writes "passed failed" to the file named by argv[1]: failures,
errors and unexpected successes count as failed; skips and expected
failures as neither. Standard library only."""
import os
import sys
import unittest

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python")
suite = unittest.defaultTestLoader.discover(os.path.join(root, "tests"), top_level_dir=root)
result = unittest.TextTestRunner(verbosity=2).run(suite)
bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
good = result.testsRun - bad - len(result.skipped) - len(result.expectedFailures)
with open(sys.argv[1], "w") as f:
    f.write("%d %d\n" % (good, bad))
