// The meProp linear layer: its backward (per-example and unified) and its C++ autograd Function.
// Part of meProp's compiled CPU kernels: included by cpu.cpp only, which is compiled as one
// unit (hence the unnamed namespace) so that every call can be inlined, which the register
// tiles of the products depend on.

#pragma once

#include "dense_products.h"
#include "grad_buffer.h"
#include "gradient_memory.h"
#include "selection.h"
#include "sparse_products.h"

namespace {

// Per-example meProp backward of y = x W^T + b: returns (grad_input or an empty tensor,
// grad_weight or an empty tensor, rows of W touched).
std::tuple<at::Tensor, at::Tensor, int64_t> linear_backward_per_example(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, int64_t k,
    bool need_input, bool need_weight, const GradBuffer& buffer = {}) {
  check_input(grad_output, "grad_output");
  check_input(input, "input");
  check_input(weight, "weight");
  const int64_t batch = grad_output.size(0), out = weight.size(0), in = weight.size(1);
  TORCH_CHECK(k > 0 && k <= out, "k must be in [1, out_features]");
  auto columns = at::empty({batch, k}, grad_output.options().dtype(at::kLong));
  auto values = at::empty({batch, k}, grad_output.options());
  at::Tensor grad_input, grad_weight;
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "linear_backward_per_example", [&] {
    select_rows(grad_output.data_ptr<scalar_t>(), batch, 1, out, k,
                columns.data_ptr<int64_t>(), values.data_ptr<scalar_t>());
    if (need_input) {
      grad_input = gradient_empty({batch, in}, grad_output.options());
      gather_rows_sum(columns.data_ptr<int64_t>(), values.data_ptr<scalar_t>(), batch, k,
                      weight.data_ptr<scalar_t>(), out, in, grad_input.data_ptr<scalar_t>());
    }
    if (need_weight) {
      grad_weight =
          buffer.defined() ? buffer.tensor : gradient_empty({out, in}, grad_output.options());
      scatter_rows_sum(columns.data_ptr<int64_t>(), values.data_ptr<scalar_t>(), batch, k,
                       input.data_ptr<scalar_t>(), in, out, grad_weight.data_ptr<scalar_t>(),
                       buffer.rows());
    }
  });
  const int64_t touched = count_touched(columns.data_ptr<int64_t>(), batch * k, out);
  return {grad_input, grad_weight, touched};
}

// Unified meProp backward: one k-set for the batch; the products are small dense ones (above).
// Returns (grad_input, grad_weight, grad_bias), each empty unless asked for.
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward_unified(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, int64_t k,
    bool need_input, bool need_weight, bool need_bias, const GradBuffer& buffer = {}) {
  check_input(grad_output, "grad_output");
  check_input(input, "input");
  check_input(weight, "weight");
  const int64_t batch = grad_output.size(0), out = weight.size(0), in = weight.size(1);
  TORCH_CHECK(k > 0 && k <= out, "k must be in [1, out_features]");
  const int64_t padded = (k + kJ - 1) / kJ * kJ;  // the weight product takes kJ columns at once
  const auto options = grad_output.options();
  // Scratch in plain vectors: an at::empty costs about a microsecond, MNIST's whole backward
  // some tens of them.
  std::vector<int64_t> columns(k);
  const int64_t* cols = columns.data();
  at::Tensor grad_input, grad_weight, grad_bias;
  if (need_bias) grad_bias = at::empty({out}, options);
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "linear_backward_unified", [&] {
    using T = scalar_t;
    std::vector<T> kept(batch * padded);
    select_shared(grad_output.data_ptr<T>(), batch, 1, out, k, columns.data(),
                  need_bias ? grad_bias.data_ptr<T>() : nullptr);
    gather_columns(grad_output.data_ptr<T>(), batch, out, cols, k, padded, kept.data());
    if (need_input) {
      std::vector<const T*> rows(k);  // the k kept rows of the weight, read where they are
      for (int64_t j = 0; j < k; ++j) rows[j] = weight.data_ptr<T>() + cols[j] * in;
      grad_input = gradient_empty({batch, in}, options);
      kept_product(kept.data(), batch, padded, k, RowPointers<T>{rows.data()}, in,
                   grad_input.data_ptr<T>());
    }
    if (!need_weight) return;
    // Rows not selected now are cleared (with a persistent buffer: only those written last
    // time); the product writes the k selected rows in place, the padding columns' rows into
    // scratch.
    std::vector<char> selected(out, 0);
    for (int64_t j = 0; j < k; ++j) selected[cols[j]] = 1;
    grad_weight = buffer.defined() ? buffer.tensor : gradient_empty({out, in}, options);
    T* target = grad_weight.data_ptr<T>();
    const char* nonzero = buffer.defined() ? buffer.rows() : nullptr;
    for (int64_t r = 0; r < out; ++r)
      if (!selected[r] && (nonzero == nullptr || nonzero[r]))
        std::memset(target + r * in, 0, in * sizeof(T));
    std::vector<T> padding((padded - k) * in);
    std::vector<T*> rows(padded);
    for (int64_t j = 0; j < padded; ++j)
      rows[j] = j < k ? target + cols[j] * in : padding.data() + (j - k) * in;
    transposed_product(kept.data(), batch, padded, input.data_ptr<T>(), in, rows.data());
    if (buffer.defined()) std::memcpy(buffer.rows(), selected.data(), out);
  });
  return {grad_input, grad_weight, grad_bias};
}

// grad.sum(0) for a [rows, n] gradient: a plain loop where it is small (at MNIST's batch of
// 10 ATen's reduction costs several microseconds of setup for 5,000 additions).
at::Tensor bias_gradient(const at::Tensor& grad) {
  const int64_t rows = grad.size(0), n = grad.size(1);
  if (rows * n > kParallelWork) return grad.sum(0);
  auto sums = at::zeros({n}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "bias_gradient", [&] {
    for (int64_t r = 0; r < rows; ++r)
      add_row(grad.data_ptr<scalar_t>() + r * n, n, sums.data_ptr<scalar_t>());
  });
  return sums;
}

// The whole meProp linear as one C++ autograd Function: the forward is at::linear, the backward
// one of the two above. Why: at MNIST's shapes (a batch of 10) a Python autograd Function costs
// about as much per call as the sparse products themselves, in the forward and again in the
// backward. Returns (output, touched): ``touched`` is a 0-d int64 tensor, -1 until the backward
// has run, then the number of weight rows it updated.
//
// With a persistent buffer (``buffer``, ``nonzero``; the Python option ``persistent_grad``) the
// weight gradient is not allocated and mostly zero-filled per step: when the weight has no
// gradient yet (after ``zero_grad(set_to_none=True)``) and this is a plain ``backward()``, the
// buffer's stale rows are cleared, the new rows written, and the buffer becomes ``weight.grad``
// directly. Otherwise (a gradient to accumulate into, ``autograd.grad``, ``backward(inputs=)``)
// the ordinary path runs and the buffer is marked as wholly stale.
class MePropLinearFunction : public torch::autograd::Function<MePropLinearFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, at::Tensor input, at::Tensor weight,
      std::optional<at::Tensor> bias, int64_t k, bool unified,
      std::optional<at::Tensor> buffer, std::optional<at::Tensor> nonzero) {
    ctx->save_for_backward({input, weight});
    // Without a bias there is no third graph input: needs_input_grad(2) would not exist.
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["k"] = k;
    ctx->saved_data["unified"] = unified;
    if (buffer.has_value() && nonzero.has_value()) {
      ctx->saved_data["buffer"] = *buffer;
      ctx->saved_data["nonzero"] = *nonzero;
    }
    auto touched = at::full({}, -1, input.options().dtype(at::kLong));
    ctx->saved_data["touched"] = touched;
    ctx->mark_non_differentiable({touched});
    ctx->set_materialize_grads(false);  // no zero gradient for ``touched`` to allocate
    return {at::linear(input, weight, bias), touched};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    // The products below are not recorded by autograd, so a second derivative would be
    // silently wrong: refuse it, as once_differentiable does on the Python side.
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "meProp's backward is not differentiable (create_graph=True is not supported)");
    const auto saved = ctx->get_saved_variables();
    const auto& input = saved[0];
    auto weight = saved[1];  // a leaf is saved as itself: its .grad is the parameter's
    const int64_t k = ctx->saved_data["k"].toInt();
    const bool unified = ctx->saved_data["unified"].toBool();
    auto touched = ctx->saved_data["touched"].toTensor();
    if (!grads[0].defined())  // the output was not used: nothing flows back
      return torch::autograd::variable_list(7);
    const auto grad_output = grads[0].contiguous();
    const bool need_input = ctx->needs_input_grad(0), need_weight = ctx->needs_input_grad(1),
               need_bias = ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2);
    GradBuffer buffer;
    if (ctx->saved_data.count("buffer"))
      buffer = writable_buffer(
          {ctx->saved_data["buffer"].toTensor(), ctx->saved_data["nonzero"].toTensor()}, weight,
          need_weight);
    at::Tensor grad_input, grad_weight, grad_bias;
    if (unified) {
      std::tie(grad_input, grad_weight, grad_bias) = linear_backward_unified(
          grad_output, input.contiguous(), weight.contiguous(), k, need_input, need_weight,
          need_bias, buffer);
      *touched.data_ptr<int64_t>() = std::min(k, weight.size(0));  // fill_ costs a dispatch
    } else {
      int64_t rows = 0;
      std::tie(grad_input, grad_weight, rows) = linear_backward_per_example(
          grad_output, input.contiguous(), weight.contiguous(), k, need_input, need_weight,
          buffer);
      *touched.data_ptr<int64_t>() = rows;
    }
    if (buffer.defined()) {
      weight.mutable_grad() = buffer.tensor;
      grad_weight = at::Tensor();  // already in place: nothing for AccumulateGrad to add
    }
    if (need_bias && !unified) grad_bias = bias_gradient(grad_output);
    return {grad_input, grad_weight, grad_bias, at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> linear(const at::Tensor& input, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias, int64_t k,
                                          bool unified, const std::optional<at::Tensor>& buffer,
                                          const std::optional<at::Tensor>& nonzero) {
  TORCH_CHECK(k > 0 && k <= weight.size(0), "k must be in [1, out_features]");
  grad_buffer(buffer, nonzero, weight);  // checks it
  auto outputs = MePropLinearFunction::apply(input, weight, bias, k, unified, buffer, nonzero);
  return {outputs[0], outputs[1]};
}

}  // namespace
