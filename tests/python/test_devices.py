"""Devices and versions: list_devices as bloopcl-compare --list shows them, contexts by
the BLOOPCL_DEVICE grammar."""
import bloopcl


def test_list_devices():
    devices = bloopcl.list_devices()
    assert devices, "no OpenCL device (CI installs PoCL)"
    keys = {"flat_index", "platform_index", "device_index", "platform_name",
            "platform_vendor", "device_name", "type", "driver_version", "opencl_c_version",
            "has_fp64", "has_fp16", "global_mem_bytes", "max_alloc_bytes", "compute_units",
            "platform", "device"}
    for i, d in enumerate(devices):
        assert keys <= set(d) and d["flat_index"] == i
        assert d["type"] in ("gpu", "cpu", "accelerator", "other")
        assert d["global_mem_bytes"] > 0 and d["compute_units"] > 0


def test_context_by_spec():
    devices = bloopcl.list_devices()
    last = devices[-1]
    ctx = bloopcl.Context(str(last["flat_index"]))
    assert ctx.device["device"] == last["device"]
    assert ctx.device["device_name"] == last["device_name"]
    by_type = bloopcl.Context(last["type"] if last["type"] != "other" else None)
    assert by_type.device["type"] == ctx.device["type"] or last["type"] == "other"
    assert ctx.kind == "bloopcl" and ctx.cl_context and ctx.queue
    assert ctx.last_error == ""
    ctx.finish()


def test_versions():
    assert bloopcl.library_version() == bloopcl.__version__
    assert bloopcl.__version__.count(".") == 2
