"""Tiny PyTorch models on 8x8 digits for the adapter tests (seconds on CPU, seeded): an MLP and a
CNN, the architecture factories the safe loader is pointed at (``helpers_torch:digits_cnn``)."""

from __future__ import annotations

import numpy as np


def digits_mlp(seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))


def digits_cnn(seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


def train(net, X, y, *, epochs: int = 60, seed: int = 0, input_shape=(64,)):
    """Full-batch Adam on flat rows reshaped to ``input_shape``; single-threaded, seeded."""
    import torch

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Xt = torch.from_numpy(np.asarray(X, dtype=np.float32).reshape(-1, *input_shape))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        net.train()
        for _ in range(epochs):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt), yt).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def torch_cnn_model(X, y, seed: int = 0, epochs: int = 80):
    """A :class:`TorchModel` of :func:`digits_cnn` trained on ``(X, y)``."""
    from kizashi.detectors.models import TorchModel

    net = train(digits_cnn(seed), X, y, epochs=epochs, seed=seed, input_shape=(1, 8, 8))
    return TorchModel(net, input_shape=(1, 8, 8))
