"""The sanity task: an MLP on MNIST trained with meProp (Sun et al., 2017, section 4)."""

import copy
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from meprop.dropout import Dropout
from meprop.nn import Linear, use_persistent_grad
from meprop.optim import touched_weights
from meprop.training import (
    BackpropClock,
    make_optimizer,
    seed_everything,
    synchronize,
    train_epoch,
)

DEV_SIZE = 5000  # the first 5,000 training images are the dev set
DEFAULT_LR = {"adam": 0.001, "adagrad": 0.1}


@dataclass
class MLPConfig:
    in_features: int = 784
    hidden: int = 500
    layers: int = 2  # hidden layers
    classes: int = 10
    k: int = None
    mode: str = "per_example"
    selection: str = "topk"
    dropout: float = 0.0


class MLP(nn.Module):
    """ReLU MLP whose hidden and output layers are ``meprop.Linear`` with the same k."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        widths = [config.in_features] + [config.hidden] * config.layers + [config.classes]
        self.linears = nn.ModuleList(
            Linear(n_in, n_out, k=config.k, mode=config.mode, selection=config.selection)
            for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.dropout = Dropout(config.dropout)

    def forward(self, images):
        """``images [batch, in_features]`` float -> logits ``[batch, classes]``."""
        hidden = images
        for linear in self.linears[:-1]:
            hidden = self.dropout(F.relu(linear(hidden)))
        return self.linears[-1](hidden)


def prepare(tensors, device):
    """Pixels scaled to [0, 1] (as the authors' code does), flattened; dev split off train."""
    def images(key):
        return (tensors[key].reshape(len(tensors[key]), -1).float() / 255.0).to(device)

    train_images, train_labels = images("train_images"), tensors["train_labels"].long().to(device)
    return {
        "train": (train_images[DEV_SIZE:], train_labels[DEV_SIZE:]),
        "dev": (train_images[:DEV_SIZE], train_labels[:DEV_SIZE]),
        "test": (images("test_images"), tensors["test_labels"].long().to(device)),
    }


@torch.no_grad()
def accuracy(model, images, labels, batch_size=1000):
    model.eval()
    correct = sum(
        (model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
        for i in range(0, len(images), batch_size)
    )
    return 100.0 * correct / len(images)


def train_mnist(config, tensors, epochs=20, batch_size=10, optimizer="adam", lr=None, seed=1,
                device=torch.device("cpu"), progress=True, limit=None, persistent_grad=False,
                sparse_update=False):
    """Train, keep the epoch with the best dev accuracy, report its test accuracy.

    ``tensors`` is what ``data.mnist.load`` returns; ``limit`` keeps only the first training
    examples (tests use it); ``persistent_grad`` gives the meProp layers persistent gradient
    buffers (``meprop.Linear``); ``sparse_update`` also has the optimizer update only the rows
    they touched (:mod:`meprop.optim`). Returns a flat metrics dict (accuracies in %, times in s).
    """
    seed_everything(seed)
    splits = prepare(tensors, device)
    train_images, train_labels = splits["train"]
    if limit:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
    model = MLP(config).to(device)
    use_persistent_grad(model, persistent_grad or sparse_update)
    opt = make_optimizer(optimizer, model.parameters(), lr or DEFAULT_LR[optimizer],
                         buffers=touched_weights(model) if sparse_update else None)
    clock = BackpropClock(device)
    shuffle = torch.Generator().manual_seed(seed)
    best = {"dev_accuracy": -1.0}
    touched_sum, steps = 0.0, 0
    synchronize(device)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train_images), generator=shuffle).to(device)
        _, epoch_touched, epoch_steps = train_epoch(
            model, train_images, train_labels, order, batch_size, opt, clock,
            desc=f"epoch {epoch}/{epochs}", progress=progress)
        touched_sum += epoch_touched
        steps += epoch_steps
        dev = accuracy(model, *splits["dev"])
        if progress:
            tqdm.write(f"epoch {epoch}: dev accuracy {dev:.2f}%")
        if dev > best["dev_accuracy"]:
            best = {"dev_accuracy": dev, "best_epoch": epoch,
                    "state": copy.deepcopy(model.state_dict())}
    synchronize(device)
    train_seconds = time.perf_counter() - start
    model.load_state_dict(best["state"])
    return {
        "dev_accuracy": best["dev_accuracy"],
        "test_accuracy": accuracy(model, *splits["test"]),
        "best_epoch": best["best_epoch"],
        "epochs": epochs,
        "train_seconds": train_seconds,
        "backprop_seconds": clock.seconds,
        "rows_touched": touched_sum / max(steps, 1),
        "k_ratio": model.linears[0].k_ratio,
        "threads": torch.get_num_threads(),
        "sparse_update": sparse_update,
        "device": str(device),
        **{f"config_{key}": value for key, value in asdict(config).items() if value is not None},
    }
