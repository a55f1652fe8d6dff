"""bloopcl.Error and one subclass per status of the C library (bloopcl_status)."""

__all__ = [
    "Error", "NullArgumentError", "InvalidArgumentError", "SizeMismatchError",
    "BufferTooSmallError", "DeviceSpecError", "DeviceNotFoundError", "KernelBuildError",
    "OpenCLError", "CLBlastError", "OutOfMemoryError", "NonfiniteInputError", "StateError",
    "UnsupportedError", "WrongContextError", "StateInvalidError", "BusyError",
    "OutOfRangeError", "error_for",
]


class Error(Exception):
    """A call was refused or failed. `message` is the library's text (bloopcl_context_last_error
    for a failed library call), `status` the bloopcl_status code (a negative int) and
    `status_name` its name. A refused call changed nothing: the combiner's state is as it was."""

    status = -2
    status_name = "BLOOPCL_ERR"

    def __init__(self, message, status=None):
        if status is None:
            status = type(self).status
        super().__init__(message)
        self.message = message
        self.status = status
        self.status_name = _NAMES.get(status, "BLOOPCL_ERR_%d" % -status)

    def __str__(self):
        return "%s (%s)" % (self.message, self.status_name)


def _status_class(name, code, doc, *bases):
    cls = type(name, (Error,) + bases, {"__doc__": doc, "status": code,
                                        "__module__": "bloopcl"})
    return cls


NullArgumentError = _status_class("NullArgumentError", -1, "A required handle was missing.")
InvalidArgumentError = _status_class(
    "InvalidArgumentError", -2,
    "A bad value: dtype, layout, hyperparameter, enum, overlapping output, out-of-order queue.",
    ValueError)
SizeMismatchError = _status_class(
    "SizeMismatchError", -3, "Element counts do not add up to n or differ between g, a, out.",
    ValueError)
BufferTooSmallError = _status_class(
    "BufferTooSmallError", -4, "A buffer is smaller than its offset plus its count.", ValueError)
DeviceSpecError = _status_class("DeviceSpecError", -5, "A malformed device specification.",
                                ValueError)
DeviceNotFoundError = _status_class("DeviceNotFoundError", -6, "No device matches.")
KernelBuildError = _status_class("KernelBuildError", -7,
                                 "An OpenCL program failed to build (log in the message).")
OpenCLError = _status_class("OpenCLError", -8, "An OpenCL call failed (named in the message).")
CLBlastError = _status_class("CLBlastError", -9, "A CLBlast call failed.")
OutOfMemoryError = _status_class("OutOfMemoryError", -10,
                                 "The device or the host has not enough memory.")
NonfiniteInputError = _status_class("NonfiniteInputError", -11, "g or a held NaN or Inf.")
StateError = _status_class("StateError", -12, "The call does not fit the combiner's state.")
UnsupportedError = _status_class("UnsupportedError", -13,
                                 "A valid request this build or device cannot serve.")
WrongContextError = _status_class(
    "WrongContextError", -14, "A buffer or tensor belongs to another OpenCL context or device.",
    ValueError)
StateInvalidError = _status_class(
    "StateInvalidError", -15,
    "The driver failed mid-step; write or reset the state (load_state_dict, reset_state).")
BusyError = _status_class("BusyError", -16,
                          "Another thread is inside a call on this context; nothing was done.")
OutOfRangeError = _status_class("OutOfRangeError", -17, "r is beyond what fp32 represents.")

_NAMES = {
    -1: "BLOOPCL_ERR_NULL_ARGUMENT", -2: "BLOOPCL_ERR_INVALID_ARGUMENT",
    -3: "BLOOPCL_ERR_SIZE_MISMATCH", -4: "BLOOPCL_ERR_BUFFER_TOO_SMALL",
    -5: "BLOOPCL_ERR_DEVICE_SPEC", -6: "BLOOPCL_ERR_DEVICE_NOT_FOUND",
    -7: "BLOOPCL_ERR_KERNEL_BUILD", -8: "BLOOPCL_ERR_OPENCL", -9: "BLOOPCL_ERR_CLBLAST",
    -10: "BLOOPCL_ERR_OUT_OF_MEMORY", -11: "BLOOPCL_ERR_NONFINITE_INPUT",
    -12: "BLOOPCL_ERR_STATE", -13: "BLOOPCL_ERR_UNSUPPORTED", -14: "BLOOPCL_ERR_WRONG_CONTEXT",
    -15: "BLOOPCL_ERR_STATE_INVALID", -16: "BLOOPCL_ERR_BUSY", -17: "BLOOPCL_ERR_OUT_OF_RANGE",
}

_CLASSES = {cls.status: cls for cls in (
    NullArgumentError, InvalidArgumentError, SizeMismatchError, BufferTooSmallError,
    DeviceSpecError, DeviceNotFoundError, KernelBuildError, OpenCLError, CLBlastError,
    OutOfMemoryError, NonfiniteInputError, StateError, UnsupportedError, WrongContextError,
    StateInvalidError, BusyError, OutOfRangeError)}


def error_for(status, message):
    """The exception for a status code (the extension raises what this returns)."""
    return _CLASSES.get(status, Error)(message, status)
