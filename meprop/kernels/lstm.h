// The meProp LSTM layer: forward, back propagation through time, and its C++ autograd Function.
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

// out[j] = addend[j] + h . weight[j] for j < n, with h [k] one hidden state and weight [n, k]
// as stored: J rows of the weight at a time, each streamed once, h staying in L1.
template <typename T>
void recurrent_dot_rows(const T* h, int64_t k, const T* weight, const T* addend, T* out,
                        int64_t j_begin, int64_t j_end) {
  constexpr int64_t L = WideVector<T>::lanes, J = 4;
  const int64_t whole = k / L * L;
  const auto finish = [&](int64_t j, T sum) {
    for (int64_t c = whole; c < k; ++c) sum += h[c] * weight[j * k + c];
    out[j] = addend[j] + sum;
  };
  int64_t j = j_begin;
  for (; j + J <= j_end; j += J) {
    Wide<T> acc[J] = {};
    for (int64_t c = 0; c < whole; c += L) {
      const Wide<T> state = load_wide(h + c);
#pragma GCC unroll 4
      for (int64_t q = 0; q < J; ++q) acc[q] += load_wide(weight + (j + q) * k + c) * state;
    }
    for (int64_t q = 0; q < J; ++q) finish(j + q, lane_sum<T>(acc[q]));
  }
  for (; j < j_end; ++j) {
    Wide<T> acc = {};
    for (int64_t c = 0; c < whole; c += L)
      acc += load_wide(weight + j * k + c) * load_wide(h + c);
    finish(j, lane_sum<T>(acc));
  }
}

// recurrent_product for a step of one row (a batch of one sentence, the paper's tagger), from
// the weight as it is stored: no transposed copy. Each step streams the whole weight either
// way, but the copy (4 MB per direction and forward at the tagger's shape) is written to rows
// 8 KB apart, which share cache sets, and pushes the backward's data out of cache. A/B of the
// BiLSTM layer at one sentence (3 runs): forward 4.2-4.9 -> 3.9-4.4 ms, the backward after it
// 0.93-1.02 -> 0.84-0.94 ms. With 2-8 rows the lane sums (one per output and row) made the
// forward 15-60 % slower than the tiled product.
template <typename T>
void recurrent_dot(const T* h, int64_t k, const T* weight, int64_t n, const T* addend, T* out) {
  at::parallel_for(0, n, grain_for(kTiledParallelWork, k), [&](int64_t begin, int64_t end) {
    recurrent_dot_rows(h, k, weight, addend, out, begin, end);
  });
}

// The first packed row of each time step (time order).
std::vector<int64_t> step_starts(const std::vector<int64_t>& batch_sizes) {
  std::vector<int64_t> starts(batch_sizes.size());
  int64_t total = 0;
  for (size_t t = 0; t < batch_sizes.size(); ++t) {
    starts[t] = total;
    total += batch_sizes[t];
  }
  return starts;
}

// The element-wise loops of one row of one time step, as functions of their own taking restrict
// pointers by value: written inline in the dispatch lambdas (whose pointers are captured by
// reference) GCC did not vectorise them.

// Gate pre-activation gradients ``d`` [4H] (i, f, g, o) of one row from its activations ``a``,
// tanh of its cell, its output gradient and the recurrent dh, dc (dc carried to the step before).
template <typename T>
void gate_grads(const T* __restrict__ a, const T* __restrict__ tanh_cell,
                const T* __restrict__ grad_output, const T* __restrict__ c_prev,
                const T* __restrict__ dh, T* __restrict__ dc, T* __restrict__ d, int64_t hidden) {
  for (int64_t u = 0; u < hidden; ++u) {
    const T i = a[u], f = a[hidden + u], g = a[2 * hidden + u], o = a[3 * hidden + u];
    const T tanh_c = tanh_cell[u];
    const T grad_h_u = grad_output[u] + dh[u];
    const T grad_c_u = dc[u] + grad_h_u * o * (T(1) - tanh_c * tanh_c);
    d[u] = grad_c_u * g * i * (T(1) - i);
    d[hidden + u] = grad_c_u * c_prev[u] * f * (T(1) - f);
    d[2 * hidden + u] = grad_c_u * i * (T(1) - g * g);
    d[3 * hidden + u] = grad_h_u * tanh_c * o * (T(1) - o);
    dc[u] = grad_c_u * f;
  }
}

// c = f * c + i * g for one row; the cell gate's activation ``g`` is stored into the gates.
template <typename T>
void cell_update(T* __restrict__ gates, const T* __restrict__ g_act, T* __restrict__ c,
                 T* __restrict__ cell_out, int64_t hidden) {
  for (int64_t u = 0; u < hidden; ++u) {
    const T g = g_act[u];
    gates[2 * hidden + u] = g;
    const T c_new = gates[hidden + u] * c[u] + gates[u] * g;
    c[u] = c_new;
    cell_out[u] = c_new;
  }
}

// h = o * tanh(c) for one row, kept as the next step's h too.
template <typename T>
void output_gate(const T* __restrict__ o, const T* __restrict__ tanh_c, T* __restrict__ out,
                 T* __restrict__ h, int64_t hidden) {
  for (int64_t u = 0; u < hidden; ++u) {
    out[u] = o[u] * tanh_c[u];
    h[u] = out[u];
  }
}

// Back propagation through time of one LSTM layer in one direction over packed rows, keeping
// each gate's top-k of the pre-activation gradient (per row, or per step when unified); see
// meprop/lstm.py for the rule and the layout. Returns (grad_data or empty, grad_h0, grad_c0,
// grad_weight_ih, grad_weight_hh, grad_bias, rows of weight_ih touched). ``buffer_*`` and
// ``nonzero_*``, where given, are persistent weight gradients written in place (GradBuffer).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, int64_t>
lstm_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
              const at::Tensor& grad_c_n, const at::Tensor& data, const at::Tensor& weight_ih,
              const at::Tensor& weight_hh, const at::Tensor& gates, const at::Tensor& tanh_cells,
              const at::Tensor& h_prev_rows, const at::Tensor& c_prev_rows,
              const std::vector<int64_t>& batch_sizes, bool reverse, int64_t k, bool unified,
              bool need_data, const std::optional<at::Tensor>& buffer_ih,
              const std::optional<at::Tensor>& nonzero_ih,
              const std::optional<at::Tensor>& buffer_hh,
              const std::optional<at::Tensor>& nonzero_hh) {
  const GradBuffer into_ih = grad_buffer(buffer_ih, nonzero_ih, weight_ih);
  const GradBuffer into_hh = grad_buffer(buffer_hh, nonzero_hh, weight_hh);
  for (const auto* tensor : {&grad_output, &grad_h_n, &grad_c_n, &data, &weight_ih, &weight_hh,
                             &gates, &tanh_cells, &h_prev_rows, &c_prev_rows})
    check_input(*tensor, "LSTM tensor");
  const int64_t hidden = weight_hh.size(1), rows_total = gates.size(0);
  const int64_t in = weight_ih.size(1), kept = 4 * k;
  TORCH_CHECK(k > 0 && k <= hidden, "k must be in [1, hidden_size]");
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  const std::vector<int64_t> starts = step_starts(batch_sizes);

  auto options = gates.options();
  auto grad_pre = at::empty({rows_total, 4 * hidden}, options);
  auto columns = at::empty({rows_total, kept}, options.dtype(at::kLong));
  auto values = at::empty({rows_total, kept}, options);
  auto grad_h = grad_h_n.clone(), grad_c = grad_c_n.clone();
  auto grad_bias = at::zeros({4 * hidden}, options);
  at::Tensor grad_data, grad_w_ih, grad_w_hh;
  int64_t touched = 0;

  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_backward", [&] {
    using T = scalar_t;
    const T* go = grad_output.data_ptr<T>();
    const T* act = gates.data_ptr<T>();
    const T* tanh_cell = tanh_cells.data_ptr<T>();
    const T* c_prev = c_prev_rows.data_ptr<T>();
    const T* w_hh = weight_hh.data_ptr<T>();
    T* dpre = grad_pre.data_ptr<T>();
    T* dh = grad_h.data_ptr<T>();
    T* dc = grad_c.data_ptr<T>();
    T* bias = grad_bias.data_ptr<T>();
    int64_t* cols = columns.data_ptr<int64_t>();
    T* vals = values.data_ptr<T>();
    // Backward visits the steps in the reverse of the forward's processing order.
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = reverse ? s : steps - 1 - s;
      const int64_t start = starts[t], size = batch_sizes[t];
      for (int64_t b = 0; b < size; ++b) {
        const int64_t row = start + b;
        gate_grads(act + row * 4 * hidden, tanh_cell + row * hidden, go + row * hidden,
                   c_prev + row * hidden, dh + b * hidden, dc + b * hidden,
                   dpre + row * 4 * hidden, hidden);
        // The biases' gradient, the full one, summed while the row is in cache (an ATen sum
        // over all rows afterwards took ~40 us per direction at one sentence).
        add_row(dpre + row * 4 * hidden, 4 * hidden, bias);
      }
      T* step_grad = dpre + start * 4 * hidden;
      if (unified) {
        select_shared(step_grad, size, 4, hidden, k, cols + start * kept);
        for (int64_t b = 0; b < size; ++b) {
          if (b) std::copy(cols + start * kept, cols + (start + 1) * kept,
                           cols + (start + b) * kept);
          for (int64_t j = 0; j < kept; ++j)
            vals[(start + b) * kept + j] = step_grad[b * 4 * hidden + cols[start * kept + j]];
        }
      } else {
        select_rows(step_grad, size, 4, hidden, k, cols + start * kept, vals + start * kept);
      }
      // The recurrence carries only the kept entries: dh_{t-1} = kept_t @ W_hh.
      gather_rows_sum(cols + start * kept, vals + start * kept, size, kept, w_hh, 4 * hidden,
                      hidden, dh);
    }
    if (need_data) {
      grad_data = gradient_empty({rows_total, in}, options);
      gather_rows_sum(cols, vals, rows_total, kept, weight_ih.data_ptr<T>(), 4 * hidden, in,
                      grad_data.data_ptr<T>());
    }
    grad_w_ih = into_ih.defined() ? into_ih.tensor : gradient_empty(weight_ih.sizes(), options);
    scatter_rows_sum(cols, vals, rows_total, kept, data.data_ptr<T>(), in, 4 * hidden,
                     grad_w_ih.data_ptr<T>(), into_ih.rows());
    grad_w_hh = into_hh.defined() ? into_hh.tensor : gradient_empty(weight_hh.sizes(), options);
    scatter_rows_sum(cols, vals, rows_total, kept, h_prev_rows.data_ptr<T>(), hidden,
                     4 * hidden, grad_w_hh.data_ptr<T>(), into_hh.rows());
  });
  touched = count_touched(columns.data_ptr<int64_t>(), rows_total * kept, 4 * hidden);
  return {grad_data, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_bias, touched};
}

using LstmGrads =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, int64_t>;

// lstm_backward for every direction of one layer (entry d of each list: direction d, reverse
// for d = 1), the directions on threads of their own. Each direction's steps are a chain of
// small products, each waiting on memory (rows of W_hh far apart), and its parts below the
// size where they would split across threads: run side by side, the two directions of a
// BiLSTM take the time of one. ``grad_output`` [N, D * H] holds every direction's output
// gradient; a state gradient not given (an unused h_n or c_n) is zero. Python's per-call cost
// (~1 us per operation) was a fifth of the backward at one sentence: slicing and making
// contiguous happen here.
std::vector<LstmGrads> lstm_backward_directions(
    const at::Tensor& grad_output, const std::vector<std::optional<at::Tensor>>& grad_h_n,
    const std::vector<std::optional<at::Tensor>>& grad_c_n, const at::Tensor& data,
    const std::vector<at::Tensor>& weight_ih, const std::vector<at::Tensor>& weight_hh,
    const std::vector<at::Tensor>& gates, const std::vector<at::Tensor>& tanh_cells,
    const std::vector<at::Tensor>& h_prev_rows, const std::vector<at::Tensor>& c_prev_rows,
    const std::vector<int64_t>& batch_sizes, int64_t k, bool unified, bool need_data,
    const std::vector<std::optional<at::Tensor>>& buffer_ih,
    const std::vector<std::optional<at::Tensor>>& nonzero_ih,
    const std::vector<std::optional<at::Tensor>>& buffer_hh,
    const std::vector<std::optional<at::Tensor>>& nonzero_hh) {
  const int64_t directions = static_cast<int64_t>(weight_hh.size());
  TORCH_CHECK(directions >= 1 && directions <= 2, "an LSTM layer has 1 or 2 directions");
  for (const size_t size : {grad_h_n.size(), grad_c_n.size(), weight_ih.size(), gates.size(),
                            tanh_cells.size(), h_prev_rows.size(), c_prev_rows.size(),
                            buffer_ih.size(), nonzero_ih.size(), buffer_hh.size(),
                            nonzero_hh.size()})
    TORCH_CHECK(static_cast<int64_t>(size) == directions, "one entry per direction");
  TORCH_CHECK(!batch_sizes.empty(), "an LSTM needs at least one time step");
  const int64_t hidden = weight_hh[0].size(1);
  TORCH_CHECK(grad_output.dim() == 2 && grad_output.size(1) == directions * hidden,
              "grad_output must be [rows, directions * hidden]");
  const auto state = [&](const std::optional<at::Tensor>& grad) {
    return grad.has_value() ? grad->contiguous()
                            : at::zeros({batch_sizes[0], hidden}, grad_output.options());
  };
  const auto inputs = data.contiguous();
  std::vector<LstmGrads> grads(directions);
  at::parallel_for(0, directions, 1, [&](int64_t begin, int64_t end) {
    // Grad mode is thread-local and at::parallel_for does not carry it to its threads: the
    // ATen calls inside (clone, sum) must not record a graph there either.
    at::NoGradGuard no_grad;
    for (int64_t d = begin; d < end; ++d)
      grads[d] = lstm_backward(grad_output.narrow(1, d * hidden, hidden).contiguous(),
                               state(grad_h_n[d]), state(grad_c_n[d]), inputs,
                               weight_ih[d].contiguous(), weight_hh[d].contiguous(),
                               gates[d].contiguous(), tanh_cells[d].contiguous(),
                               h_prev_rows[d].contiguous(), c_prev_rows[d].contiguous(),
                               batch_sizes, d == 1, k, unified, need_data, buffer_ih[d],
                               nonzero_ih[d], buffer_hh[d], nonzero_hh[d]);
  });
  return grads;
}

// The forward of one LSTM layer in one direction over packed rows (see meprop/lstm.py):
// ``projected`` [N, 4H] holds W_ih x + b_ih + b_hh for every row. Returns (output, h_n, c_n,
// gates, tanh_cells, h_prev_rows, c_prev_rows), the last four for the backward. Per step: a
// register-tiled product and ATen's vectorised sigmoid/tanh (the same functions as the
// reference, so the outputs agree to rounding), and one loop for the cell update.
std::vector<at::Tensor> lstm_forward(const at::Tensor& projected, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& weight_hh,
                                     const std::vector<int64_t>& batch_sizes, bool reverse) {
  for (const auto* tensor : {&projected, &h0, &c0, &weight_hh})
    check_input(*tensor, "LSTM tensor");
  const int64_t hidden = weight_hh.size(1), rows_total = projected.size(0);
  const int64_t batch = h0.size(0);
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  const std::vector<int64_t> starts = step_starts(batch_sizes);
  auto options = projected.options();
  auto output = at::empty({rows_total, hidden}, options);
  auto gates = at::empty({rows_total, 4 * hidden}, options);
  auto tanh_cells = at::empty({rows_total, hidden}, options);
  auto h_prev_rows = at::empty({rows_total, hidden}, options);
  auto c_prev_rows = at::empty({rows_total, hidden}, options);
  auto cell_gate = at::empty({batch, hidden}, options);
  auto h = h0.clone(), c = c0.clone();
  const bool one_row = batch == 1;  // batch_sizes[0]: no step has more rows
  // weight_hh transposed, for the register-tiled product of steps with several rows
  auto recurrent = one_row ? at::Tensor() : gradient_empty({hidden, 4 * hidden}, options);
  AT_DISPATCH_FLOATING_TYPES(projected.scalar_type(), "lstm_forward", [&] {
    using T = scalar_t;
    if (!one_row)
      transpose_into(weight_hh.data_ptr<T>(), 4 * hidden, hidden, recurrent.data_ptr<T>());
    T* h_data = h.data_ptr<T>();
    T* c_data = c.data_ptr<T>();
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = reverse ? steps - 1 - s : s;
      const int64_t start = starts[t], size = batch_sizes[t];
      const int64_t offset = start * hidden, count = size * hidden;
      std::memcpy(h_prev_rows.data_ptr<T>() + offset, h_data, count * sizeof(T));
      std::memcpy(c_prev_rows.data_ptr<T>() + offset, c_data, count * sizeof(T));
      auto pre = gates.narrow(0, start, size);
      const T* addend = projected.data_ptr<T>() + start * 4 * hidden;
      if (one_row)
        recurrent_dot(h_data, hidden, weight_hh.data_ptr<T>(), 4 * hidden, addend,
                      pre.data_ptr<T>());
      else
        recurrent_product(h_data, size, hidden, recurrent.data_ptr<T>(), 4 * hidden, addend,
                          pre.data_ptr<T>());
      auto g_act = cell_gate.narrow(0, 0, size);
      at::tanh_out(g_act, pre.narrow(1, 2 * hidden, hidden));
      pre.sigmoid_();
      T* act = pre.data_ptr<T>();
      const T* g_data = g_act.data_ptr<T>();
      T* cell = tanh_cells.data_ptr<T>() + offset;
      for (int64_t b = 0; b < size; ++b) {
        cell_update(act + b * 4 * hidden, g_data + b * hidden, c_data + b * hidden,
                    cell + b * hidden, hidden);
      }
      // tanh(c), kept for the backward: it needs tanh(c), never c itself.
      tanh_cells.narrow(0, start, size).tanh_();
      T* out = output.data_ptr<T>() + offset;
      for (int64_t b = 0; b < size; ++b) {
        output_gate(act + b * 4 * hidden + 3 * hidden, cell + b * hidden, out + b * hidden,
                    h_data + b * hidden, hidden);
      }
    }
  });
  return {output, h, c, gates, tanh_cells, h_prev_rows, c_prev_rows};
}

// lstm_forward for every direction of one layer (entry d: direction d, reverse for d = 1), the
// directions on threads of their own, as in lstm_backward_directions: at one sentence a step's
// recurrent product is too small to split, so each direction would leave a core idle.
std::vector<std::vector<at::Tensor>> lstm_forward_directions(
    const std::vector<at::Tensor>& projected, const std::vector<at::Tensor>& h0,
    const std::vector<at::Tensor>& c0, const std::vector<at::Tensor>& weight_hh,
    const std::vector<int64_t>& batch_sizes) {
  const int64_t directions = static_cast<int64_t>(projected.size());
  TORCH_CHECK(directions >= 1 && directions <= 2, "an LSTM layer has 1 or 2 directions");
  TORCH_CHECK(h0.size() == projected.size() && c0.size() == projected.size() &&
                  weight_hh.size() == projected.size(),
              "one entry per direction");
  std::vector<std::vector<at::Tensor>> outputs(directions);
  at::parallel_for(0, directions, 1, [&](int64_t begin, int64_t end) {
    at::NoGradGuard no_grad;  // as in lstm_backward_directions
    for (int64_t d = begin; d < end; ++d)
      outputs[d] = lstm_forward(projected[d].contiguous(), h0[d].contiguous(),
                                c0[d].contiguous(), weight_hh[d].contiguous(), batch_sizes, d == 1);
  });
  return outputs;
}

// One LSTM layer, all its directions, as one C++ autograd Function (the Python reference:
// LSTMLayerFunction in meprop/lstm.py, which takes the same arguments). Why: the Python
// Function's backward spent 0.14-0.27 ms of a ~1 ms backward at one sentence in Python around
// the compiled call; here nothing of the backward runs in Python.
//
// ``params`` holds per direction h0, c0, weight_ih, weight_hh, then bias_ih, bias_hh if the
// layer has biases (an autograd Function's tensor inputs must be defined); ``buffers`` per
// direction a persistent gradient and its nonzero-rows mask for weight_ih, then for weight_hh
// (undefined: none), as MePropLinearFunction takes them.
// Returns (output [N, D * H], then h_n, c_n per direction, then per direction a 0-d int64
// tensor of the rows of weight_ih the backward touched: -1 until it has run).
constexpr int64_t kLstmParams = 6;  // per direction, with biases

class MePropLSTMLayerFunction : public torch::autograd::Function<MePropLSTMLayerFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                at::Tensor data, at::TensorList params,
                                                std::vector<int64_t> batch_sizes, int64_t k,
                                                bool unified, std::vector<at::Tensor> buffers) {
    const int64_t directions = static_cast<int64_t>(buffers.size()) / 4;
    const int64_t per = static_cast<int64_t>(params.size()) / directions;  // 6, or 4: no bias
    std::vector<at::Tensor> projected, h0, c0, weight_hh;
    std::vector<at::Tensor> saved{data};
    for (int64_t d = 0; d < directions; ++d) {
      const at::Tensor* own = params.data() + d * per;
      // Every step's input product at once; the two biases added once, not per row.
      projected.push_back(per == kLstmParams ? at::linear(data, own[2], own[4] + own[5])
                                             : at::linear(data, own[2]));
      h0.push_back(own[0]);
      c0.push_back(own[1]);
      weight_hh.push_back(own[3]);
    }
    const auto results = lstm_forward_directions(projected, h0, c0, weight_hh, batch_sizes);
    torch::autograd::variable_list outputs(1);
    std::vector<at::Tensor> parts, touched;
    for (int64_t d = 0; d < directions; ++d) {
      const auto& result = results[d];  // output, h_n, c_n, gates, tanh_cells, h_prev, c_prev
      parts.push_back(result[0]);
      outputs.push_back(result[1]);
      outputs.push_back(result[2]);
      saved.insert(saved.end(), {params[d * per + 2], params[d * per + 3]});
      saved.insert(saved.end(), result.begin() + 3, result.end());
      touched.push_back(at::full({}, -1, data.options().dtype(at::kLong)));
    }
    outputs[0] = directions == 1 ? parts[0] : at::cat(parts, 1);
    outputs.insert(outputs.end(), touched.begin(), touched.end());
    ctx->save_for_backward(saved);
    ctx->mark_non_differentiable(touched);
    // Outputs nobody used get undefined gradients, not zeros to allocate and read.
    ctx->set_materialize_grads(false);
    ctx->saved_data["per_direction"] = per;
    ctx->saved_data["batch_sizes"] = batch_sizes;
    ctx->saved_data["k"] = k;
    ctx->saved_data["unified"] = unified;
    ctx->saved_data["buffers"] = buffers;
    ctx->saved_data["touched"] = touched;
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "meProp's backward is not differentiable (create_graph=True is not supported)");
    const auto saved = ctx->get_saved_variables();
    const int64_t directions = (static_cast<int64_t>(saved.size()) - 1) / 6;
    const int64_t per = ctx->saved_data["per_direction"].toInt();
    const auto batch_sizes = ctx->saved_data["batch_sizes"].toIntVector();
    const int64_t k = ctx->saved_data["k"].toInt();
    const bool unified = ctx->saved_data["unified"].toBool();
    auto buffers = ctx->saved_data["buffers"].toTensorVector();
    auto touched = ctx->saved_data["touched"].toTensorVector();
    std::vector<at::Tensor> parts[6];  // weight_ih, weight_hh, gates, tanh_cells, h/c_prev
    std::vector<std::optional<at::Tensor>> grad_h_n, grad_c_n, into[4];
    std::vector<std::array<bool, kLstmParams>> needs(directions);
    const auto state = [&](int64_t index) -> std::optional<at::Tensor> {
      if (grads[index].defined()) return grads[index];
      return std::nullopt;  // h_n or c_n unused: a zero gradient
    };
    for (int64_t d = 0; d < directions; ++d) {
      for (int part = 0; part < 6; ++part) parts[part].push_back(saved[1 + 6 * d + part]);
      grad_h_n.push_back(state(1 + 2 * d));
      grad_c_n.push_back(state(2 + 2 * d));
      for (int64_t j = 0; j < kLstmParams; ++j)
        needs[d][j] = j < per && ctx->needs_input_grad(1 + d * per + j);
      for (int weight = 0; weight < 2; ++weight) {
        // A leaf is saved as itself: its .grad is the parameter's.
        const GradBuffer buffer = writable_buffer(
            {buffers[4 * d + 2 * weight], buffers[4 * d + 2 * weight + 1]}, parts[weight][d],
            needs[d][2 + weight]);
        const bool usable = buffer.defined();
        into[2 * weight].push_back(usable ? std::optional(buffer.tensor) : std::nullopt);
        into[2 * weight + 1].push_back(usable ? std::optional(buffer.nonzero) : std::nullopt);
      }
    }
    const int64_t hidden = parts[1][0].size(1);
    at::Tensor grad_output = grads[0];
    if (!grad_output.defined())
      grad_output = at::zeros({saved[0].size(0), directions * hidden}, parts[2][0].options());
    const bool need_data = ctx->needs_input_grad(0);
    auto results = lstm_backward_directions(
        grad_output, grad_h_n, grad_c_n, saved[0], parts[0], parts[1], parts[2], parts[3],
        parts[4], parts[5], batch_sizes, k, unified, need_data, into[0], into[1], into[2],
        into[3]);
    torch::autograd::variable_list outputs(1);
    for (int64_t d = 0; d < directions; ++d) {
      auto& [grad_data, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias, rows] = results[d];
      if (need_data) outputs[0] = d == 0 ? grad_data : outputs[0].add_(grad_data);
      *touched[d].data_ptr<int64_t>() = rows;
      at::Tensor weight_grads[2] = {grad_w_ih, grad_w_hh};
      for (int weight = 0; weight < 2; ++weight) {
        if (into[2 * weight][d].has_value()) {  // written in place: the parameter's .grad now
          parts[weight][d].mutable_grad() = *into[2 * weight][d];
          weight_grads[weight] = at::Tensor();
        }
      }
      const auto& need = needs[d];
      outputs.insert(outputs.end(),
                     {need[0] ? grad_h0 : at::Tensor(), need[1] ? grad_c0 : at::Tensor(),
                      need[2] ? weight_grads[0] : at::Tensor(),
                      need[3] ? weight_grads[1] : at::Tensor()});
      if (per == kLstmParams)
        outputs.insert(outputs.end(), {need[4] ? grad_bias : at::Tensor(),
                                       need[5] ? grad_bias : at::Tensor()});
    }
    outputs.resize(outputs.size() + 4);  // batch_sizes, k, unified, buffers
    return outputs;
  }
};

// The compiled LSTM layer (see MePropLSTMLayerFunction); ``params`` holds 6 per direction,
// the biases None without bias, and ``buffers`` None where a weight has no persistent gradient.
std::vector<at::Tensor> lstm_layer(const at::Tensor& data,
                                   const std::vector<std::optional<at::Tensor>>& params,
                                   const std::vector<int64_t>& batch_sizes, int64_t k,
                                   bool unified,
                                   const std::vector<std::optional<at::Tensor>>& buffers) {
  const int64_t directions = static_cast<int64_t>(params.size()) / kLstmParams;
  TORCH_CHECK((directions == 1 || directions == 2) &&
                  static_cast<int64_t>(params.size()) == directions * kLstmParams &&
                  static_cast<int64_t>(buffers.size()) == 4 * directions,
              "lstm_layer: 6 parameters and 4 buffers per direction, 1 or 2 directions");
  TORCH_CHECK(!batch_sizes.empty(), "an LSTM needs at least one time step");
  const auto defined = [](const std::optional<at::Tensor>& tensor) {
    return tensor.has_value() ? *tensor : at::Tensor();
  };
  std::vector<at::Tensor> tensors, into;
  for (const auto& buffer : buffers) into.push_back(defined(buffer));
  const bool bias = params[4].has_value();
  for (int64_t d = 0; d < directions; ++d) {
    const auto* own = params.data() + d * kLstmParams;
    TORCH_CHECK(own[0].has_value() && own[1].has_value() && own[2].has_value() &&
                    own[3].has_value() && own[4].has_value() == bias &&
                    own[5].has_value() == bias,
                "lstm_layer: the states and weights are tensors, the biases both or neither");
    for (int64_t j = 0; j < (bias ? kLstmParams : 4); ++j) tensors.push_back(*own[j]);
    TORCH_CHECK(k > 0 && k <= own[3]->size(1), "k must be in [1, hidden_size]");
    for (int weight = 0; weight < 2; ++weight) {
      const at::Tensor& buffer = into[4 * d + 2 * weight];
      if (buffer.defined())  // checks it against its weight
        grad_buffer(buffer, into[4 * d + 2 * weight + 1], *own[2 + weight]);
    }
  }
  return MePropLSTMLayerFunction::apply(data, at::TensorList(tensors), batch_sizes, k, unified,
                                        into);
}

}  // namespace
