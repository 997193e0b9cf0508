// Persistent weight gradients: which rows a buffer holds, and when a backward may write it.
// Part of meProp's compiled CPU kernels: included by cpu.cpp only, which is compiled as one
// unit (hence the unnamed namespace) so that every call can be inlined, which the register
// tiles of the products depend on.

#pragma once

#include "common.h"

namespace {

// A persistent weight gradient: ``tensor`` [out, in] is written in place, and ``nonzero``
// (uint8 [out]) marks its rows that may be non-zero, so only those are cleared (see
// MePropLinearFunction). Both undefined: a fresh gradient is allocated.
struct GradBuffer {
  at::Tensor tensor, nonzero;
  bool defined() const { return tensor.defined(); }
  char* rows() const {
    return defined() ? reinterpret_cast<char*>(nonzero.data_ptr<uint8_t>()) : nullptr;
  }
};

GradBuffer grad_buffer(const std::optional<at::Tensor>& tensor,
                       const std::optional<at::Tensor>& nonzero, const at::Tensor& weight) {
  if (!tensor.has_value()) return {};
  TORCH_CHECK(nonzero.has_value() && tensor->sizes() == weight.sizes() &&
                  tensor->dtype() == weight.dtype() && tensor->is_contiguous() &&
                  nonzero->scalar_type() == at::kByte && nonzero->numel() == weight.size(0),
              "the gradient buffer must match the weight");
  return {*tensor, *nonzero};
}

// True inside a plain ``backward()`` (no ``inputs=``, not ``autograd.grad``): only then may a
// backward write a parameter's ``.grad`` itself.
bool plain_backward() {
  const auto* exec_info = torch::autograd::get_current_graph_task_exec_info();
  return exec_info != nullptr && exec_info->empty();
}

// ``buffer`` if this backward may write it as ``weight``'s .grad: the gradient is needed, this
// is a plain backward(), and the weight is a leaf with no gradient yet (a non-leaf weight's
// gradient must flow on to what computed it). Otherwise none, and a buffer it cannot use is
// marked wholly stale: it may be .grad and accumulate anything now.
GradBuffer writable_buffer(const GradBuffer& buffer, const at::Tensor& weight, bool need) {
  if (!buffer.defined() || !need) return {};
  if (plain_backward() && weight.is_leaf() && !weight.grad().defined()) return buffer;
  buffer.nonzero.fill_(1);
  return {};
}

}  // namespace
