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

#if defined(__SSE2__)
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


// The instruction-set level this unit is compiled for (meprop/kernels/__init__.py passes
// -march), and what the tiles below are sized by: the width of a vector register and how many
// there are. A register tile of accumulators must fit in them with the operands it reads, or
// the compiler spills it to the stack on every multiply-add; so each level has its own tile
// shapes (Tiles, below), not the widest level's compiled narrower.
//   AVX-512 (x86-64-v4): 32 registers of 64 bytes, fused multiply-add.
//   AVX2 + FMA (x86-64-v3): 16 registers of 32 bytes, fused multiply-add.
//   NEON (aarch64): 32 registers of 16 bytes, fused multiply-add.
//   SSE2 .. SSE4.2 (x86-64, x86-64-v2): 16 registers of 16 bytes, a multiply then an add.
#if defined(__AVX512F__)
#define MEPROP_ISA "avx512"
constexpr int kVectorBytes = 64, kRegisters = 32;
#elif defined(__AVX2__) && defined(__FMA__)
#define MEPROP_ISA "avx2"
constexpr int kVectorBytes = 32, kRegisters = 16;
#elif defined(__aarch64__)
#define MEPROP_ISA "neon"
constexpr int kVectorBytes = 16, kRegisters = 32;
#else
#define MEPROP_ISA "sse"
constexpr int kVectorBytes = 16, kRegisters = 16;
#endif

// The register tiles' shapes per level: accumulators plus the operands a step loads stay
// within the registers (the counts beside kTiles below: accumulators + operands, of the
// level's registers).
struct Tiles {
  // kept_product_tile (unified's input gradient; out = kept x table): kept_rows output rows x
  // kept_vectors vectors of accumulators, plus kept_vectors of a table row and a broadcast.
  int kept_rows, kept_vectors;
  // The LSTM forward's recurrent product, the same tile with an addend: rows x vectors.
  int recurrent_rows, recurrent_vectors;
  // transposed_tile (unified's weight gradient): columns of kept x vectors, plus the input.
  int transposed_columns, transposed_vectors;
  // weighted_sum_tile (per-example's gathers): vectors accumulated over all the rows summed.
  int sum_vectors;
  // scatter_rows_sum's column tile, in bytes (it also sets how much of each input row the
  // tile reads per pass, so it is sized for the caches as well as the registers).
  int scatter_bytes;
};

// MEPROP_TILES (a -D of eight numbers) overrides them, for tuning a level by measurement.
#if defined(MEPROP_TILES)
constexpr Tiles kTiles{MEPROP_TILES};
#elif defined(__AVX512F__)
constexpr Tiles kTiles{6, 4, 8, 3, 5, 4, 8, 256};   // 24 + 5, 24 + 4, 20 + 5, 8 of 32
#elif defined(__AVX2__) && defined(__FMA__)
constexpr Tiles kTiles{6, 2, 6, 2, 5, 2, 8, 256};   // 12 + 3, 12 + 3, 10 + 3, 8 of 16
#elif defined(__aarch64__)
constexpr Tiles kTiles{6, 4, 8, 3, 5, 4, 16, 256};  // as AVX-512's counts, at 16 bytes
#else
constexpr Tiles kTiles{4, 2, 4, 2, 5, 2, 8, 128};   // no FMA: a product needs a register too
#endif

// Vectors of T (GCC/Clang vector extensions) of a given width in bytes. Explicit vectors keep
// the accumulators of the tiles below in registers, which plain arrays did not.
template <typename T, int Bytes>
struct VectorOf {
  typedef T type __attribute__((vector_size(Bytes)));
  static constexpr int64_t lanes = Bytes / sizeof(T);
};

// 32 bytes: 8 floats or 4 doubles (the selection's filter; two registers at 16 bytes).
template <typename T>
using Vector = VectorOf<T, 32>;
template <typename T>
using Vec = typename Vector<T>::type;

// One register of the level: the products' unit.
template <typename T>
using WideVector = VectorOf<T, kVectorBytes>;
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

// A vector of x in every lane. x - 0 (not 0 + x) is x for every x, -0 included, so the
// compiler emits the broadcast alone: 0 + x is +0 for x = -0, and cost an add and a register
// (a register the AVX2 tiles do not have to spare).
template <typename T>
inline Wide<T> splat(T x) {
  return x - Wide<T>{};
}

template <typename T>
inline Vec<T> magnitude(Vec<T> value) {
  return value < Vec<T>{} ? -value : value;
}

// Stream: a non-temporal store, for outputs far larger than the caches — no read of the line
// before it is overwritten, no eviction of the operands. Needs a target aligned to the vector.
template <typename T, bool Stream>
inline void store_wide(T* target, Wide<T> value) {
  if constexpr (Stream) {
#if defined(__AVX512F__)
    if constexpr (sizeof(T) == 4)
      _mm512_stream_ps(reinterpret_cast<float*>(target), reinterpret_cast<__m512&>(value));
    else
      _mm512_stream_pd(reinterpret_cast<double*>(target), reinterpret_cast<__m512d&>(value));
    return;
#elif defined(__AVX2__) && defined(__FMA__)
    if constexpr (sizeof(T) == 4)
      _mm256_stream_ps(reinterpret_cast<float*>(target), reinterpret_cast<__m256&>(value));
    else
      _mm256_stream_pd(reinterpret_cast<double*>(target), reinterpret_cast<__m256d&>(value));
    return;
#elif defined(__SSE2__)
    if constexpr (sizeof(T) == 4)
      _mm_stream_ps(reinterpret_cast<float*>(target), reinterpret_cast<__m128&>(value));
    else
      _mm_stream_pd(reinterpret_cast<double*>(target), reinterpret_cast<__m128d&>(value));
    return;
#endif
  }
  std::memcpy(target, &value, sizeof(value));
}

// After streamed stores, which are weakly ordered: a fence before anyone reads the output.
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Whether an output [rows, dim] is written with streaming stores: far larger than the caches
// (8 MB and more), and every row 64-byte aligned, as those stores need.
template <typename T>
bool streams(const T* out, int64_t rows, int64_t dim) {
  const bool aligned = reinterpret_cast<uintptr_t>(out) % 64 == 0 && dim * sizeof(T) % 64 == 0;
  return aligned && rows * dim * static_cast<int64_t>(sizeof(T)) >= (int64_t{8} << 20);
}

// Calls f(std::integral_constant<int, n>) for n = rows (1 <= rows <= R): a register tile's row
// count as a compile-time constant for the last, partial block of rows.
template <int R, typename F>
inline void with_rows(int64_t rows, F&& f) {
  if constexpr (R > 1) {
    if (rows < R) return with_rows<R - 1>(rows, f);
  }
  f(std::integral_constant<int, R>{});
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

// The sum of a vector's lanes: halves added until one register of 16 bytes is left (a
// shuffle each, where a lane-by-lane loop extracts every lane), then its lanes.
template <typename T, int Bytes>
inline T lanes_sum(typename VectorOf<T, Bytes>::type value) {
  if constexpr (Bytes > 16) {
    using Half = typename VectorOf<T, Bytes / 2>::type;
    Half low, high;
    std::memcpy(&low, &value, sizeof(Half));
    std::memcpy(&high, reinterpret_cast<const char*>(&value) + sizeof(Half), sizeof(Half));
    return lanes_sum<T, Bytes / 2>(low + high);
  } else {
    T sum = 0;
    for (int64_t l = 0; l < VectorOf<T, Bytes>::lanes; ++l) sum += value[l];
    return sum;
  }
}

template <typename T>
inline T lane_sum(Wide<T> value) {
  return lanes_sum<T, kVectorBytes>(value);
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
