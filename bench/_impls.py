"""Reference implementations the benchmarks hold mlp against.

* ``NumpyMLP``: a clean, vectorised numpy version of the notebook's maths
  (sigmoid hidden and output layers, MSE 0.5*||a-y||^2 summed over the batch,
  SGD p -= lr/B * grad): fancy-index gather into preallocated buffers,
  ``np.matmul(..., out=...)``, in-place elementwise updates.
* ``TorchMLP``: PyTorch eager, nn.Linear + nn.Sigmoid, autograd and
  torch.optim.SGD on loss = 0.5 * sum((a - y)^2) / B, which is the same step.

Both start from given weights/biases so every implementation in a benchmark
starts from the same parameters.
"""
from __future__ import annotations

import numpy as np


def _sigmoid_(z):
    """In place: z <- 1 / (1 + exp(-z)). exp overflow gives inf -> 0, which is right."""
    np.negative(z, out=z)
    np.exp(z, out=z)
    z += 1
    np.reciprocal(z, out=z)
    return z


class NumpyMLP:
    def __init__(self, weights, biases, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self.W = [np.array(w, dtype=self.dtype, copy=True, order="C") for w in weights]
        self.b = [np.array(b, dtype=self.dtype, copy=True).reshape(-1) for b in biases]
        self.sizes = [self.W[0].shape[1]] + [w.shape[0] for w in self.W]
        self.gW = [np.empty_like(w) for w in self.W]
        self.gb = [np.empty_like(b) for b in self.b]
        self._bufs = {}

    def _buffers(self, n):
        bufs = self._bufs.get(n)
        if bufs is None:
            dt = self.dtype
            bufs = {
                "x": np.empty((n, self.sizes[0]), dt),
                "y": np.empty((n, self.sizes[-1]), dt),
                "acts": [np.empty((n, s), dt) for s in self.sizes[1:]],
                "deltas": [np.empty((n, s), dt) for s in self.sizes[1:]],
                "tmp": [np.empty((n, s), dt) for s in self.sizes[1:]],
                "rows": np.arange(n),
            }
            self._bufs = {n: bufs}  # keep one batch size's buffers
        return bufs

    # -- inference --------------------------------------------------------------

    def forward(self, X):
        a = X
        with np.errstate(over="ignore"):
            for W, b in zip(self.W, self.b):
                a = a @ W.T
                a += b
                _sigmoid_(a)
        return a

    def predict(self, X):
        return np.argmax(self.forward(X), axis=1)

    # -- training ---------------------------------------------------------------

    def train_steps(self, X, labels, index_batches, learning_rate=2.0):
        """One SGD step per row of index_batches (an (n_steps, B) int array)."""
        B = index_batches.shape[1]
        bufs = self._buffers(B)
        xb, yb, acts, deltas, tmp, rows = (bufs[k] for k in ("x", "y", "acts", "deltas", "tmp", "rows"))
        L = len(self.W)
        step = learning_rate / B
        with np.errstate(over="ignore"):
            for idx in index_batches:
                np.take(X, idx, axis=0, out=xb)
                yb.fill(0)
                yb[rows, labels[idx]] = 1
                a = xb
                for l in range(L):
                    np.matmul(a, self.W[l].T, out=acts[l])
                    acts[l] += self.b[l]
                    _sigmoid_(acts[l])
                    a = acts[l]
                # output delta: (a - y) * a * (1 - a)
                d = deltas[L - 1]
                np.subtract(a, yb, out=d)
                t = tmp[L - 1]
                np.subtract(1, a, out=t)
                t *= a
                d *= t
                for l in range(L - 1, -1, -1):
                    a_prev = acts[l - 1] if l > 0 else xb
                    if l > 0:  # delta below, from the weights before their update
                        dp = deltas[l - 1]
                        np.matmul(d, self.W[l], out=dp)
                        t = tmp[l - 1]
                        np.subtract(1, a_prev, out=t)
                        t *= a_prev
                        dp *= t
                    np.matmul(d.T, a_prev, out=self.gW[l])
                    np.sum(d, axis=0, out=self.gb[l])
                    self.gW[l] *= step
                    self.W[l] -= self.gW[l]
                    self.gb[l] *= step
                    self.b[l] -= self.gb[l]
                    d = deltas[l - 1] if l > 0 else None


class TorchMLP:
    def __init__(self, torch, weights, biases, dtype=np.float32):
        self.torch = torch
        tdt = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
        self.tdtype = tdt
        layers = []
        for w, b in zip(weights, biases):
            lin = torch.nn.Linear(w.shape[1], w.shape[0], dtype=tdt)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=dtype)))
                lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(b, dtype=dtype).reshape(-1)))
            layers += [lin, torch.nn.Sigmoid()]
        self.net = torch.nn.Sequential(*layers)
        self.opt = None
        self._data = None

    def set_data(self, X, labels, learning_rate=2.0):
        t = self.torch
        self.Xt = t.from_numpy(np.ascontiguousarray(X)).to(self.tdtype)
        self.Yt = t.nn.functional.one_hot(t.from_numpy(np.asarray(labels, dtype=np.int64)),
                                          self.net[-2].out_features).to(self.tdtype)
        self.opt = t.optim.SGD(self.net.parameters(), lr=learning_rate)

    def train_steps(self, index_batches):
        """One SGD step per row of index_batches (a torch int64 (n_steps, B) tensor)."""
        net, opt, Xt, Yt = self.net, self.opt, self.Xt, self.Yt
        B = index_batches.shape[1]
        for idx in index_batches:
            xb = Xt[idx]
            yb = Yt[idx]
            out = net(xb)
            loss = 0.5 * ((out - yb) ** 2).sum() / B
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def forward(self, X):
        with self.torch.no_grad():
            return self.net(X)

    def predict(self, X):
        with self.torch.no_grad():
            return self.net(X).argmax(dim=1)


class TorchClassifier:
    """A ReLU network with a softmax cross-entropy loss and any torch.optim
    optimizer: the eager PyTorch loop a user would write."""

    def __init__(self, torch, weights, biases, make_optimizer):
        self.torch = torch
        layers = []
        for l, (w, b) in enumerate(zip(weights, biases)):
            lin = torch.nn.Linear(w.shape[1], w.shape[0], dtype=torch.float32)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))
                lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32)))
            layers.append(lin)
            if l < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)
        linears = [m for m in self.net if isinstance(m, torch.nn.Linear)]
        # Weight decay on the weights only, as mlp applies it.
        self.opt = make_optimizer([{"params": [m.weight for m in linears]},
                                   {"params": [m.bias for m in linears], "weight_decay": 0.0}])

    def set_data(self, X, labels):
        self.Xt = self.torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.yt = self.torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def train_steps(self, index_batches):
        F = self.torch.nn.functional
        for idx in index_batches:
            loss = F.cross_entropy(self.net(self.Xt[idx]), self.yt[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
