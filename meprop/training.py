"""Pieces every trainer shares: device, seeding, optimizers, backprop timing, metrics JSON."""

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from data.atomic import write_text_atomic

OPTIMIZERS = ("adam", "adagrad")


def resolve_device(name):
    """``auto`` -> cuda when available, else cpu. Resolved once, then passed around."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(name, parameters, lr, adagrad_eps=1e-10, weight_decay=0.0, buffers=None):
    """Adam or AdaGrad. On the CPU their fused implementations: the same update in one
    vectorised pass over each parameter, which at small batches is the largest part of a
    training step otherwise (the MNIST MLP's Adam step: 7.8 ms per-tensor, 0.5 ms fused).

    ``buffers`` (``meprop.optim.touched_weights(model)``): update only the rows meProp touched
    in those weights (:mod:`meprop.optim`; exact for AdaGrad, lazy Adam for Adam)."""
    from meprop.optim import TouchedRowsAdagrad, TouchedRowsAdam

    parameters = list(parameters)
    fused = all(p.device.type == "cpu" for p in parameters) or None
    if name == "adam":
        if buffers:
            return TouchedRowsAdam(parameters, buffers, lr=lr, weight_decay=weight_decay,
                                   fused=fused)
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "adagrad":
        if buffers:
            return TouchedRowsAdagrad(parameters, buffers, lr=lr, eps=adagrad_eps,
                                      weight_decay=weight_decay, fused=fused)
        return torch.optim.Adagrad(parameters, lr=lr, eps=adagrad_eps, weight_decay=weight_decay,
                                   fused=fused)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BackpropClock:
    """Runs ``loss.backward()`` and adds its wall time (device-synchronised) to ``seconds``."""

    def __init__(self, device):
        self.device = device
        self.seconds = 0.0

    def backward(self, loss):
        synchronize(self.device)
        start = time.perf_counter()
        loss.backward()
        synchronize(self.device)
        self.seconds += time.perf_counter() - start


def write_metrics_json(path, metrics):
    """A flat JSON object; refuses nested values and NaN so consumers can trust it."""
    for key, value in metrics.items():
        if isinstance(value, (dict, list)):
            raise ValueError(f"metrics must be flat; {key!r} is {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metric {key!r} is {value}")
    write_text_atomic(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def resume_path(out):
    """Where a trainer keeps the training state (model, optimizer, epoch) beside ``out``."""
    return Path(str(out) + ".resume")


def save_training_state(out, payload, optimizer, epoch, best, train_seconds, backprop_seconds,
                        extra=None):
    """Write ``out.resume``: the model ``payload`` plus what ``--resume`` needs to go on
    (and ``extra``, a dict of further plain data, such as a weight average)."""
    save_checkpoint(resume_path(out), {
        **payload, "optimizer": optimizer.state_dict(), "epoch": epoch, "best": best,
        "train_seconds": train_seconds, "backprop_seconds": backprop_seconds, **(extra or {})})


def restore_training_state(state, model, optimizer):
    """Load a state written by :func:`save_training_state` into ``model`` and ``optimizer``;
    returns ``(first_epoch, best, train_seconds, backprop_seconds)``."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return (state["epoch"] + 1, state["best"], state["train_seconds"],
            state["backprop_seconds"])


def save_checkpoint(path, payload):
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a file.

    ``payload`` must be plain data (tensors, dicts, lists, numbers, strings), so that
    :func:`load_checkpoint` can use ``weights_only=True``.
    """
    from data.atomic import atomic_path

    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_checkpoint(path):
    """Load a checkpoint safely (``weights_only=True``: no code runs from the file)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # pickle/zip errors: a clear message rather than a traceback
        raise ValueError(f"{path}: not a readable meprop checkpoint "
                         f"({_load_failure(error)})") from None


def _load_failure(error):
    """One line on why ``torch.load`` failed: its weights-only refusal is a paragraph of advice
    on loading untrusted files, which is not what a user of a wrong file needs."""
    text = str(error)
    if "Weights only load failed" in text:
        return "it holds more than tensors and plain data, or is not a torch file"
    return text.splitlines()[0] if text.strip() else type(error).__name__


def train_epoch(model, inputs, targets, order, batch_size, optimizer, clock, desc="",
                progress=True, transform=None, after_step=None):
    """One pass of cross-entropy training over ``inputs[order]`` in minibatches.

    ``transform(batch_inputs)``, if given, returns the inputs a step trains on (e.g. word
    dropout); ``after_step()`` runs after each optimizer step (e.g. a weight average).
    Returns ``(last_loss, touched_sum, steps)``: the last minibatch's loss, the sum over steps
    of the fraction of meProp weight rows each backward touched, and the number of steps.
    """
    from tqdm import tqdm

    from meprop.stats import rows_touched

    model.train()
    touched_sum, steps, loss = 0.0, 0, None
    for batch in tqdm(order.split(batch_size), desc=desc, disable=not progress, leave=False):
        batch_inputs = inputs[batch] if transform is None else transform(inputs[batch])
        loss = torch.nn.functional.cross_entropy(model(batch_inputs), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        clock.backward(loss)
        optimizer.step()
        if after_step is not None:
            after_step()
        touched_sum += rows_touched(model) or 0.0
        steps += 1
    return loss, touched_sum, steps
