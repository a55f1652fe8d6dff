#!/usr/bin/env python3
"""fingerprint.py ROOT -- a digest of every source that goes into the Python package.

The build writes it into bloopcl/_build_info.py; tests/python/run_pytest.py computes it again
over the tree it tests and refuses to test an installed package built from other sources
(a stale `pip install .`). The digest covers meson.build, meson_options.txt, pyproject.toml
and every file under include/, cl/ and src/ (not caches), by relative path and content.
"""
import hashlib
import os
import sys

TOP_FILES = ("meson.build", "meson_options.txt", "pyproject.toml")
TREES = ("include", "cl", "src")


def fingerprint(root):
    paths = [name for name in TOP_FILES if os.path.isfile(os.path.join(root, name))]
    for tree in TREES:
        for folder, subfolders, files in os.walk(os.path.join(root, tree)):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            for name in files:
                if not name.endswith((".pyc", ".pyo")):
                    paths.append(os.path.relpath(os.path.join(folder, name), root))
    digest = hashlib.sha256()
    for path in sorted(p.replace(os.sep, "/") for p in paths):
        with open(os.path.join(root, path), "rb") as f:
            content = f.read()
        digest.update(path.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
    return digest.hexdigest()


if __name__ == "__main__":
    print(fingerprint(sys.argv[1]))
