#!/usr/bin/env python3
"""Runs one integration test file: `run.py test_x.py`.

Exit 0: every test passed. Exit 1: a test failed or errored (or none ran).
Exit 77 (ctest SKIP_RETURN_CODE): nothing failed but some test was skipped,
which only happens when a tool it needs is not installed; each skip is
printed with its reason.
"""
import faulthandler
import importlib.util
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    if len(argv) < 2:
        print("usage: run.py TEST_FILE.py [TestClass.test_name ...]", file=sys.stderr)
        return 2
    path = os.path.abspath(argv[1])
    sys.path.insert(0, HERE)
    # Dump stacks and exit if something hangs despite the bounded waits
    # (ctest's own timeout would kill us without telling where).
    faulthandler.dump_traceback_later(int(os.environ.get("UCRFS_IT_TIMEOUT", "570")), exit=True)

    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

    loader = unittest.TestLoader()
    if len(argv) > 2:
        suite = loader.loadTestsFromNames(argv[2:], module)
    else:
        suite = loader.loadTestsFromModule(module)

    print("ucrfs integration: %s (UCRFS_BIN=%s)" % (name, os.environ.get("UCRFS_BIN", "<unset>")),
          flush=True)
    t0 = time.monotonic()
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2)
    result = runner.run(suite)
    elapsed = time.monotonic() - t0

    print("=" * 70)
    for test, reason in result.skipped:
        print("SKIPPED: %s: %s" % (test.id() if hasattr(test, "id") else test, reason))
    for test, _ in result.failures:
        print("FAILED: %s" % test.id())
    for test, _ in result.errors:
        print("ERROR: %s" % (test.id() if hasattr(test, "id") else test))
    for test in result.unexpectedSuccesses:
        print("UNEXPECTED SUCCESS: %s" % test.id())
    bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    print("SUMMARY %s: ran %d, failed %d, skipped %d, in %.1fs" % (
        name, result.testsRun, bad, len(result.skipped), elapsed))
    if bad:
        return 1
    if result.skipped:
        print("exit 77: some tests were SKIPPED (see reasons above)")
        return 77
    if result.testsRun == 0:
        print("no tests ran")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
