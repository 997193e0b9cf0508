// meProp's backward on the CPU, compiled: the same rule as meprop/functional.py and
// meprop/lstm.py (their pure-PyTorch code is the reference the tests compare against).
//
// Why compiled: at the paper's small shapes (a batch of 10 images, one sentence) eager PyTorch
// spends tens of microseconds per operation, more than the sparse products themselves; at the
// parser's shape (10,000 x 500) a full sort-based top-k and a sort of the kept entries cost
// more than the products. Here selection is linear per row (a filter, then a search on the
// magnitudes' bit patterns: see topk_positions), and the products loop over the kept entries
// only, tiled so the rows they write stay in cache.
//
// Every function takes contiguous CPU tensors of one floating dtype (float or double); the
// Python side checks that and falls back to the reference otherwise.
//
// This file is the module (the functions Python calls); the parts are headers, each with one
// job: common.h (vectors, thread grain), selection.h (top-k), sparse_products.h (per-example's
// gathers and scatters), dense_products.h (unified's and the LSTM forward's register-tiled
// products), gradient_memory.h (a cache for large gradients), grad_buffer.h (persistent
// gradients), linear.h and lstm.h (the layers' backward and autograd Functions), rows_update.h
// (the optimizer on touched rows), dropout.h (dropout's mask from a counter-based hash). They
// are compiled as one unit, in that order, so that every
// call can be inlined; meprop/kernels/__init__.py hashes them into the build.

#include "dropout.h"
#include "linear.h"
#include "lstm.h"
#include "rows_update.h"
#include "selection.h"

namespace {

// Per-example selection alone: for each row of grad [rows, width], the columns of its k
// entries of largest magnitude (unordered). The tests compare it with torch.topk.
at::Tensor topk_columns(const at::Tensor& grad, int64_t k) {
  check_input(grad, "grad");
  TORCH_CHECK(grad.dim() == 2 && k >= 1 && k <= grad.size(1), "topk_columns: need 1 <= k <= width");
  const int64_t rows = grad.size(0), width = grad.size(1);
  auto columns = at::empty({rows, k}, grad.options().dtype(at::kLong));
  auto values = at::empty({rows, k}, grad.options());
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "topk_columns", [&] {
    select_rows(grad.data_ptr<scalar_t>(), rows, 1, width, k, columns.data_ptr<int64_t>(),
                values.data_ptr<scalar_t>());
  });
  return columns;
}

// What this build was compiled for: the vector instructions its tiles are sized for
// (common.h: avx512, avx2, neon or sse), the register width in bytes and their count.
std::tuple<std::string, int64_t, int64_t> isa() {
  return {MEPROP_ISA, kVectorBytes, kRegisters};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "meProp's backward on the CPU, compiled (see meprop/kernels/cpu.cpp)";
  module.def("linear", &linear);
  module.def("topk_columns", &topk_columns);
  module.def("isa", &isa);
  module.def("dropout", &dropout);
  module.def("lstm_layer", &lstm_layer);
  module.def("lstm_forward_directions", &lstm_forward_directions);
  module.def("touched_rows_adam", &touched_rows_adam);
  module.def("touched_rows_adagrad", &touched_rows_adagrad);
}
