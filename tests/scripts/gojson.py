"""Reads `go test -json` on stdin and prints what plain `go test` would: a
line per package, and the output of every test that failed. Counts the
top-level tests that passed and failed (a failed subtest fails its parent;
skipped tests count as neither). A package that failed with no failing test
(a build error, a failure in TestMain such as the leak sweep, a panic, a
timeout) counts as one failed. Writes "passed failed" to the file named by
argv[1]. Standard library only."""
import json
import sys

passed = failed = 0
output = {}  # (package, test) -> [lines]
failed_tests = {}  # package -> count of failed tests
pkg_lines = {}  # package -> its own output (build errors, TestMain)

for raw in sys.stdin:
    try:
        ev = json.loads(raw)
    except ValueError:
        sys.stdout.write(raw)  # not JSON: go itself speaking (e.g. a build error)
        continue
    action = ev.get("Action")
    pkg = ev.get("Package") or ev.get("ImportPath") or ""
    test = ev.get("Test")
    if action in ("output", "build-output"):
        if test:
            output.setdefault((pkg, test), []).append(ev.get("Output", ""))
        else:
            out = ev.get("Output", "")
            pkg_lines.setdefault(pkg, []).append(out)
            if out.startswith(("ok ", "ok\t", "FAIL\t", "?")):
                sys.stdout.write(out)
                sys.stdout.flush()
        continue
    if test and action in ("pass", "fail"):
        top = "/" not in test
        if action == "fail":
            sys.stdout.write("".join(output.get((pkg, test), [])))
            if top:
                failed += 1
                failed_tests[pkg] = failed_tests.get(pkg, 0) + 1
        elif top:
            passed += 1
        output.pop((pkg, test), None)
        continue
    if not test and action == "fail" and not failed_tests.get(pkg) and not ev.get("FailedBuild"):
        # The package failed, yet none of its tests did: say why.
        failed += 1
        sys.stdout.write("".join(l for l in pkg_lines.get(pkg, []) if not l.startswith("FAIL\t")))
        sys.stdout.write("FAIL\t%s (no test failed: see above)\n" % pkg)
    if action == "build-fail":
        failed += 1
        sys.stdout.write("".join(pkg_lines.get(pkg, [])))

with open(sys.argv[1], "w") as f:
    f.write("%d %d\n" % (passed, failed))
