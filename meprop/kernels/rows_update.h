// The optimizer step on the rows meProp touched (Adam, AdaGrad).
// Part of meProp's compiled CPU kernels: included by cpu.cpp only, which is compiled as one
// unit (hence the unnamed namespace) so that every call can be inlined, which the register
// tiles of the products depend on.

#pragma once

#include "common.h"

namespace {

// The optimizer step on the rows meProp touched (meprop/optim.py has the same rule in PyTorch
// ops): each listed row of ``param`` and its state updated in one pass, instead of a dense step
// over every row. The per-row loops are functions of their own, with restrict pointers passed
// by value: inside the dispatch lambdas (captures by reference) GCC did not vectorise them.
struct AdamHyper {
  double lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2_sqrt;
};

template <typename T>
void adam_row(T* __restrict__ weights, const T* __restrict__ gradient, T* __restrict__ first,
              T* __restrict__ second, int64_t width, const AdamHyper& hyper) {
  const T b1 = hyper.beta1, b2 = hyper.beta2, decay = hyper.weight_decay, epsilon = hyper.eps,
          step_size = hyper.lr / hyper.bias_correction1,
          inverse_correction2 = 1 / hyper.bias_correction2_sqrt;
  for (int64_t j = 0; j < width; ++j) {
    const T g = gradient[j] + decay * weights[j];
    first[j] += (1 - b1) * (g - first[j]);
    second[j] = b2 * second[j] + (1 - b2) * g * g;
    weights[j] -= step_size * first[j] / (std::sqrt(second[j]) * inverse_correction2 + epsilon);
  }
}

template <typename T>
void adagrad_row(T* __restrict__ weights, const T* __restrict__ gradient, T* __restrict__ squares,
                 int64_t width, T rate, T epsilon, T decay) {
  for (int64_t j = 0; j < width; ++j) {
    const T g = gradient[j] + decay * weights[j];
    squares[j] += g * g;
    weights[j] -= rate * g / (std::sqrt(squares[j]) + epsilon);
  }
}

void check_rows_update(std::initializer_list<at::Tensor> tensors, const at::Tensor& rows) {
  const auto& param = *tensors.begin();
  TORCH_CHECK(param.dim() == 2, "the row update takes a weight matrix");
  for (const auto& tensor : tensors) {
    check_input(tensor, "the row update's tensors");
    TORCH_CHECK(tensor.sizes() == param.sizes() && tensor.scalar_type() == param.scalar_type(),
                "the row update's tensors must match the weight");
  }
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.dim() == 1 && rows.is_contiguous(),
              "rows must be int64 [n]");
}

void touched_rows_adam(at::Tensor param, const at::Tensor& grad, at::Tensor exp_avg,
                       at::Tensor exp_avg_sq, const at::Tensor& rows, double lr, double beta1,
                       double beta2, double eps, double weight_decay, double bias_correction1,
                       double bias_correction2_sqrt) {
  check_rows_update({param, grad, exp_avg, exp_avg_sq}, rows);
  const int64_t n = rows.numel(), width = param.size(1);
  const int64_t* row_ids = rows.data_ptr<int64_t>();
  const AdamHyper hyper{lr, beta1, beta2, eps, weight_decay, bias_correction1,
                        bias_correction2_sqrt};
  AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "touched_rows_adam", [&] {
    scalar_t* weights = param.data_ptr<scalar_t>();
    const scalar_t* gradient = grad.data_ptr<scalar_t>();
    scalar_t* first = exp_avg.data_ptr<scalar_t>();
    scalar_t* second = exp_avg_sq.data_ptr<scalar_t>();
    at::parallel_for(0, n, std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t offset = row_ids[i] * width;
        adam_row(weights + offset, gradient + offset, first + offset, second + offset, width,
                 hyper);
      }
    });
  });
}

void touched_rows_adagrad(at::Tensor param, const at::Tensor& grad, at::Tensor sum,
                          const at::Tensor& rows, double lr, double eps, double weight_decay) {
  check_rows_update({param, grad, sum}, rows);
  const int64_t n = rows.numel(), width = param.size(1);
  const int64_t* row_ids = rows.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "touched_rows_adagrad", [&] {
    scalar_t* weights = param.data_ptr<scalar_t>();
    const scalar_t* gradient = grad.data_ptr<scalar_t>();
    scalar_t* squares = sum.data_ptr<scalar_t>();
    at::parallel_for(0, n, std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t offset = row_ids[i] * width;
        adagrad_row<scalar_t>(weights + offset, gradient + offset, squares + offset, width, lr,
                              eps, weight_decay);
      }
    });
  });
}

}  // namespace
