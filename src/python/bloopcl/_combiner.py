"""bloopcl.Combiner: one method, its hyperparameters and its state for n parameters."""
import operator

import numpy as np

from . import _bloopcl
from ._context import Context
from ._errors import InvalidArgumentError, SizeMismatchError, StateError, WrongContextError
from ._tensors import F32, HostPart, TinygradPart, realize_tinygrad, resolve

METHODS = {"bloop": 0, "dynamic_barrier": 1, "dynamic-barrier": 1, "db": 1, "pcgrad": 2,
           "mixed": 3}
METHOD_NAMES = {0: "bloop", 1: "dynamic_barrier", 2: "pcgrad", 3: "mixed"}
INITS = {"zeros": 0, "first_gradient": 1, "first": 1, "random": 2}
INIT_NAMES = {0: "zeros", 1: "first_gradient", 2: "random", 3: "buffer"}
DOTS = {"auto": 0, "clblast": 1, "fused": 2}
DOTS_NAMES = {0: "auto", 1: "clblast", 2: "fused"}
NONFINITE = {"skip": 0, "propagate": 1}
NONFINITE_NAMES = {0: "skip", 1: "propagate"}
REASONS = {0: "none", 1: "nonfinite_input", 2: "out_of_range"}
STATE_EMA = _bloopcl.STATE_EMA
STATE_AUX_EMA = _bloopcl.STATE_AUX_EMA
STATE_MOMENT1 = _bloopcl.STATE_MOMENT1
STATE_MOMENT2 = _bloopcl.STATE_MOMENT2
OPTIMIZERS = {"sgd": 1, "adamw": 2}
OPTIMIZER_NAMES = {0: None, 1: "sgd", 2: "adamw"}


def _choice(table, value, what):
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    raise InvalidArgumentError("%s %r: one of %s" % (what, value, ", ".join(sorted(table))))


def _state_array(x, n, what):
    """A float32 1-D contiguous numpy array of n elements, exactly (never converted)."""
    if not isinstance(x, np.ndarray):
        raise InvalidArgumentError("%s: a numpy float32 array of %d elements, not %s"
                                   % (what, n, type(x).__name__))
    if x.dtype != np.float32:
        raise InvalidArgumentError("%s: dtype %s, need float32 (never converted)" % (what,
                                                                                     x.dtype))
    if x.ndim != 1 or not x.flags.c_contiguous:
        raise InvalidArgumentError("%s: need a 1-D contiguous array (shape %s)" % (what,
                                                                                  x.shape))
    if x.shape[0] != n:
        raise SizeMismatchError("%s: %d elements, need %d" % (what, x.shape[0], n))
    return x


def config_kwargs(n, method, ema, lbda, eps, rescale, ratio_only, init, dots, seed, nonfinite,
                  aux_init):
    """The extension's configuration keywords (bloopcl_config fields) from the Python ones."""
    kw = {"method": _choice(METHODS, method, "method"), "ema": float(ema), "lbda": float(lbda),
          "eps": float(eps), "rescale": bool(rescale), "ratio_only": bool(ratio_only),
          "dots": _choice(DOTS, dots, "dots"), "seed": operator.index(seed),
          "nonfinite": _choice(NONFINITE, nonfinite, "nonfinite")}
    if isinstance(init, str):
        kw["init"] = _choice(INITS, init, "init")
        if aux_init is not None:
            raise InvalidArgumentError("aux_init goes with an init array (PCGrad)")
    else:
        kw["init"] = 3  # BLOOPCL_INIT_BUFFER
        kw["initial_ema"] = _state_array(init, n, "init")
        if aux_init is not None:
            kw["initial_aux_ema"] = _state_array(aux_init, n, "aux_init")
    return kw


class Combiner:
    """Combines a main gradient g and an auxiliary gradient a into the update direction d.

    Combiner(ctx, n, method="bloop", ema=0.01, lbda=0.1, eps=1e-7, rescale=False,
             ratio_only=False, init="zeros", dots="auto", *, seed=0, nonfinite="skip",
             aux_init=None)

    method: "bloop", "dynamic_barrier", "pcgrad" or "mixed". ema: the weight w of the NEW
    gradient in the EMA m <- m + w (g - m) (1: no EMA). lbda: lambda. eps: added to |m|^2.
    rescale: s = 1/(1+lambda). ratio_only: d = s((1 - lambda r) g + lambda a). init: "zeros",
    "first_gradient", "random" (N(0,1) from seed) or a float32 array of n (aux_init: PCGrad's
    second EMA). dots: "auto", "fused" or "clblast". nonfinite: "skip" (a NaN or Inf in g or
    a skips the step: d = 0, state unchanged, diagnostics["accepted"] False) or "propagate".
    Values out of range are refused (bloopcl.InvalidArgumentError), never clamped.
    """

    def __init__(self, ctx, n, method="bloop", ema=0.01, lbda=0.1, eps=1e-7, rescale=False,
                 ratio_only=False, init="zeros", dots="auto", *, seed=0, nonfinite="skip",
                 aux_init=None):
        if not isinstance(ctx, Context):
            raise InvalidArgumentError("Combiner needs a bloopcl.Context, not %s"
                                       % type(ctx).__name__)
        n = operator.index(n)
        if n < 1:
            raise SizeMismatchError("n must be at least 1, not %d" % n)
        kw = config_kwargs(n, method, ema, lbda, eps, rescale, ratio_only, init, dots, seed,
                           nonfinite, aux_init)
        self._impl = _bloopcl._Combiner(ctx._impl, n, **kw)
        self.ctx = ctx
        self.n = n
        self.method = METHOD_NAMES[kw["method"]]
        self._held = ()  # the Python objects of the last step (see step)

    # --- the optimizer in the step ------------------------------------------------------------
    def set_optimizer(self, kind, lr=1e-3, *, weight_decay=None, decoupled=None, momentum=0.0,
                      dampening=0.0, nesterov=False, betas=(0.9, 0.999), eps=1e-8,
                      bias_correction=True):
        """Attaches "sgd" or "adamw" (None detaches), applied inside the step to the parameters
        given as step(g, a, params=p): d is never written, p is updated in place, and a
        skipped step leaves p, the moments and the step count t alone. As in PyTorch:
        AdamW's weight_decay defaults to 1e-2, decoupled; SGD's to 0, L2 (decoupled=True:
        p <- p (1 - lr wd)). The same kind again keeps the moments and t (a change of lr or
        weight_decay); another kind starts them from zero."""
        if kind is None:
            self._impl.set_optimizer(0, 0.0, 0.0, False, 0.0, 0.0, False, 0.9, 0.999, 1e-8, True)
            return
        code = _choice(OPTIMIZERS, kind, "optimizer")
        adamw = code == OPTIMIZERS["adamw"]
        if weight_decay is None:
            weight_decay = 1e-2 if adamw else 0.0
        if decoupled is None:
            decoupled = adamw
        beta1, beta2 = betas
        self._impl.set_optimizer(code, float(lr), float(weight_decay), bool(decoupled),
                                 float(momentum), float(dampening), bool(nesterov),
                                 float(beta1), float(beta2), float(eps), bool(bias_correction))

    def set_lr(self, lr):
        """The learning rate of the next steps (schedules)."""
        self._impl.set_learning_rate(float(lr))

    @property
    def optimizer(self):
        """The attached optimizer's settings (kind None when there is none) and t."""
        o = self._impl.optimizer()
        o["kind"] = OPTIMIZER_NAMES.get(o["kind"], str(o["kind"]))
        o["steps"] = self._impl.optimizer_steps() if o["kind"] is not None else 0
        return o

    # --- steps ----------------------------------------------------------------------------
    def step(self, g, a, out=None, *, params=None):
        """One step: returns d (out, or new arrays/tensors like g when out is None).

        g, a, out: each a 1-D float32 (or float16, bfloat16) numpy array, a pyopencl Array or
        Buffer, a tinygrad Tensor on CL, a bloopcl.Segment, or a list of these (one segment
        each, with the same counts in g, a and out; one global projection). Host arrays go
        through the blocking host path; device objects are used in place on the context's
        queue (the call returns once the step is enqueued) and out=g or out=a is in place.
        Everything is checked before anything is enqueued: a refused step raises
        bloopcl.Error and leaves the state as it was.

        params (with set_optimizer): the parameters, device buffers/tensors laid out as g,
        updated in place by the attached optimizer instead of writing d (out must be None);
        returns params."""
        if params is not None:
            return self._step_parameters(g, a, params)
        ctx = self.ctx
        g_parts, g_list = resolve(g, "g", False, ctx)
        a_parts, _ = resolve(a, "a", False, ctx)
        d_parts = None
        if out is not None:
            d_parts, _ = resolve(out, "out", True, ctx)
        operands = [g_parts, a_parts] + ([d_parts] if d_parts is not None else [])
        roles = ["g", "a", "out"]
        hosts = {p.host for parts in operands for p in parts}
        if len(hosts) > 1:
            raise InvalidArgumentError("g, a and out must all be host (numpy) arrays or all "
                                       "device buffers/tensors; they are mixed")
        host = hosts.pop()
        counts = [[p.count for p in parts] for parts in operands]
        for role, c in zip(roles, counts):
            if sum(c) != self.n:
                raise SizeMismatchError("%s: %d elements, the combiner has n = %d"
                                        % (role, sum(c), self.n))
        for role, c in zip(roles[1:], counts[1:]):
            if c != counts[0]:
                raise SizeMismatchError(
                    "%s has segments of %s elements, g of %s: g, a and out need the same "
                    "segment counts" % (role, _short(c), _short(counts[0])))
        if not host:
            for role, parts in zip(roles, operands):
                for i, p in enumerate(parts):
                    cl_context = p.cl_context
                    if cl_context is not None and cl_context != ctx.cl_context:
                        name = role if len(parts) == 1 else "%s[%d]" % (role, i)
                        raise WrongContextError(
                            "%s: its memory belongs to another OpenCL context (0x%x) than the "
                            "combiner's (0x%x)" % (name, cl_context, ctx.cl_context))
        if out is None:
            out, marked = _like(g_parts, g_list, ctx)
            d_parts, _ = resolve(marked, "out", True, ctx)
            operands.append(d_parts)
        if host:
            self._step_host(*operands)
            self._held = ()
        else:
            operands = realize_tinygrad(operands, roles)
            self._step_device(*operands)
            # The library retains the buffers of its last segment lists; the Python objects
            # behind them (tinygrad recycles a freed tensor's cl_mem) are held as long.
            self._held = (g, a, out)
        return out

    def _step_host(self, g_parts, a_parts, d_parts):
        impl = self._impl
        if (len(g_parts) == 1 and all(p[0].dtype == F32 for p in (g_parts, a_parts, d_parts))):
            impl.step_host(g_parts[0].array, a_parts[0].array, d_parts[0].array)
            return
        g32, a32 = _gather(g_parts, self.n), _gather(a_parts, self.n)
        d32 = np.empty(self.n, np.float32)
        impl.step_host(g32, a32, d32)
        first = 0
        for p in d_parts:
            piece = d32[first:first + p.count]
            if p.dtype == F32:
                p.array[...] = piece
            else:
                _bloopcl.convert(piece, F32, p.array.view(np.uint16), p.dtype)
            first += p.count

    def _step_parameters(self, g, a, params):
        ctx = self.ctx
        g_parts, _ = resolve(g, "g", False, ctx)
        a_parts, _ = resolve(a, "a", False, ctx)
        p_parts, _ = resolve(params, "params", True, ctx)
        operands = [g_parts, a_parts, p_parts]
        if any(p.host for parts in operands for p in parts):
            raise InvalidArgumentError("step(params=...) takes device buffers or tensors for g, "
                                       "a and params (the parameters are updated in place on "
                                       "the device)")
        counts = [[p.count for p in parts] for parts in operands]
        for role, c in zip(("g", "a", "params"), counts):
            if sum(c) != self.n:
                raise SizeMismatchError("%s: %d elements, the combiner has n = %d"
                                        % (role, sum(c), self.n))
            if c != counts[0]:
                raise SizeMismatchError("%s has segments of %s elements, g of %s"
                                        % (role, _short(c), _short(counts[0])))
        operands = realize_tinygrad(operands, ["g", "a", "params"])
        self._step_device(*operands, update_parameters=True)
        self._held = (g, a, params)
        return params

    def _step_device(self, g_parts, a_parts, d_parts, update_parameters=False):
        ctx = self.ctx
        parts = g_parts + a_parts + d_parts
        wait, markers, foreign = [], [], {}
        for p in parts:
            for event in p.events:
                wait.append(int(event.int_ptr))
            if p.queue is not None and int(p.queue.int_ptr) != ctx.queue:
                foreign[int(p.queue.int_ptr)] = p.queue
        if foreign:
            import pyopencl as cl

            for q in foreign.values():  # the step waits for what these queues hold
                markers.append(cl.enqueue_marker(q))
                wait.append(int(markers[-1].int_ptr))
        want_event = bool(foreign) or any(p.array is not None for p in d_parts)
        handle = self._impl.step([p.segment() for p in g_parts], [p.segment() for p in a_parts],
                                 [p.segment() for p in d_parts], wait_events=wait,
                                 want_event=want_event, update_parameters=update_parameters)
        if handle:
            import pyopencl as cl

            done = cl.Event.from_int_ptr(handle, retain=False)
            for p in d_parts:
                if p.array is not None:
                    p.array.add_event(done)  # pyopencl's later operations on out wait for it
            for q in foreign.values():  # and so does everything enqueued later on their queues
                cl.enqueue_barrier(q, wait_for=[done])

    # --- results and state -----------------------------------------------------------------
    @property
    def diagnostics(self):
        """The last step's scalars (waits for it): r, ratio_raw, dot_ema_aux (<m,a>),
        ema_norm_sq (<m,m>), aux_norm_sq (<a,a>), cosine, aux_ratio, dot_aux_ema_main,
        aux_ema_norm_sq (PCGrad), accepted, grad_norm_sq and grad_norm (of g), steps (enqueued
        on this combiner), kernels (of the last step), reason ("none", "nonfinite_input",
        "out_of_range")."""
        d = self._impl.diagnostics()
        d["reason"] = REASONS.get(d["reason"], str(d["reason"]))
        return d

    @property
    def config(self):
        """The configuration in force (dots resolved: never "auto")."""
        c = self._impl.config()
        c["method"] = METHOD_NAMES[c["method"]]
        c["init"] = INIT_NAMES[c["init"]]
        c["dots"] = DOTS_NAMES[c["dots"]]
        c["nonfinite"] = NONFINITE_NAMES[c["nonfinite"]]
        return c

    @property
    def outputs_handle(self):
        """The cl_mem (int) of the combiner's output buffer: BLOOPCL_NUM_OUTPUTS floats
        (accepted, r, ..., <g,g>) that every step writes on the device."""
        return self._impl.outputs()

    def set_hyperparameters(self, ema=None, lbda=None, eps=None):
        """Changes ema (w), lbda and eps between steps (schedules); validated, not clamped."""
        c = self._impl.config()
        self._impl.set_hyperparameters(c["ema"] if ema is None else float(ema),
                                       c["lbda"] if lbda is None else float(lbda),
                                       c["eps"] if eps is None else float(eps))

    def reset_state(self):
        """Puts the state back as init made it at creation (zeros, first_gradient, random;
        an init array is not kept: load_state_dict a checkpoint instead)."""
        self._impl.reset_state()

    def _kinds(self):
        if self.method == "mixed":
            return ()
        if self.method == "pcgrad":
            return (("ema", STATE_EMA), ("aux_ema", STATE_AUX_EMA))
        return (("ema", STATE_EMA),)

    def state_dict(self):
        """The state as numpy arrays, for checkpoints (blocking; after the last step): method,
        n, the hyperparameters, "ema" (m; None before a first_gradient init has seen its first
        accepted step) and "aux_ema" (PCGrad's q). load_state_dict resumes bit-exactly."""
        c = self._impl.config()
        sd = {"format": 1, "method": self.method, "n": self.n, "ema_weight": c["ema"],
              "lbda": c["lbda"], "eps": c["eps"], "ema": None, "aux_ema": None}
        sd.update(self._optimizer_state())
        for key, kind in self._kinds():
            values = np.empty(self.n, np.float32)
            try:
                self._impl.read_state(kind, values)
            except StateError:
                if self.config["init"] != "first_gradient":
                    raise
                values = None  # not initialised yet
            sd[key] = values
        return sd

    def _optimizer_state(self):
        """The optimizer's part of state_dict: its settings, t and moments (None: none)."""
        o = self.optimizer
        if o["kind"] is None:
            return {"optimizer": None}
        state = {"optimizer": o, "optimizer_steps": o["steps"]}
        for key, kind in (("moment1", STATE_MOMENT1), ("moment2", STATE_MOMENT2)):
            values = np.empty(self.n, np.float32)
            try:
                self._impl.read_state(kind, values)
            except StateError:
                values = None  # this optimizer keeps no such moment
            state[key] = values
        return state

    def _load_optimizer_state(self, sd):
        o = sd.get("optimizer")
        if o is None:
            return
        self.set_optimizer(o["kind"], o["lr"], weight_decay=o["weight_decay"],
                           decoupled=o["decoupled"], momentum=o["momentum"],
                           dampening=o["dampening"], nesterov=o["nesterov"],
                           betas=(o["beta1"], o["beta2"]), eps=o["eps"],
                           bias_correction=o["bias_correction"])
        for key, kind in (("moment1", STATE_MOMENT1), ("moment2", STATE_MOMENT2)):
            if sd.get(key) is not None:
                self._impl.write_state(kind, _state_array(sd[key], self.n, key))
        self._impl.optimizer_steps(int(sd["optimizer_steps"]))

    def load_state_dict(self, sd):
        """Resumes from state_dict(): the state bit for bit and the hyperparameters. Everything
        is checked first (method, n, arrays float32 of n); a refused dict changes nothing."""
        if not isinstance(sd, dict) or sd.get("format") != 1:
            raise InvalidArgumentError("not a bloopcl state_dict (format 1)")
        if sd.get("method") != self.method or sd.get("n") != self.n:
            raise StateError("state_dict of %s over n = %s; this combiner is %s over n = %d"
                             % (sd.get("method"), sd.get("n"), self.method, self.n))
        kinds = self._kinds()
        arrays = {key: sd.get(key) for key, _ in kinds}
        present = [v is not None for v in arrays.values()]
        if any(present) and not all(present):
            raise StateError("state_dict holds only part of the state")
        for key, value in arrays.items():
            if value is not None:
                _state_array(value, self.n, "state_dict[%r]" % key)
        old = self._impl.config()
        self._impl.set_hyperparameters(float(sd["ema_weight"]), float(sd["lbda"]),
                                       float(sd["eps"]))
        try:
            if kinds and not any(present):
                self._impl.reset_state()  # a first_gradient init not yet initialised
            for key, kind in kinds:
                if arrays[key] is not None:
                    self._impl.write_state(kind, arrays[key])
            self._load_optimizer_state(sd)
        except Exception:
            self._impl.set_hyperparameters(old["ema"], old["lbda"], old["eps"])
            raise

    def __repr__(self):
        return "<bloopcl.Combiner %s n=%d on %r>" % (self.method, self.n, self.ctx)


def _short(counts):
    return str(counts) if len(counts) <= 8 else "[%s, ... (%d segments)]" % (
        ", ".join(map(str, counts[:4])), len(counts))


def _gather(parts, n):
    """The host parts of one operand widened into one float32 vector (exact)."""
    out = np.empty(n, np.float32)
    first = 0
    for p in parts:
        piece = out[first:first + p.count]
        if p.dtype == F32:
            piece[...] = p.array
        else:
            _bloopcl.convert(p.array.view(np.uint16), p.dtype, piece, F32)
        first += p.count
    return out


def _like(parts, as_list, ctx):
    """New outputs shaped and typed like g's parts (out=None): what step returns, and what it
    hands to resolve (a bf16 array of bits goes with its marker)."""
    from ._tensors import _ITEMSIZE, BF16, DTYPE_NAMES, Segment, bf16

    made, marked = [], []
    for p in parts:
        if isinstance(p, TinygradPart):  # not realized yet
            from tinygrad import Tensor

            t = p.tensor
            x = Tensor.empty(*t.shape, dtype=t.dtype, device=t.device)
        elif isinstance(p, HostPart):
            x = np.empty_like(p.array)
        elif p.array is not None and p.array.size == p.count:
            import pyopencl.array as cla

            x = (cla.empty_like(p.array) if p.array.queue is not None
                 else cla.empty(ctx.pyopencl_queue(), p.array.shape, p.array.dtype))
        elif p.array is not None or (type(p.obj).__module__.split(".", 1)[0] == "pyopencl"
                                     and hasattr(p.obj, "size")):
            import pyopencl as cl

            owner = p.array.base_data if p.array is not None else p.obj
            buf = cl.Buffer(owner.context, cl.mem_flags.READ_WRITE,
                            p.count * _ITEMSIZE[p.dtype])
            x = Segment(buf, 0, p.count, DTYPE_NAMES[p.dtype]) if p.dtype != 0 else buf
        else:
            raise InvalidArgumentError("out is required when g is a raw cl_mem handle")
        made.append(x)
        is_bits = p.dtype == BF16 and not isinstance(p, TinygradPart) and not (
            isinstance(x, np.ndarray) and x.dtype.name == "bfloat16") and not isinstance(
                x, Segment)
        marked.append(bf16(x) if is_bits else x)
    return (made, marked) if as_list else (made[0], marked[0])
