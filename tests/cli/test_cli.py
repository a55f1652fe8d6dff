#!/usr/bin/env python3
"""test_cli.py -- the command line of every bloopcl tool, run as a user runs it.

For each tool: --help (exit 0, documents the exit codes and BLOOPCL_LOG), --version (exit 0,
the library's version), an unknown option and a missing option value (exit 2, getopt's message
and the synopsis on stderr), a bad device (exit 2, stderr names --device), a bad BLOOPCL_LOG
(exit 2), --list (the hint on stderr, not stdout), --list --json and a small --json run, both
parsed strictly (python3 -m json.tool, and json.loads refusing NaN and Infinity) with their
schema checked; and BLOOPCL_LOG=info / error through the log callback. The element-type options:
bloopcl-compare --dtypes / --inv-scale (bad values refused; a typed JSON run whose cases carry
their dtype, with no clblast case for a 2-byte type) and bloopcl-bench --dtype (the byte model).

usage: test_cli.py VERSION COMPARE BENCH DEMO TRAIN
Prints one line per failed check and ends with "N passed, N failed"; exit 1 if any failed.
"""
import json
import os
import subprocess
import sys

VERSION, COMPARE, BENCH, DEMO, TRAIN = sys.argv[1:6]

# Each tool: its program, a valued option of its own, and a fast --json run.
TOOLS = {
    "bloopcl-compare": (COMPARE, "--steps",
                        ["--sizes", "1,257", "--filter", "bloop defaults fused normal"]),
    "bloopcl-bench": (BENCH, "--reps", ["--sizes", "4096", "--reps", "1"]),
    "bloopcl-demo": (DEMO, "--steps", ["--steps", "5"]),
    "bloopcl-train": (TRAIN, "--epochs",
                      ["--train-size", "256", "--test-size", "100", "--epochs", "1",
                       "--batch", "128", "--lambdas", "0.1", "--methods", "mixed",
                       "--min-accuracy", "0"]),
}

# The JSON schema of each tool ("bloopcl-compare/2": the dtype dimension, tools/COMPARE.md).
SCHEMAS = {"bloopcl-compare": "bloopcl-compare/2"}

passed = failed = 0


def check(condition, what, run=None):
    global passed, failed
    if condition:
        passed += 1
        return
    failed += 1
    print(f"FAIL: {what}")
    if run is not None:
        print(f"  exit {run.returncode}\n  stdout: {run.stdout[:1500]!r}\n"
              f"  stderr: {run.stderr[:1500]!r}")


def run(program, args, **env):
    environment = dict(os.environ)
    environment.pop("BLOOPCL_LOG", None)
    environment.update(env)
    return subprocess.run([program] + args, capture_output=True, text=True, env=environment,
                          timeout=600)


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def strict_json(name, result):
    """The document on stdout if both strict parsers take it, else None (a failed check)."""
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=result.stdout,
                          capture_output=True, text=True)
    check(tool.returncode == 0, f"{name}: python3 -m json.tool refuses stdout: {tool.stderr}",
          result)
    try:
        return json.loads(result.stdout, parse_constant=reject_constant)
    except ValueError as error:
        check(False, f"{name}: stdout is not strict JSON: {error}", result)
        return None


def member(document, key):
    """document[key] if document is an object holding an object there, else {}."""
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, dict) else {}


def check_identity(name, document, schema):
    if not isinstance(document, dict):
        check(False, f"{name}: the document is not an object")
        return
    check(document.get("schema") == schema,
          f"{name}: schema {document.get('schema')!r}, expected {schema!r}")
    check(member(document, "library").get("version") == VERSION,
          f"{name}: library.version {document.get('library')!r}, expected {VERSION}")
    check(member(document, "tool").get("name") == name.split()[0],
          f"{name}: tool.name {document.get('tool')!r}")


def check_help(name, program):
    result = run(program, ["--help"])
    out = result.stdout
    check(result.returncode == 0 and out.startswith("usage: "), f"{name} --help", result)
    for text in ("Exit status: 0 success; 1 ", "2 usage or environment error", "BLOOPCL_LOG",
                 "error, warn, info or debug", "--device SPEC", "--version", "--list"):
        check(text in out, f"{name} --help does not mention {text!r}")


def check_version(name, program):
    result = run(program, ["--version"])
    check(result.returncode == 0, f"{name} --version exit status", result)
    check(f"library: bloopcl {VERSION} " in result.stdout, f"{name} --version names the library",
          result)
    check(result.stdout.startswith(f"{name} {VERSION}\n"), f"{name} --version first line", result)
    verbose = run(program, ["--version", "--verbose"])
    check(verbose.returncode == 0 and "devices: " in verbose.stdout,
          f"{name} --version --verbose lists the devices", verbose)


def check_usage_errors(name, program, valued):
    result = run(program, ["--no-such-option"])
    check(result.returncode == 2 and "unrecognized option '--no-such-option'" in result.stderr
          and "usage: " in result.stderr and result.stdout == "", f"{name} --no-such-option",
          result)
    for option in (valued, "--device"):
        result = run(program, [option])
        check(result.returncode == 2
              and f"option '{option}' requires an argument" in result.stderr
              and result.stdout == "", f"{name} {option} without its value", result)
    result = run(program, ["stray"])
    check(result.returncode == 2 and 'unexpected argument "stray"' in result.stderr,
          f"{name} stray argument", result)
    result = run(program, ["--list"], BLOOPCL_LOG="loud")
    check(result.returncode == 2 and 'BLOOPCL_LOG="loud"' in result.stderr,
          f"{name} with BLOOPCL_LOG=loud", result)


def check_devices(name, program):
    result = run(program, ["--device", "nosuch"])
    check(result.returncode == 2 and f'{name}: --device "nosuch": ' in result.stderr,
          f"{name} --device nosuch names --device", result)
    listed = run(program, ["--list"])
    check(listed.returncode == 0 and listed.stdout.startswith("index ")
          and "select one" not in listed.stdout and "select one" in listed.stderr,
          f"{name} --list: table on stdout, hint on stderr", listed)
    result = run(program, ["--list", "--json"])
    check(result.returncode == 0 and result.stderr == "", f"{name} --list --json", result)
    document = strict_json(f"{name} --list --json", result)
    if document is not None:
        check_identity(f"{name} --list --json", document, "bloopcl-devices/1")
        devices = document.get("devices")
        check(isinstance(devices, list) and len(devices) >= 1
              and all(isinstance(d.get("name"), str) and isinstance(d.get("index"), int)
                      for d in devices), f"{name} --list --json devices: {devices!r}")


def check_json_run(name, program, args):
    result = run(program, ["--json"] + args)
    check(result.returncode == 0, f"{name} --json {' '.join(args)}", result)
    document = strict_json(f"{name} --json", result)
    if document is None:
        return
    check_identity(f"{name} --json", document, SCHEMAS.get(name, f"{name}/1"))
    if not isinstance(document, dict):
        return
    if name == "bloopcl-compare":
        devices = document.get("devices") or [{}]
        device = member(devices[0], "device")
        summary = member(document, "summary")
        check(summary.get("failed") == 0 and summary.get("passed", 0) > 0,
              f"compare summary {summary}")
    else:
        device = member(document, "device")
        check(len(document.get("results") or []) > 0, f"{name} --json has no results")
    check(isinstance(device.get("name"), str) and isinstance(device.get("index"), int),
          f"{name} --json device identity {device!r}")


def check_log_levels():
    info = run(DEMO, ["--steps", "1"], BLOOPCL_LOG="info")
    check(info.returncode == 0 and "bloopcl-demo: bloopcl info: " in info.stderr,
          "BLOOPCL_LOG=info prints the library's info messages", info)
    quiet = run(DEMO, ["--steps", "1"], BLOOPCL_LOG="error")
    check(quiet.returncode == 0 and "bloopcl info" not in quiet.stderr
          and "bloopcl warn" not in quiet.stderr, "BLOOPCL_LOG=error hides info and warn", quiet)
    unset = run(DEMO, ["--steps", "1"])
    check(unset.returncode == 0 and "bloopcl info" not in unset.stderr,
          "no BLOOPCL_LOG: no library messages", unset)


def check_compare_dtypes():
    for bad in ("f8", "f16:f32", "f16/loud", "bf16:bf16:f32:f32", "f16/scaled/scaled"):
        result = run(COMPARE, ["--dtypes", bad])
        check(result.returncode == 2 and "--dtypes takes" in result.stderr,
              f"bloopcl-compare --dtypes {bad} is refused", result)
    for bad in ("0", "2^-41", "2^x", "abc", "-1"):
        result = run(COMPARE, ["--inv-scale", bad])
        check(result.returncode == 2 and "--inv-scale takes" in result.stderr,
              f"bloopcl-compare --inv-scale {bad} is refused", result)
    args = ["--sizes", "257", "--filter", "bloop defaults", "--filter", " normal", "--dtypes",
            "f16,bf16:bf16:f32/scaled-dev,f32/scaled", "--inv-scale", "2^-10"]
    result = run(COMPARE, ["--json"] + args)
    check(result.returncode == 0, "bloopcl-compare --json --dtypes run", result)
    document = strict_json("bloopcl-compare --json --dtypes", result)
    if not isinstance(document, dict):
        return
    check([d.get("label") for d in document.get("dtypes") or []]
          == ["f16", "bf16:bf16:f32/scaled-dev", "f32/scaled"]
          and document.get("clblast_skips_2byte") is True and document.get("inv_scale") == 2**-10,
          f"compare --dtypes head: {document.get('dtypes')!r}")
    cases = ((document.get("devices") or [{}])[0]).get("cases") or []
    seen = sorted((member(c, "dtype").get("label"), c.get("backend")) for c in cases)
    check(seen == [("bf16:bf16:f32/scaled-dev", "fused"), ("f16", "fused"),
                   ("f32/scaled", "clblast"), ("f32/scaled", "fused")],
          f"compare --dtypes cases (2-byte types on fused only): {seen!r}")
    scaled = [member(c, "dtype") for c in cases
              if member(c, "dtype").get("label") == "bf16:bf16:f32/scaled-dev"]
    check(len(scaled) == 1 and scaled[0].get("g") == "bf16" and scaled[0].get("d") == "f32"
          and scaled[0].get("scale") == "device" and scaled[0].get("inv_scale_g") == 2**-10
          and scaled[0].get("inv_scale_a") == 2**-9, f"compare case dtype object {scaled!r}")
    check(all(c.get("passed") is True for c in cases) and len(cases) == 4,
          f"compare --dtypes cases pass: {[c.get('verdict') for c in cases]!r}")
    table = run(COMPARE, args)
    check(table.returncode == 0 and "clblast skipped" in table.stdout
          and " dtype " in table.stdout and table.stdout.endswith("4 passed, 0 failed\n"),
          "compare --dtypes table: the header says clblast is skipped", table)


def check_bench_dtype():
    result = run(BENCH, ["--dtype", "f64"])
    check(result.returncode == 2 and "--dtype takes" in result.stderr,
          "bloopcl-bench --dtype f64 is refused", result)
    result = run(BENCH, ["--json", "--dtype", "f16", "--sizes", "4096", "--reps", "1"])
    check(result.returncode == 0, "bloopcl-bench --json --dtype f16", result)
    document = strict_json("bloopcl-bench --dtype f16", result)
    if not isinstance(document, dict):
        return
    rows = document.get("results") or []
    moved = {r.get("method"): r.get("moved_bytes_per_element") for r in rows}
    model = {r.get("method"): r.get("model_bytes_per_element") for r in rows}
    check(document.get("dtype") == "f16" and len(rows) == 4
          and all(r.get("backend") == "fused" and r.get("dtype") == "f16" for r in rows),
          f"bench --dtype f16: fused rows only, dtype f16: {rows!r}")
    # fused: 2 (e_g + e_a) + 12 + e_d (Bloop, DB), + 24 (PCGrad), + 0 (Mixed); bound 3e + 8/16/0
    check(moved == {"bloop": 22, "dynamic_barrier": 22, "pcgrad": 34, "mixed": 10}
          and model == {"bloop": 14, "dynamic_barrier": 14, "pcgrad": 22, "mixed": 6},
          f"bench --dtype f16 byte model: moved {moved!r}, model {model!r}")


def check_bench_optimizer():
    """--optimizer: both ways run and the byte model of each (AdamW 60 vs 52 B per element;
    SGD with momentum 52 vs 44); the separate side launches one optimizer kernel per
    segment."""
    for name, bytes_separate, bytes_fused in (("adamw", 60, 52), ("sgd", 52, 44)):
        result = run(BENCH, ["--optimizer", name, "--sizes", "4096", "--segments", "7",
                             "--reps", "1"])
        lines = [l.split() for l in result.stdout.splitlines() if l.startswith("optimizer ")]
        ok = result.returncode == 0 and len(lines) == 2
        for fields in lines if ok else []:
            p = int(fields[fields.index("P") + 1])
            launches = [int(fields[i - 1]) for i, f in enumerate(fields) if f == "launches"]
            ok = ok and [int(fields[i - 1]) for i, f in enumerate(fields) if f == "B/elem"] == \
                [bytes_separate, bytes_fused]
            ok = ok and launches[0] == launches[1] + p and "speedup" in fields
        check(ok, f"bloopcl-bench --optimizer {name}: rows {lines!r}", result)
    result = run(BENCH, ["--optimizer", "lion"])
    check(result.returncode == 2 and "--optimizer takes adamw or sgd" in result.stderr,
          "bloopcl-bench --optimizer lion is refused", result)
    result = run(BENCH, ["--optimizer", "adamw", "--json"])
    check(result.returncode == 2 and "--json" in result.stderr,
          "bloopcl-bench --optimizer --json is refused", result)


for tool_name, (path, valued_option, json_args) in TOOLS.items():
    check_help(tool_name, path)
    check_version(tool_name, path)
    check_usage_errors(tool_name, path, valued_option)
    check_devices(tool_name, path)
    check_json_run(tool_name, path, json_args)
check_log_levels()
check_compare_dtypes()
check_bench_dtype()
check_bench_optimizer()
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
