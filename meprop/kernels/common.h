// Vector types and loads/stores, the thread-split grain, the input check: what every part
// of the kernels uses.
// Part of meProp's compiled CPU kernels: included by cpu.cpp only, which is compiled as one
// unit (hence the unnamed namespace) so that every call can be inlined, which the register
// tiles of the products depend on.

#pragma once

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/csrc/autograd/graph_task.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {


// Vectors of T (GCC/Clang vector extensions), lowered to narrower instructions where the CPU
// has narrower registers. Explicit vectors keep the accumulators of the tiles below in
// registers, which plain arrays did not.
template <typename T, int Bytes>
struct VectorOf {
  typedef T type __attribute__((vector_size(Bytes)));
  static constexpr int64_t lanes = Bytes / sizeof(T);
};

// 32 bytes: 8 floats or 4 doubles, one AVX register (the selection's filter).
template <typename T>
using Vector = VectorOf<T, 32>;
template <typename T>
using Vec = typename Vector<T>::type;

// 64 bytes: one AVX-512 register (the products).
template <typename T>
using WideVector = VectorOf<T, 64>;
template <typename T>
using Wide = typename WideVector<T>::type;

template <typename V, typename T>
inline V load_vector(const T* source) {
  V value;
  std::memcpy(&value, source, sizeof(value));
  return value;
}

template <typename T>
inline Vec<T> load(const T* source) {
  return load_vector<Vec<T>>(source);
}

template <typename T>
inline Wide<T> load_wide(const T* source) {
  return load_vector<Wide<T>>(source);
}

template <typename T>
inline Vec<T> magnitude(Vec<T> value) {
  return value < Vec<T>{} ? -value : value;
}

// Stream: a non-temporal store, for outputs far larger than the caches — no read of the line
// before it is overwritten, no eviction of the operands. Needs a 64-byte aligned target.
template <typename T, bool Stream>
inline void store_wide(T* target, Wide<T> value) {
#if defined(__AVX512F__)
  if constexpr (Stream) {
    if constexpr (sizeof(T) == 4)
      _mm512_stream_ps(reinterpret_cast<float*>(target), reinterpret_cast<__m512&>(value));
    else
      _mm512_stream_pd(reinterpret_cast<double*>(target), reinterpret_cast<__m512d&>(value));
    return;
  }
#endif
  std::memcpy(target, &value, sizeof(value));
}

// Whether an output [rows, dim] is written with streaming stores: far larger than the caches
// (8 MB and more), and every row 64-byte aligned, as those stores need.
template <typename T>
bool streams(const T* out, int64_t rows, int64_t dim) {
  const bool aligned = reinterpret_cast<uintptr_t>(out) % 64 == 0 && dim * sizeof(T) % 64 == 0;
  return aligned && rows * dim * static_cast<int64_t>(sizeof(T)) >= (int64_t{8} << 20);
}


// Multiply-adds below which a product runs on the calling thread: handing work to OpenMP's
// threads costs microseconds. Not higher: the rows summed come from L3 or memory, and a
// second core's bandwidth pays off early — at 2^20 the tagger's per-step products (8
// sentences: 80,000) ran on one thread and its backward took 40 % longer.
constexpr int64_t kParallelWork = int64_t{1} << 16;

// The same for unified's register-tiled products, whose operands sit in L1: they run at about
// 16 multiply-adds a cycle, and waking the second thread (~30 us when it sleeps) paid off only
// from about 2^20 (MNIST's 157,000 ran 56 us on two threads, 25 on one).
constexpr int64_t kTiledParallelWork = int64_t{1} << 20;

// The grain for at::parallel_for: items per task such that a task holds at least ``work``
// multiply-adds (kParallelWork or kTiledParallelWork), at ``per_item`` each.
inline int64_t grain_for(int64_t work, int64_t per_item) {
  return std::max<int64_t>(1, work / std::max<int64_t>(per_item, 1));
}

// The sum of a vector's lanes.
template <typename T>
inline T lane_sum(Wide<T> value) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4)
    return _mm512_reduce_add_ps(reinterpret_cast<__m512&>(value));
  else
    return _mm512_reduce_add_pd(reinterpret_cast<__m512d&>(value));
#else
  T sum = 0;
  for (int64_t l = 0; l < WideVector<T>::lanes; ++l) sum += value[l];
  return sum;
#endif
}

template <typename T>
void add_row(const T* __restrict__ row, int64_t width, T* __restrict__ sum) {
  for (int64_t c = 0; c < width; ++c) sum[c] += row[c];
}

void check_input(const at::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(tensor.is_contiguous(), name, " must be contiguous");
}

}  // namespace
