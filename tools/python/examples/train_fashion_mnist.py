#!/usr/bin/env python3
"""train_fashion_mnist.py -- Bloop against Mixed on Fashion-MNIST, with tinygrad on OpenCL.

The Python counterpart of bloopcl-train (tools/bloopcl-train.c): an MLP 784-256-128-10 (ReLU),
cross-entropy as the main loss, the log of the Lipschitz upper bound log prod_l ||W_l||_2^2 =
sum_l 2 log sigma_l as the auxiliary loss (sigma_l by one power iteration per step, u and v
held fixed in the gradient, so dA/dW_l = 2 u v^T / sigma_l). tinygrad computes both gradients
on its CL device; bloopcl combines them in place in tinygrad's own gradient buffers, on
tinygrad's queue (bloopcl.Context.from_tinygrad), one segment per parameter tensor; then
tinygrad's Adam steps along the direction. Each method starts from the same weights and sees
the same batches; the final losses are printed side by side.

    DEV=CL build/venv/bin/python tools/python/examples/train_fashion_mnist.py
    ... --train-size 60000 --epochs 5 --lbda 0.1     (longer; --help for every option)

Reads Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist, as bloopcl-train
does; --data DIR for another copy of the IDX .gz files).
"""
import argparse
import gzip
import os
import sys
import time

import numpy as np

os.environ.setdefault("DEV", "CL")

import bloopcl  # noqa: E402
from tinygrad import Device, Tensor, dtypes, nn  # noqa: E402
from tinygrad.helpers import Context as TinygradContext  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # the Fashion-MNIST training set's pixel statistics


def read_idx(path, magic, count, item):
    with gzip.open(path, "rb") as f:
        head = f.read(4 + 4 * (3 if magic == 2051 else 1))
        if int.from_bytes(head[:4], "big") != magic:
            raise SystemExit("%s: not an IDX file of magic %d" % (path, magic))
        if int.from_bytes(head[4:8], "big") < count:
            raise SystemExit("%s: fewer than %d items" % (path, count))
        data = f.read(count * item)
    return np.frombuffer(data, np.uint8)


def load(data_dir, prefix, count):
    images = os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz")
    labels = os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz")
    if not os.path.exists(images):
        raise SystemExit("cannot open %s (install dataset-fashion-mnist or use --data)" % images)
    x = read_idx(images, 2051, count, 784).reshape(count, 784).astype(np.float32)
    y = read_idx(labels, 2049, count, 1).astype(np.int32)
    return (x / 255.0 - MEAN) / STD, y


class MLP:
    def __init__(self):
        self.layers = [nn.Linear(784, 256), nn.Linear(256, 128), nn.Linear(128, 10)]

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = x.relu()
        return x

    def params(self):
        return [p for layer in self.layers for p in (layer.weight, layer.bias)]


def init_weights(seed):
    """The same initial weights and power-iteration vectors for every method."""
    rng = np.random.default_rng(seed)
    shapes = [(256, 784), (256,), (128, 256), (128,), (10, 128), (10,)]
    weights = []
    for shape in shapes:
        fan_in = shape[-1] if len(shape) == 2 else {256: 784, 128: 256, 10: 128}[shape[0]]
        bound = 1.0 / np.sqrt(fan_in)
        weights.append(rng.uniform(-bound, bound, shape).astype(np.float32))
    vs = [rng.standard_normal(s[1]).astype(np.float32) for s in shapes[::2]]
    return weights, [v / np.linalg.norm(v) for v in vs]


def power_iteration(w, v):
    """One power iteration on W (out x in): u = W v / |W v|, v = W^T u / |W^T u|."""
    u = w @ v
    u = u / u.square().sum().sqrt()
    v = w.T @ u
    return u.detach(), (v / v.square().sum().sqrt()).detach()


def aux_loss(model, us, vs):
    """sum_l 2 log sigma_l, sigma_l = u_l^T W_l v_l with u, v fixed."""
    total = None
    for layer, u, v in zip(model.layers, us, vs):
        term = (u * (layer.weight @ v)).sum().log() * 2.0
        total = term if total is None else total + term
    return total


def evaluate(model, x, y, batch):
    loss, correct = 0.0, 0
    with TinygradContext(TRAINING=0):
        for i in range(0, len(x), batch):
            logits = model(Tensor(x[i:i + batch]))
            target = Tensor(y[i:i + batch])
            loss += logits.sparse_categorical_crossentropy(target).item() * len(x[i:i + batch])
            correct += int((logits.argmax(axis=1) == target).sum().item())
    return loss / len(x), correct / len(x)


def train(method, args, data, ctx):
    (train_x, train_y), (test_x, test_y) = data
    weights, v0 = init_weights(args.seed)
    model = MLP()
    params = model.params()
    for p, w in zip(params, weights):
        p.replace(Tensor(w).contiguous().realize())
    vs = [Tensor(v).realize() for v in v0]
    us = [None] * len(vs)
    for i, layer in enumerate(model.layers):
        us[i], vs[i] = power_iteration(layer.weight, vs[i])
    Tensor.realize(*us, *vs)
    # fused: one update over all parameters (fewer kernels for PoCL to build the first time)
    opt = nn.optim.Adam(params, lr=args.lr, fused=True)
    n = sum(p.numel() for p in params)
    ema = args.ema if method == "bloop" else 1.0
    comb = bloopcl.Combiner(ctx, n, method=method, ema=ema, lbda=args.lbda)
    # the auxiliary loss does not depend on the biases: their auxiliary gradient is zero
    zero_bias = {i: Tensor.zeros(*p.shape).contiguous().realize()
                 for i, p in enumerate(params) if len(p.shape) == 1}
    order_rng = np.random.default_rng(args.seed + 1)
    steps = 0
    with TinygradContext(TRAINING=1):
        for _ in range(args.epochs):
            order = order_rng.permutation(len(train_x))
            for first in range(0, len(order) - args.batch + 1, args.batch):
                idx = order[first:first + args.batch]
                x, y = Tensor(train_x[idx]), Tensor(train_y[idx])
                for i, layer in enumerate(model.layers):
                    us[i], vs[i] = power_iteration(layer.weight, vs[i])
                main = model(x).sparse_categorical_crossentropy(y)
                aux = aux_loss(model, us, vs)
                # .contiguous(): a weight's gradient comes out of tinygrad's matmul as a
                # transposed view; bloopcl takes each tensor's own contiguous buffer
                g = [t.contiguous() for t in main.gradient(*params)]
                weights_only = [p for p in params if len(p.shape) == 2]
                a_weights = iter(t.contiguous() for t in aux.gradient(*weights_only))
                a = [zero_bias[i] if i in zero_bias else next(a_weights)
                     for i in range(len(params))]
                Tensor.realize(*g, *[t for i, t in enumerate(a) if i not in zero_bias],
                               *us, *vs)
                comb.step(g, a, out=g)  # d, in place in tinygrad's gradient buffers
                for p, d in zip(params, g):
                    p.grad = d
                opt.step()
                steps += 1
    train_loss, train_acc = evaluate(model, train_x, train_y, 1024)
    test_loss, test_acc = evaluate(model, test_x, test_y, 1024)
    for i, layer in enumerate(model.layers):
        us[i], vs[i] = power_iteration(layer.weight, vs[i])
    final_aux = aux_loss(model, us, vs).item()
    diag = comb.diagnostics
    return {"train_loss": train_loss, "test_loss": test_loss, "aux": final_aux,
            "test_acc": test_acc, "steps": steps, "r": diag["r"], "cosine": diag["cosine"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DATA, help="IDX .gz folder (default %(default)s)")
    parser.add_argument("--train-size", type=int, default=4096)
    parser.add_argument("--test-size", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam (default %(default)s)")
    parser.add_argument("--lbda", type=float, default=0.1, help="lambda (default %(default)s)")
    parser.add_argument("--ema", type=float, default=0.01,
                        help="Bloop's EMA weight; the baselines use 1 (default %(default)s)")
    parser.add_argument("--methods", default="bloop,mixed")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if Device.DEFAULT != "CL":
        raise SystemExit("run with DEV=CL (tinygrad's OpenCL device)")
    data = (load(args.data, "train", args.train_size), load(args.data, "t10k", args.test_size))
    ctx = bloopcl.Context.from_tinygrad("CL")
    print("bloopcl %s on %s; tinygrad CL; %d train / %d test images, %d epochs, batch %d, "
          "lambda %g" % (bloopcl.__version__, ctx.device["device_name"], args.train_size,
                         args.test_size, args.epochs, args.batch, args.lbda), flush=True)
    results = {}
    for method in args.methods.split(","):
        start = time.perf_counter()
        results[method] = train(method, args, data, ctx)
        results[method]["seconds"] = time.perf_counter() - start
        print("%s: %d steps in %.1f s" % (method, results[method]["steps"],
                                          results[method]["seconds"]), flush=True)
    methods = list(results)
    print("\nfinal            " + "".join("%12s" % m for m in methods))
    for key, label in [("train_loss", "train loss"), ("test_loss", "test loss"),
                       ("aux", "aux loss"), ("test_acc", "test accuracy")]:
        print("%-17s" % label + "".join("%12.4f" % results[m][key] for m in methods))
    for m in methods:
        if not all(np.isfinite(results[m][k]) for k in ("train_loss", "test_loss", "aux")):
            print("%s diverged" % m)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
