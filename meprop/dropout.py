"""Dropout whose mask on the CPU comes from the compiled kernels' counter-based hash.

torch's CPU dropout draws its mask from one sequential generator: at the parser's hidden
layers (10,000 x 500, twice a step) that took longer than meProp's whole backward, the same
for dense and meProp training. Here each element's keep/drop is a hash of its index and a seed
drawn from torch's generator, so ``torch.manual_seed`` (the trainers' ``--seed``) still fixes
every mask, and the kernel runs on every thread and vector lane. The masks differ from
``nn.Dropout``'s for the same seed; their distribution is the same (each element kept with
probability 1 - p, scaled by 1 / (1 - p)). On other devices, without the kernels, in eval mode
or with p = 0 it is ``F.dropout``.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from meprop import kernels


class _HashDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, p, seed, module):
        output, mask = module.dropout(input, p, seed)
        ctx.save_for_backward(mask)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        (mask,) = ctx.saved_tensors
        return grad_output * mask, None, None, None


def dropout(input, p=0.5, training=True, generator=None):
    """``F.dropout(input, p, training)``, with the mask from the compiled kernels on the CPU
    (see the module docstring); the seed of each call comes from ``generator`` (default: torch's
    default CPU generator)."""
    if not training or p == 0:
        return input
    module = kernels.usable(input)
    if module is None or not 0 < p < 1:
        return F.dropout(input, p, training)
    seed = int(torch.randint(-2**63, 2**63 - 1, (), dtype=torch.int64, generator=generator))
    return _HashDropout.apply(input, float(p), seed, module)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with :func:`dropout`'s mask on the CPU (no parameters: state dicts are
    unchanged)."""

    def forward(self, input):
        if self.inplace:
            return super().forward(input)
        return dropout(input, self.p, self.training)
