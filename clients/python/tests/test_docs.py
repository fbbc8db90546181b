"""Module docs that state facts about the code stay true to it.

No sidecar: the modules' source and behaviour are compared with what their
docstrings claim.
"""

from __future__ import annotations

import ast
import inspect
import re
import unittest

from procmgr import ProcMgrError, _params, _registry


class RegistryDocTest(unittest.TestCase):
    def test_every_process_attribute_it_lists_is_used(self):
        doc = _registry.__doc__ or ""
        m = re.search(r"only needs a Process's(.*?)\.\n", doc, re.S)
        self.assertIsNotNone(m, "the registry's doc no longer lists what it needs")
        listed = set(re.findall(r"``(\w+)``", m.group(1)))
        tree = ast.parse(inspect.getsource(_registry))
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        self.assertEqual(sorted(listed - used), [])


class ParamsDocTest(unittest.TestCase):
    def test_it_names_every_error_it_raises(self):
        with self.assertRaises(ProcMgrError):
            _params.require(frozenset(), "stdin", "a stdin pipe")
        self.assertIn("ProcMgrError", _params.__doc__ or "")

    def test_it_does_not_claim_to_be_pure(self):
        # host_environ caches the host's environment on the sidecar object.
        self.assertIn("env_cache", inspect.getsource(_params.host_environ))
        self.assertNotRegex(_params.__doc__ or "", r"\bPure\b")


if __name__ == "__main__":
    unittest.main()
