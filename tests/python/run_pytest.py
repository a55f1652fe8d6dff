#!/usr/bin/env python3
"""run_pytest.py --venv DIR --source-root DIR [PYTEST ARGS] -- the `python` meson test.

Runs tests/python with the venv's pytest against the bloopcl package installed in that venv
(tools/quickstart.sh makes build/venv and runs `pip install .` into it; BLOOPCL_VENV overrides
--venv). Fails (exit 1), never skips, when the venv is missing, when bloopcl does not import
from the venv's site-packages, or when it was built from other sources than --source-root
(its _build_info fingerprint against src/python/fingerprint.py over this tree): then
`DIR/bin/pip install .` (or the quickstart) refreshes it. pytest runs in tests/python (which
holds no package: nothing of the source tree shadows the installed one), without writing
bytecode or a cache there.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def fail(message):
    print("run_pytest: FAIL: " + message, flush=True)
    return 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", required=True)
    parser.add_argument("--source-root", required=True)
    args, pytest_args = parser.parse_known_args()
    venv = os.path.abspath(os.environ.get("BLOOPCL_VENV") or args.venv)
    root = os.path.abspath(args.source_root)
    python = os.path.join(venv, "bin", "python")
    refresh = "run `bash tools/quickstart.sh`, or `%s -m pip install %s`" % (python, root)
    if not os.access(python, os.X_OK):
        return fail("no venv at %s: run `bash tools/quickstart.sh`, or `/usr/bin/python3 -m venv "
                    "%s && %s/bin/pip install -r %s/tools/python/requirements.txt %s`"
                    % (venv, venv, venv, root, root))

    sys.path.insert(0, os.path.join(root, "src", "python"))
    from fingerprint import fingerprint  # noqa: E402 (src/python/fingerprint.py)

    with tempfile.TemporaryDirectory(prefix="bloopcl-pytest-") as work:
        probe = subprocess.run(
            [python, "-c", "import json, bloopcl; print(json.dumps({'file': bloopcl.__file__, "
             "'fingerprint': bloopcl._FINGERPRINT, 'version': bloopcl.__version__}))"],
            cwd=work, capture_output=True, text=True)
        if probe.returncode != 0:
            return fail("bloopcl does not import in %s:\n%s\n%s" % (venv, probe.stderr.strip(),
                                                                     refresh))
        info = json.loads(probe.stdout.strip().splitlines()[-1])
        if not os.path.realpath(info["file"]).startswith(os.path.realpath(venv) + os.sep):
            return fail("bloopcl imports from %s, not from the venv %s" % (info["file"], venv))
        expected = fingerprint(root)
        if info["fingerprint"] != expected:
            return fail("the bloopcl installed in %s (%s) was built from other sources than %s "
                        "(fingerprint %s..., this tree %s...): %s" % (
                            venv, info["file"], root, info["fingerprint"][:12],
                            expected[:12], refresh))
        print("run_pytest: bloopcl %s from %s" % (info["version"], info["file"]), flush=True)
    tests = os.path.join(root, "tests", "python")
    command = [python, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir", tests,
               tests] + pytest_args
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(command, cwd=tests, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
