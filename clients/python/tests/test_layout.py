"""The client package's modules import each other without a cycle, and its
parts never keep their manager alive (issue 13).

Every relative import counts, inside ``if TYPE_CHECKING:`` too: a module lower
down that needs an object of one higher up is handed it (see _manager.py's
docstring for the graph).
"""

from __future__ import annotations

import ast
import os
import unittest
import weakref
from typing import Dict, List, Set

import procmgr


def import_graph() -> Dict[str, Set[str]]:
    """module -> the package's modules it imports (by a relative import)."""
    pkg = os.path.dirname(procmgr.__file__)
    mods = {f[:-3] for f in os.listdir(pkg) if f.endswith(".py")}
    graph: Dict[str, Set[str]] = {}
    for mod in mods:
        with open(os.path.join(pkg, mod + ".py")) as f:
            tree = ast.parse(f.read())
        deps: Set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:  # from . import x: x is a module, or a name of __init__
                    deps.update(a.name if a.name in mods else "__init__" for a in node.names)
        graph[mod] = {d for d in deps if d in mods and d != mod}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    found: List[List[str]] = []
    state: Dict[str, int] = {}

    def visit(mod: str, path: List[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                found.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    return found


class LayoutTest(unittest.TestCase):
    def test_no_import_cycle(self):
        self.assertEqual(cycles(import_graph()), [])

    def test_only_the_package_face_imports_the_manager(self):
        users = sorted(m for m, deps in import_graph().items() if "_manager" in deps)
        self.assertEqual(users, ["__init__"])

    def test_no_part_keeps_its_manager_alive(self):
        # The session, registry and events point at each other, never at the
        # manager: one nobody references is freed at once (its __del__ lets
        # the sidecar go), without waiting for the cyclic GC.
        pm = procmgr.ProcessManager(_lazy=True)
        ref = weakref.ref(pm)
        del pm
        self.assertIsNone(ref(), "a part of the manager keeps it alive")


if __name__ == "__main__":
    unittest.main()
