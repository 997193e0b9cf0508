"""Adam and AdaGrad that update only the weight rows meProp's backward touched.

meProp's backward writes k rows of each weight gradient per example; the rest are zeros. A dense
optimizer still reads and writes every row of the weight and its state each step, which at
MNIST's batch of 10 costs more than meProp's whole backward. These optimizers take the rows a
layer's persistent gradient buffer (``persistent_grad=True``) wrote in this step and update those
rows alone; every other parameter, and any weight whose touched rows are unknown this step (no
buffer, or a gradient that was accumulated), gets the ordinary fused update.

* AdaGrad (no weight decay, no learning-rate decay): exact. A zero gradient row leaves both its
  squared-gradient sum and its weights unchanged, so skipping it changes nothing.
* Adam: "lazy" Adam, as ``torch.optim.SparseAdam``: untouched rows keep their moments and
  weights, instead of moving on their decaying momentum. That is an approximation of Adam, and it
  is what updating only the touched rows (the paper's "1-4 % of the weights per step") means.
  Weight decay, if any, applies to the touched rows only.

The state (``exp_avg``, ``exp_avg_sq``, ``sum``, ``step``) has torch's layout, so
``state_dict``/``load_state_dict`` and resuming work as for ``torch.optim.Adam``/``Adagrad``.
"""

import math

import torch

from meprop import kernels


def touched_weights(model):
    """``{weight: GradBuffer}`` for every meProp layer of ``model`` with persistent gradients."""
    from meprop.nn import LSTM, Linear

    buffers = {}
    for module in model.modules():
        if isinstance(module, Linear) and module.persistent_grad:
            buffers[module.weight] = module._grad_buffer
        elif isinstance(module, LSTM) and module.persistent_grad:
            for index, (buffer_ih, buffer_hh) in enumerate(module._grad_buffers):
                layer, direction = divmod(index, module._directions)
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                buffers[getattr(module, "weight_ih" + suffix)] = buffer_ih
                buffers[getattr(module, "weight_hh" + suffix)] = buffer_hh
    return buffers


class _TouchedRowsMixin:
    """``step()``: the touched rows of the buffered weights by hand, the rest by torch's step
    (their gradients hidden from it meanwhile)."""

    def _init_buffers(self, buffers):
        self._buffers = dict(buffers)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("a closure is not supported")
        hidden = []
        for group in self.param_groups:
            for param in group["params"]:
                buffer = self._buffers.get(param)
                rows = None if buffer is None else buffer.written_rows(param)
                if rows is not None:
                    self._update_rows(param, rows, group)
                    hidden.append((param, param.grad))
                    param.grad = None
        try:
            super().step()
        finally:
            for param, grad in hidden:
                param.grad = grad
        return None


class TouchedRowsAdam(_TouchedRowsMixin, torch.optim.Adam):
    """Lazy Adam on the rows meProp touched (see the module docstring); ``buffers`` is
    :func:`touched_weights` of the model. Other arguments as ``torch.optim.Adam``."""

    def __init__(self, params, buffers, **kwargs):
        super().__init__(params, **kwargs)
        self._init_buffers(buffers)
        if any(group["amsgrad"] or group["maximize"] for group in self.param_groups):
            raise ValueError("TouchedRowsAdam supports neither amsgrad nor maximize")

    def _update_rows(self, param, rows, group):
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"].item()
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
        kernel = _kernel_for(param, state["exp_avg"], state["exp_avg_sq"])
        if kernel is not None:
            kernel.touched_rows_adam(param, param.grad, state["exp_avg"], state["exp_avg_sq"],
                                     rows, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                                     bias_correction2_sqrt)
            return
        grad = param.grad.index_select(0, rows)
        weights = param.index_select(0, rows)
        if weight_decay:
            grad = grad.add(weights, alpha=weight_decay)
        exp_avg = state["exp_avg"].index_select(0, rows).lerp_(grad, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(
            grad, grad, value=1 - beta2)
        denominator = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        weights.addcdiv_(exp_avg, denominator, value=-lr / bias_correction1)
        param.index_copy_(0, rows, weights)
        state["exp_avg"].index_copy_(0, rows, exp_avg)
        state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)


class TouchedRowsAdagrad(_TouchedRowsMixin, torch.optim.Adagrad):
    """AdaGrad on the rows meProp touched: exact without weight or learning-rate decay (see the
    module docstring). Other arguments as ``torch.optim.Adagrad``."""

    def __init__(self, params, buffers, **kwargs):
        super().__init__(params, **kwargs)
        self._init_buffers(buffers)
        if any(group["maximize"] for group in self.param_groups):
            raise ValueError("TouchedRowsAdagrad does not support maximize")

    def _update_rows(self, param, rows, group):
        state = self.state[param]  # torch's Adagrad creates it in __init__
        state["step"] += 1
        step = state["step"].item()
        lr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        kernel = _kernel_for(param, state["sum"])
        if kernel is not None:
            kernel.touched_rows_adagrad(param, param.grad, state["sum"], rows, lr, group["eps"],
                                        group["weight_decay"])
            return
        grad = param.grad.index_select(0, rows)
        weights = param.index_select(0, rows)
        if group["weight_decay"]:
            grad = grad.add(weights, alpha=group["weight_decay"])
        squared_sum = state["sum"].index_select(0, rows).addcmul_(grad, grad, value=1)
        weights.addcdiv_(grad, squared_sum.sqrt().add_(group["eps"]), value=-lr)
        param.index_copy_(0, rows, weights)
        state["sum"].index_copy_(0, rows, squared_sum)


def _kernel_for(param, *state):
    """The compiled module when it can update these tensors in place (CPU, one float dtype,
    contiguous weight matrices), else None: the PyTorch ops above do it."""
    tensors = (param, param.grad, *state)
    if param.dim() != 2 or not all(tensor.is_contiguous() for tensor in tensors):
        return None
    return kernels.usable(*tensors)
