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

// ---- selection -------------------------------------------------------------------------------

// A magnitude's bit pattern as a signed integer of its width: for |x| (sign bit cleared) the
// integers order as the values do, NaN above infinity — the order torch.topk ranks by.
template <typename T>
using Bits = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

template <typename T>
inline Bits<T> magnitude_bits(T value) {
  Bits<T> bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits & std::numeric_limits<Bits<T>>::max();
}

// Per-thread work space of the selection: the candidates' magnitude bits and positions, padded
// to whole 64-byte vectors (bits -1: below every magnitude).
template <typename T>
struct Scratch {
  static constexpr int64_t kPad = 64 / sizeof(T);
  explicit Scratch(int64_t n) : bits(n + 2 * kPad), positions(n + 2 * kPad), chosen(n + 1) {}
  std::vector<Bits<T>> bits, positions, chosen;
};

#if defined(__AVX512F__)
// The AVX-512 operations the selection needs on 64-byte vectors of Bits<T> (16 int32 lanes for
// float, 8 int64 lanes for double), so that one loop serves both.
template <typename T>
struct BitLanes;

template <>
struct BitLanes<float> {
  static constexpr int64_t lanes = 16;
  static __m512i broadcast(int32_t value) { return _mm512_set1_epi32(value); }
  static __m512i first_indices() {
    return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  }
  static __m512i add(__m512i a, __m512i b) { return _mm512_add_epi32(a, b); }
  static unsigned at_least(__m512i a, __m512i b) { return _mm512_cmpge_epi32_mask(a, b); }
  static __m512i compress(unsigned mask, __m512i a) {
    return _mm512_maskz_compress_epi32(static_cast<__mmask16>(mask), a);
  }
};

template <>
struct BitLanes<double> {
  static constexpr int64_t lanes = 8;
  static __m512i broadcast(int64_t value) { return _mm512_set1_epi64(value); }
  static __m512i first_indices() { return _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7); }
  static __m512i add(__m512i a, __m512i b) { return _mm512_add_epi64(a, b); }
  static unsigned at_least(__m512i a, __m512i b) { return _mm512_cmpge_epi64_mask(a, b); }
  static __m512i compress(unsigned mask, __m512i a) {
    return _mm512_maskz_compress_epi64(static_cast<__mmask8>(mask), a);
  }
};
#endif

// How many of bits[0 .. vectors * kPad) are >= probe.
template <typename T>
inline int64_t count_at_least(const Bits<T>* bits, int64_t vectors, Bits<T> probe) {
  int64_t count = 0;
#if defined(__AVX512F__)
  using Ops = BitLanes<T>;
  const __m512i limit = Ops::broadcast(probe);
  for (int64_t v = 0; v < vectors; ++v)
    count += __builtin_popcount(Ops::at_least(_mm512_loadu_si512(bits + Ops::lanes * v), limit));
  return count;
#endif
  for (int64_t i = 0; i < vectors * Scratch<T>::kPad; ++i) count += bits[i] >= probe;
  return count;
}

// The entries of scores[0 .. n) whose magnitude bits are >= limit, appended to the scratch's
// candidates (bits and positions); returns their number.
template <typename T>
int64_t gather_candidates(const T* scores, int64_t n, Bits<T> limit, Scratch<T>& scratch) {
  Bits<T>* bits = scratch.bits.data();
  Bits<T>* positions = scratch.positions.data();
  int64_t count = 0, j = 0;
#if defined(__AVX512F__)
  // Compress in registers, then a plain store: the memory form is slow on Zen 4.
  using Ops = BitLanes<T>;
  constexpr int64_t L = Ops::lanes;
  const __m512i mask = Ops::broadcast(std::numeric_limits<Bits<T>>::max());
  const __m512i bound = Ops::broadcast(limit), step = Ops::broadcast(L);
  __m512i index = Ops::first_indices();
  for (; j + L <= n; j += L, index = Ops::add(index, step)) {
    const __m512i value = _mm512_and_si512(_mm512_loadu_si512(scores + j), mask);
    const unsigned above = Ops::at_least(value, bound);
    _mm512_storeu_si512(bits + count, Ops::compress(above, value));
    _mm512_storeu_si512(positions + count, Ops::compress(above, index));
    count += __builtin_popcount(above);
  }
#endif
  for (; j < n; ++j) {
    bits[count] = magnitude_bits(scores[j]);
    positions[count] = j;
    count += bits[count] >= limit;
  }
  return count;
}

// The smallest of k group maxima of |scores|: the first entries split into k equal groups, each
// group's largest magnitude is a distinct entry, so this is at most the k-th largest magnitude,
// and only entries at or above it can be selected (typically a few times k of them). 0 (no
// filter) where the groups would be shorter than a vector.
template <typename T>
Bits<T> group_threshold(const T* scores, int64_t n, int64_t k) {
  constexpr int64_t L = Vector<T>::lanes;
  const int64_t group = (n / k) / L * L;  // entries per group, whole vectors
  if (group == 0) return 0;
  T threshold = std::numeric_limits<T>::infinity();
  for (int64_t g = 0; g < k; ++g) {
    Vec<T> largest = magnitude<T>(load(scores + g * group));
    for (int64_t j = g * group + L; j < (g + 1) * group; j += L) {
      const Vec<T> block = magnitude<T>(load(scores + j));
      largest = block > largest ? block : largest;
    }
    T group_max = largest[0];
    for (int64_t lane = 1; lane < L; ++lane) group_max = std::max(group_max, largest[lane]);
    threshold = std::min(threshold, group_max);
  }
  return magnitude_bits(threshold);
}

// The positions of the k entries of largest |score| among scores[0..n), into pos[0..k)
// (unordered). O(n) and no sort: a filter leaves a few times k candidates, then a search for
// the k-th largest magnitude's bit pattern counts candidates at three probes at a time (each
// round cuts the range to a quarter, at most 16 rounds for float, 32 for double), then the
// candidates above it, and as many equal to it as k still needs, are taken.
template <typename T>
void topk_positions(const T* scores, int64_t n, int64_t k, int64_t* pos, Scratch<T>& scratch) {
  constexpr int64_t P = Scratch<T>::kPad;
  Bits<T> lo = group_threshold(scores, n, k);
  int64_t count = gather_candidates(scores, n, lo, scratch);
  if (count < k) {  // NaN groups defeated the filter: every entry is a candidate
    lo = 0;
    count = gather_candidates(scores, n, lo, scratch);
  }
  const Bits<T>* bits = scratch.bits.data();
  const Bits<T>* positions = scratch.positions.data();
  std::fill(scratch.bits.begin() + count, scratch.bits.begin() + count + P, Bits<T>{-1});
  const int64_t vectors = (count + P - 1) / P;
  Bits<T> top = 0;
  for (int64_t i = 0; i < count; ++i) top = std::max(top, bits[i]);
  // Invariant: at least k candidates are >= lo, fewer than k are >= hi.
  int64_t hi = static_cast<int64_t>(top) + 1;
  while (hi - lo > 1) {
    const int64_t quarter = std::max<int64_t>(1, (hi - lo) / 4);
    const Bits<T> probe[3] = {static_cast<Bits<T>>(lo + quarter),
                              static_cast<Bits<T>>(std::min<int64_t>(hi - 1, lo + 2 * quarter)),
                              static_cast<Bits<T>>(std::min<int64_t>(hi - 1, lo + 3 * quarter))};
    const int64_t above[3] = {count_at_least<T>(bits, vectors, probe[0]),
                              count_at_least<T>(bits, vectors, probe[1]),
                              count_at_least<T>(bits, vectors, probe[2])};
    int64_t next_lo = lo, next_hi = hi;
    for (int probe_index = 0; probe_index < 3; ++probe_index) {
      if (above[probe_index] >= k) next_lo = std::max<int64_t>(next_lo, probe[probe_index]);
      else next_hi = std::min<int64_t>(next_hi, probe[probe_index]);
    }
    lo = static_cast<Bits<T>>(next_lo);
    hi = next_hi;
    if (above[0] == k || above[1] == k || above[2] == k) break;  // lo is then exact
  }
  // Branch-free passes (which candidates pass is unpredictable): fewer than k are above lo,
  // then those equal to lo fill up to k.
  Bits<T>* chosen = scratch.chosen.data();
  int64_t taken = 0;
  for (int64_t i = 0; i < count; ++i) {
    chosen[taken] = positions[i];
    taken += bits[i] > lo;
  }
  for (int64_t i = 0; i < count && taken < k; ++i) {
    chosen[taken] = positions[i];
    taken += bits[i] == lo;
  }
  for (int64_t j = 0; j < std::min(taken, k); ++j) pos[j] = chosen[j];
}

// Per row of grad [rows, groups * width], each group's k entries of largest magnitude:
// columns [rows, groups * k] (int64, into the full row) and their values.
template <typename T>
void select_rows(const T* grad, int64_t rows, int64_t groups, int64_t width, int64_t k,
                 int64_t* columns, T* values) {
  const int64_t cols = groups * width;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    Scratch<T> scratch(width);
    for (int64_t r = begin; r < end; ++r) {
      const T* row = grad + r * cols;
      for (int64_t g = 0; g < groups; ++g) {
        int64_t* pos = columns + r * groups * k + g * k;
        topk_positions(row + g * width, width, k, pos, scratch);
        for (int64_t j = 0; j < k; ++j) {
          pos[j] += g * width;
          values[r * groups * k + g * k + j] = row[pos[j]];
        }
      }
    }
  });
}

// The k columns (per group) of largest summed magnitude over rows: columns [groups * k]. Where
// ``column_sums`` is given it receives the plain column sums (the bias gradient) from the same
// pass. Summed in double — exact enough for ranking, no overflow for any float input — per
// chunk of rows, and the chunks added in order, so the result does not depend on the threads.
template <typename T>
void select_shared(const T* grad, int64_t rows, int64_t groups, int64_t width, int64_t k,
                   int64_t* columns, T* column_sums = nullptr) {
  const int64_t cols = groups * width;
  constexpr int64_t kChunk = 512;
  const int64_t chunks = std::max<int64_t>(1, (rows + kChunk - 1) / kChunk);
  const int64_t parts = column_sums != nullptr ? 2 : 1;
  std::vector<double> partial(chunks * parts * cols, 0.0);
  const int64_t grain = std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(kChunk * cols, 1));
  at::parallel_for(0, chunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      double* magnitudes = partial.data() + chunk * parts * cols;
      double* plain = magnitudes + cols;
      const int64_t r1 = std::min(rows, (chunk + 1) * kChunk);
      for (int64_t r = chunk * kChunk; r < r1; ++r) {
        const T* row = grad + r * cols;
        for (int64_t c = 0; c < cols; ++c) magnitudes[c] += std::abs(static_cast<double>(row[c]));
        if (parts == 2)
          for (int64_t c = 0; c < cols; ++c) plain[c] += static_cast<double>(row[c]);
      }
    }
  });
  for (int64_t chunk = 1; chunk < chunks; ++chunk)
    for (int64_t c = 0; c < parts * cols; ++c) partial[c] += partial[chunk * parts * cols + c];
  if (column_sums != nullptr)
    for (int64_t c = 0; c < cols; ++c) column_sums[c] = static_cast<T>(partial[cols + c]);
  Scratch<double> scratch(width);
  for (int64_t g = 0; g < groups; ++g) {
    int64_t* pos = columns + g * k;
    topk_positions(partial.data() + g * width, width, k, pos, scratch);
    for (int64_t j = 0; j < k; ++j) pos[j] += g * width;
  }
}

// ---- sparse products -------------------------------------------------------------------------

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

// Register tiles: kTile(T) consecutive columns (512 bytes, 8 AVX-512 registers) are accumulated in
// registers over all the entries that write them before one store.
template <typename T>
constexpr int64_t kTile = 512 / sizeof(T);

// The rows summed below, as row pointers (the gather: rows of a table chosen per entry) ...
template <typename T>
struct RowPointers {
  const T* const* rows;
  const T* operator[](int64_t e) const { return rows[e]; }
};

// ... or as 32-bit row numbers into one matrix (the scatter: half the bytes of a pointer, and
// these lists are read once per column tile).
template <typename T>
struct RowNumbers {
  const T* matrix;
  int64_t dim;
  const int32_t* rows;
  const T* operator[](int64_t e) const { return matrix + rows[e] * dim; }
};

// target[0..W) = sum_e weight[e] * sources[e][offset ..) ; with Accumulate, added to what
// target holds.
template <typename T, int64_t W, bool Stream = false, bool Accumulate = false, typename Sources>
inline void weighted_sum_tile(Sources sources, const T* weights, int64_t count, int64_t offset,
                              T* target) {
  constexpr int64_t L = WideVector<T>::lanes, V = W / L;
  Wide<T> acc[V] = {};
  if constexpr (Accumulate)
    for (int64_t v = 0; v < V; ++v) acc[v] = load_wide(target + v * L);
  for (int64_t e = 0; e < count; ++e) {
    const Wide<T> weight = Wide<T>{} + weights[e];
    const T* source = sources[e] + offset;
#pragma GCC unroll 16
    for (int64_t v = 0; v < V; ++v) acc[v] += weight * load_wide(source + v * L);
  }
#pragma GCC unroll 16
  for (int64_t v = 0; v < V; ++v) store_wide<T, Stream>(target + v * L, acc[v]);
}

template <typename T, typename Sources>
inline void weighted_sum_rest(Sources sources, const T* weights, int64_t count,
                              int64_t offset, int64_t width, T* __restrict__ target,
                              bool accumulate = false) {
  if (!accumulate) std::fill(target, target + width, T(0));
  for (int64_t e = 0; e < count; ++e) {
    const T weight = weights[e];
    const T* __restrict__ source = sources[e] + offset;
    for (int64_t c = 0; c < width; ++c) target[c] += weight * source[c];
  }
}

// target[0 .. width) = sum_e weights[e] * sources[e][offset .. offset + width).
template <typename T, bool Stream = false, typename Sources>
inline void weighted_sum(Sources sources, const T* weights, int64_t count, int64_t offset,
                         int64_t width, T* target) {
  constexpr int64_t W = kTile<T>;
  int64_t c = 0;
  for (; c + W <= width; c += W)
    weighted_sum_tile<T, W, Stream>(sources, weights, count, offset + c, target + c);
  constexpr int64_t L = WideVector<T>::lanes;  // what is left: single vectors, then scalars
  for (; c + L <= width; c += L)
    weighted_sum_tile<T, L>(sources, weights, count, offset + c, target + c);
  if (c < width) weighted_sum_rest(sources, weights, count, offset + c, width - c, target + c);
}

// Column blocks of a table [n, dim] small enough (<= 512 KiB) to stay in the L2 cache while
// every output row reads its k rows of the block.
template <typename T>
int64_t column_block(int64_t n, int64_t dim) {
  int64_t block = (524288 / static_cast<int64_t>(sizeof(T))) / std::max<int64_t>(n, 1);
  block = std::max(kTile<T>, block / kTile<T> * kTile<T>);
  return std::min(dim, block);
}

// out[r] = sum_j values[r, j] * table[columns[r, j]]   (out: [rows, dim], table: [n, dim])
template <typename T, bool Stream>
void gather_rows_sum_blocks(const int64_t* columns, const T* values, int64_t rows, int64_t kept,
                            const T* table, int64_t n, int64_t dim, T* out) {
  const int64_t grain = grain_for(kParallelWork, kept * dim);
  const int64_t block = column_block<T>(n, dim);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<const T*> sources(kept);
    for (int64_t c0 = 0; c0 < dim; c0 += block) {
      const int64_t width = std::min(dim, c0 + block) - c0;
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t j = 0; j < kept; ++j) sources[j] = table + columns[r * kept + j] * dim;
        weighted_sum<T, Stream>(RowPointers<T>{sources.data()}, values + r * kept, kept, c0, width,
                                out + r * dim + c0);
      }
    }
  });
#if defined(__AVX512F__)
  if constexpr (Stream) _mm_sfence();
#endif
}

// Outputs far larger than the caches are streamed (see store_wide): their lines would
// otherwise be read first and evict the block of the table the rows are summed from.
template <typename T>
void gather_rows_sum(const int64_t* columns, const T* values, int64_t rows, int64_t kept,
                     const T* table, int64_t n, int64_t dim, T* out) {
  if (streams(out, rows, dim))
    gather_rows_sum_blocks<T, true>(columns, values, rows, kept, table, n, dim, out);
  else
    gather_rows_sum_blocks<T, false>(columns, values, rows, kept, table, n, dim, out);
}

// grad[n, dim] = sum over kept entries (r, j) of values[r, j] * inputs[r] into row
// columns[r, j]; rows nobody kept are 0. ``nonzero`` (may be null) marks the rows of ``grad``
// that may be non-zero on entry — a persistent buffer: only those of them nobody keeps now are
// cleared — and on return marks the rows written. Entries are grouped by target row within
// blocks of input rows (a counting sort), so each target tile is accumulated in registers over
// all its entries of a block; threads own column tiles, so no two write the same memory.
template <typename T>
void scatter_rows_sum(const int64_t* columns, const T* values, int64_t rows, int64_t kept,
                      const T* inputs, int64_t dim, int64_t n, T* grad, char* nonzero) {
  constexpr int64_t kRowBlock = 512;
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  // CSR per block: entries of block b for target row t are order[start[b*(n+1)+t] ..).
  std::vector<int64_t> start(blocks * (n + 1), 0), targets;
  TORCH_CHECK(rows <= std::numeric_limits<int32_t>::max(), "scatter_rows_sum: too many rows");
  std::vector<int32_t> order_rows(rows * kept);
  std::vector<T> order_values(rows * kept);
  std::vector<int64_t> target_offsets(blocks + 1, 0);
  for (int64_t b = 0; b < blocks; ++b) {
    int64_t* count = start.data() + b * (n + 1);
    const int64_t r0 = b * kRowBlock, r1 = std::min(rows, r0 + kRowBlock);
    for (int64_t e = r0 * kept; e < r1 * kept; ++e) ++count[columns[e] + 1];
    for (int64_t t = 0; t < n; ++t) {
      if (count[t + 1]) targets.push_back(t);
      count[t + 1] += count[t];
    }
    target_offsets[b + 1] = static_cast<int64_t>(targets.size());
    std::vector<int64_t> fill(count, count + n);
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < kept; ++j) {
        const int64_t slot = r0 * kept + fill[columns[r * kept + j]]++;
        order_rows[slot] = static_cast<int32_t>(r);
        order_values[slot] = values[r * kept + j];
      }
    }
  }
  // Rows nobody kept are zeroed whole, once; every other row is written by the tiles below.
  std::vector<char> kept_row(n, 0);
  for (const int64_t t : targets) kept_row[t] = 1;
  for (int64_t t = 0; t < n; ++t)
    if (!kept_row[t] && (nonzero == nullptr || nonzero[t]))
      std::memset(grad + t * dim, 0, dim * sizeof(T));
  if (nonzero != nullptr) std::memcpy(nonzero, kept_row.data(), n);
  if (blocks == 1) {  // small batches: each kept row is one weighted sum of its input rows
    const int64_t* count = start.data();
    const int64_t grain = grain_for(kParallelWork, dim * kept);
    at::parallel_for(0, target_offsets[1], grain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t t = targets[i];
        weighted_sum(RowNumbers<T>{inputs, dim, order_rows.data() + count[t]},
                     order_values.data() + count[t], count[t + 1] - count[t], 0, dim,
                     grad + t * dim);
      }
    });
    return;
  }
  // 256-byte column tiles: a block's rows of one tile (128 KB) and the next pass's rows, being
  // prefetched, stay in L2 beside the tile of the gradient. (Blocks of 512 rows and the
  // prefetch into L1 measured 5-10 % faster than 1,024 rows prefetched into L2 only.)
  constexpr int64_t W = 256 / sizeof(T), kLines = 256 / 64;
  const int64_t tiles = (dim + W - 1) / W;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<char> written(n);
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t c0 = tile * W, width = std::min(dim, c0 + W) - c0;
      std::fill(written.begin(), written.end(), 0);
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t* count = start.data() + b * (n + 1);
        const int64_t base = b * kRowBlock * kept;
        // The input rows of the next pass (the next block, or the next tile's first), read
        // in short pieces far apart: the hardware prefetcher misses them, so a few are
        // prefetched before each target row here.
        const bool last = b + 1 == blocks;
        const int64_t next_c0 = last ? c0 + W : c0;
        int64_t cursor = last ? 0 : (b + 1) * kRowBlock;
        const int64_t stop = (last && tile + 1 == end) || next_c0 >= dim
                                 ? cursor
                                 : std::min(rows, cursor + kRowBlock);
        const int64_t here = std::max<int64_t>(1, target_offsets[b + 1] - target_offsets[b]);
        const int64_t ahead = (stop - cursor + here - 1) / here;
        for (int64_t i = target_offsets[b]; i < target_offsets[b + 1]; ++i) {
          for (int64_t q = 0; q < ahead && cursor < stop; ++q, ++cursor) {
            const char* piece = reinterpret_cast<const char*>(inputs + cursor * dim + next_c0);
            for (int64_t line = 0; line < kLines; ++line)
              __builtin_prefetch(piece + line * 64, 0, 3);
          }
          const int64_t t = targets[i];
          const int64_t first = base + count[t], entries = count[t + 1] - count[t];
          const RowNumbers<T> sources{inputs, dim, order_rows.data() + first};
          const T* weights = order_values.data() + first;
          T* row = grad + t * dim + c0;
          if (width < W)  // the first block writes the tile, later ones add to it
            weighted_sum_rest(sources, weights, entries, c0, width, row, written[t]);
          else if (written[t])
            weighted_sum_tile<T, W, false, true>(sources, weights, entries, c0, row);
          else
            weighted_sum_tile<T, W>(sources, weights, entries, c0, row);
          written[t] = 1;
        }
      }
    }
  });
}

int64_t count_touched(const int64_t* columns, int64_t entries, int64_t n) {
  std::vector<char> seen(n, 0);
  int64_t touched = 0;
  for (int64_t e = 0; e < entries; ++e) {
    if (!seen[columns[e]]) {
      seen[columns[e]] = 1;
      ++touched;
    }
  }
  return touched;
}

void check_input(const at::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(tensor.is_contiguous(), name, " must be contiguous");
}

// ---- unified: products with the k kept columns ------------------------------------------------
//
// With one k-set for the batch the products are dense but skinny — [rows, k] x [k, dim] and
// [k, rows] x [rows, dim] with k ~ 20 — a shape on which MKL runs at half its peak here. These
// register-tiled loops run near it: a tile of outputs accumulated in registers over all k.

// The rows of a [k, dim] table: consecutive (the LSTM's transposed weight) ...
template <typename T>
struct DenseRows {
  const T* table;
  int64_t dim;
  const T* operator[](int64_t j) const { return table + j * dim; }
};

// out[r][c0 .. c0 + V lanes) = sum_j kept[r][j] * table[j][..], for R rows at once; plus
// addend[r][..] (rows dim apart, like out) where addend is given. ``table``: DenseRows, or
// RowPointers (unified's input gradient reads its k rows of the weight where they are).
template <typename T, int R, int V, bool Stream, typename Rows>
inline void kept_product_tile(const T* kept, int64_t stride, int64_t k, Rows table,
                              int64_t dim, int64_t c0, T* out, const T* addend = nullptr) {
  constexpr int64_t L = WideVector<T>::lanes;
  Wide<T> acc[R][V] = {};
  if (addend != nullptr)
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < V; ++v) acc[r][v] = load_wide(addend + r * dim + c0 + v * L);
  for (int64_t j = 0; j < k; ++j) {
    Wide<T> row[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) row[v] = load_wide(table[j] + c0 + v * L);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Wide<T> weight = Wide<T>{} + kept[r * stride + j];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[r][v] += weight * row[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) store_wide<T, Stream>(out + r * dim + c0 + v * L, acc[r][v]);
}

template <typename T, int R, bool Stream, typename Rows>
void kept_product_rows(const T* kept, int64_t stride, int64_t k, Rows table, int64_t dim,
                       T* out) {
  constexpr int64_t L = WideVector<T>::lanes;
  int64_t c = 0;
  for (; c + 4 * L <= dim; c += 4 * L)
    kept_product_tile<T, R, 4, Stream>(kept, stride, k, table, dim, c, out);
  for (; c + L <= dim; c += L)
    kept_product_tile<T, R, 1, Stream>(kept, stride, k, table, dim, c, out);
  for (; c < dim; ++c) {
    for (int r = 0; r < R; ++r) {
      T sum = 0;
      for (int64_t j = 0; j < k; ++j) sum += kept[r * stride + j] * table[j][c];
      out[r * dim + c] = sum;
    }
  }
}

template <typename T, bool Stream, typename Rows>
void kept_product_blocks(const T* kept, int64_t rows, int64_t stride, int64_t k, Rows table,
                         int64_t dim, T* out) {
  constexpr int64_t R = 6;  // 6 rows x 4 vectors: 24 accumulators of the 32 registers
  const int64_t blocks = (rows + R - 1) / R;
  const int64_t grain = grain_for(kTiledParallelWork, R * k * dim);
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* source = kept + b * R * stride;
      T* target = out + b * R * dim;
      switch (std::min(R, rows - b * R)) {
        case 6: kept_product_rows<T, 6, Stream>(source, stride, k, table, dim, target); break;
        case 5: kept_product_rows<T, 5, Stream>(source, stride, k, table, dim, target); break;
        case 4: kept_product_rows<T, 4, Stream>(source, stride, k, table, dim, target); break;
        case 3: kept_product_rows<T, 3, Stream>(source, stride, k, table, dim, target); break;
        case 2: kept_product_rows<T, 2, Stream>(source, stride, k, table, dim, target); break;
        default: kept_product_rows<T, 1, Stream>(source, stride, k, table, dim, target); break;
      }
    }
  });
#if defined(__AVX512F__)
  if constexpr (Stream) _mm_sfence();  // streamed stores are weakly ordered
#endif
}

// out [rows, dim] = kept [rows, k] (rows ``stride`` apart) x table [k, dim].
template <typename T, typename Rows>
void kept_product(const T* kept, int64_t rows, int64_t stride, int64_t k, Rows table,
                  int64_t dim, T* out) {
  if (streams(out, rows, dim))
    kept_product_blocks<T, true>(kept, rows, stride, k, table, dim, out);
  else
    kept_product_blocks<T, false>(kept, rows, stride, k, table, dim, out);
}

// out[r] = addend[r] + h[r] x table for r < rows: the LSTM forward's recurrent product, with
// h [rows, k] one time step's hidden states and table [k, dim] the recurrent weight transposed.
// at::addmm repacked the 4 MB weight on every call, half of the forward's time at the tagger's
// shape (8 sentences: 0.2 ms per step). Threads split the columns, as the steps have few rows.
template <typename T, int R>
void recurrent_rows(const T* h, int64_t k, const T* table, int64_t dim, const T* addend, T* out,
                    int64_t tile_begin, int64_t tile_end, int64_t tiles) {
  constexpr int64_t L = WideVector<T>::lanes, V = 3;
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    if (tile < tiles) {
      kept_product_tile<T, R, V, false>(h, k, k, DenseRows<T>{table, dim}, dim, tile * V * L,
                                        out, addend);
      continue;
    }
    int64_t c = tiles * V * L;  // the columns left after whole tiles
    for (; c + L <= dim; c += L)
      kept_product_tile<T, R, 1, false>(h, k, k, DenseRows<T>{table, dim}, dim, c, out,
                                        addend);
    for (; c < dim; ++c) {
      for (int r = 0; r < R; ++r) {
        T sum = addend[r * dim + c];
        for (int64_t j = 0; j < k; ++j) sum += h[r * k + j] * table[j * dim + c];
        out[r * dim + c] = sum;
      }
    }
  }
}

#if defined(__AVX512F__)
// The 16 x 16 floats at source (rows ``from`` apart), transposed into out (rows ``to`` apart):
// unpacks of 32- and 64-bit pairs, then two rounds of 128-bit lane shuffles.
inline void transpose_16x16(const float* source, int64_t from, float* out, int64_t to) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(source + i * from);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int i = 0; i < 16; i += 8) {
    for (int j = 0; j < 4; ++j) {
      t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
      t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
    }
  }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
  }
  for (int j = 0; j < 16; ++j) _mm512_storeu_ps(out + j * to, r[j]);  // r[j]: column j
}
#endif

// out [cols, rows] = source [rows, cols] transposed, split over threads in bands of 16 rows.
// at::contiguous took 0.6 ms for the LSTM's 4 MB recurrent weight, a fifth of a direction's
// forward at the tagger's shape.
template <typename T>
void transpose_into(const T* source, int64_t rows, int64_t cols, T* out) {
  constexpr int64_t B = 16;
  at::parallel_for(0, (rows + B - 1) / B, 8, [&](int64_t begin, int64_t end) {
    for (int64_t band = begin; band < end; ++band) {
      const int64_t r0 = band * B, r1 = std::min(rows, r0 + B);
      int64_t c0 = 0;
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<T, float>) {
        if (r1 - r0 == B)
          for (; c0 + B <= cols; c0 += B)
            transpose_16x16(source + r0 * cols + c0, cols, out + c0 * rows + r0, rows);
      }
#endif
      for (int64_t c = c0; c < cols; ++c)
        for (int64_t r = r0; r < r1; ++r) out[c * rows + r] = source[r * cols + c];
    }
  });
}

template <typename T>
void recurrent_product(const T* h, int64_t rows, int64_t k, const T* table, int64_t dim,
                       const T* addend, T* out) {
  constexpr int64_t L = WideVector<T>::lanes, V = 3, R = 8;
  const int64_t tiles = dim / (V * L);
  const int64_t grain = grain_for(kTiledParallelWork, rows * k * V * L);
  at::parallel_for(0, tiles + 1, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r0 = 0; r0 < rows; r0 += R) {
      const T* h_rows = h + r0 * k;
      const T* add = addend + r0 * dim;
      T* target = out + r0 * dim;
      switch (std::min(R, rows - r0)) {
        case 8: recurrent_rows<T, 8>(h_rows, k, table, dim, add, target, begin, end, tiles); break;
        case 7: recurrent_rows<T, 7>(h_rows, k, table, dim, add, target, begin, end, tiles); break;
        case 6: recurrent_rows<T, 6>(h_rows, k, table, dim, add, target, begin, end, tiles); break;
        case 5: recurrent_rows<T, 5>(h_rows, k, table, dim, add, target, begin, end, tiles); break;
        case 4: recurrent_rows<T, 4>(h_rows, k, table, dim, add, target, begin, end, tiles); break;
        case 3: recurrent_rows<T, 3>(h_rows, k, table, dim, add, target, begin, end, tiles); break;
        case 2: recurrent_rows<T, 2>(h_rows, k, table, dim, add, target, begin, end, tiles); break;
        default: recurrent_rows<T, 1>(h_rows, k, table, dim, add, target, begin, end, tiles);
      }
    }
  });
}

// kJ kept columns x V vectors of accumulators: out rows j0 .. j0+kJ (row pointers), columns
// c0 .. += the rows [b0, b1) of kept^T x inputs (=, for the first block: b0 == 0).
// ``ahead``: rows of ``inputs`` this far on are prefetched into L2 — the tile reads each of
// its rows in a short piece, too scattered for the hardware prefetcher, and without it the loop
// waits on memory.
constexpr int kJ = 5;

template <typename T, int V>
inline void transposed_tile(const T* kept, int64_t kp, int64_t j0, const T* inputs, int64_t dim,
                            int64_t b0, int64_t b1, int64_t c0, int64_t ahead, int64_t rows,
                            T* const* out) {
  constexpr int64_t L = WideVector<T>::lanes;
  Wide<T> acc[kJ][V] = {};
  if (b0 > 0) {
#pragma GCC unroll 8
    for (int j = 0; j < kJ; ++j)
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[j][v] = load_wide(out[j0 + j] + c0 + v * L);
  }
  for (int64_t b = b0; b < b1; ++b) {
    Wide<T> input[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) input[v] = load_wide(inputs + b * dim + c0 + v * L);
    if (ahead > 0 && b + ahead < rows) {
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) __builtin_prefetch(inputs + (b + ahead) * dim + c0 + v * L, 0, 1);
    }
#pragma GCC unroll 8
    for (int j = 0; j < kJ; ++j) {
      const Wide<T> weight = Wide<T>{} + kept[b * kp + j0 + j];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[j][v] += weight * input[v];
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < kJ; ++j)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) store_wide<T, false>(out[j0 + j] + c0 + v * L, acc[j][v]);
}

// out [kp rows of dim] = kept^T x inputs, kept [rows, kp] with kp a multiple of kJ; ``out``
// holds kp row pointers (unified writes the weight gradient's rows in place). Threads own
// column tiles (no reduction across threads); rows go in blocks of 64 whose tile stays in L1
// while every kJ-block of kept columns reads it.
template <typename T>
void transposed_product(const T* kept, int64_t rows, int64_t kp, const T* inputs, int64_t dim,
                        T* const* out) {
  constexpr int64_t L = WideVector<T>::lanes, V = 4, kRows = 64;
  const int64_t tiles = dim / (V * L);
  const int64_t grain = grain_for(kTiledParallelWork, rows * kp * V * L);
  at::parallel_for(0, tiles + 1, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b0 = 0; b0 < rows; b0 += kRows) {
      const int64_t b1 = std::min(rows, b0 + kRows);
      for (int64_t tile = begin; tile < end; ++tile) {
        if (tile < tiles) {
          for (int64_t j0 = 0; j0 < kp; j0 += kJ)
            transposed_tile<T, V>(kept, kp, j0, inputs, dim, b0, b1, tile * V * L,
                                  j0 == 0 ? kRows : 0, rows, out);
          continue;
        }
        int64_t c = tiles * V * L;  // the last, partial tile
        for (; c + L <= dim; c += L)
          for (int64_t j0 = 0; j0 < kp; j0 += kJ)
            transposed_tile<T, 1>(kept, kp, j0, inputs, dim, b0, b1, c, 0, rows, out);
        for (; c < dim; ++c) {
          for (int64_t j = 0; j < kp; ++j) {
            T sum = b0 > 0 ? out[j][c] : T(0);
            for (int64_t b = b0; b < b1; ++b) sum += kept[b * kp + j] * inputs[b * dim + c];
            out[j][c] = sum;
          }
        }
      }
    }
  });
}

// kept [rows, kp]: the columns ``columns`` [k] of grad [rows, n], then kp - k zero columns.
template <typename T>
void gather_columns(const T* grad, int64_t rows, int64_t n, const int64_t* columns, int64_t k,
                    int64_t kp, T* kept) {
  at::parallel_for(0, rows, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < k; ++j) kept[r * kp + j] = grad[r * n + columns[j]];
      for (int64_t j = k; j < kp; ++j) kept[r * kp + j] = T(0);
    }
  });
}

// ---- memory for large gradients --------------------------------------------------------------
//
// PyTorch's CPU allocator returns a large block to the OS when it is freed and takes fresh pages
// for the next: at the parser's shape the 96 MB input gradient costs ~5 ms of page faults (the
// kernel zero-fills every page), as much as computing it; MNIST's 1.5 MB weight gradient
// (without persistent gradients) ~40 us, a third of its whole backward. The gradients of 1 MB
// and more that the layers here allocate (and the LSTM forward's 4 MB transposed weight, a
// fresh one per direction and call) come from this cache instead: a freed block waits for the
// next allocation of its size. The tensors are ordinary (resizable, freed by their
// last reference); only the memory is kept, up to kCacheBytes of idle blocks.
class BlockCache final : public c10::Allocator {
 public:
  static constexpr size_t kMinBytes = size_t{1} << 20, kCacheBytes = size_t{512} << 20;

  c10::DataPtr allocate(size_t bytes) override {
    void* data = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto block = idle_.begin(); block != idle_.end(); ++block) {
        if (block->second == bytes) {
          data = block->first;
          idle_bytes_ -= bytes;
          idle_.erase(block);
          break;
        }
      }
    }
    if (data == nullptr) data = c10::alloc_cpu(bytes);
    return {data, new Block{this, data, bytes}, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* target, const void* source, size_t bytes) const override {
    std::memcpy(target, source, bytes);
  }

 private:
  struct Block {
    BlockCache* cache;
    void* data;
    size_t bytes;
  };

  static void release(void* context) {
    auto* block = static_cast<Block*>(context);
    block->cache->keep(block->data, block->bytes);
    delete block;
  }

  void keep(void* data, size_t bytes) {
    if (data == nullptr) return;  // a zero-byte block (a tensor resized to nothing)
    std::lock_guard<std::mutex> lock(mutex_);
    while (!idle_.empty() && idle_bytes_ + bytes > kCacheBytes) {  // the oldest go first
      c10::free_cpu(idle_.front().first);
      idle_bytes_ -= idle_.front().second;
      idle_.erase(idle_.begin());
    }
    if (bytes > kCacheBytes) {
      c10::free_cpu(data);
      return;
    }
    idle_.emplace_back(data, bytes);
    idle_bytes_ += bytes;
  }

  std::mutex mutex_;
  std::vector<std::pair<void*, size_t>> idle_;
  size_t idle_bytes_ = 0;
};

// at::empty, from the cache when the tensor is large.
at::Tensor gradient_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  static auto* cache = new BlockCache();  // never destroyed: tensors may outlive static exit
  int64_t numel = 1;
  for (const int64_t size : sizes) numel *= size;
  const size_t bytes = static_cast<size_t>(numel) * options.dtype().itemsize();
  if (bytes < BlockCache::kMinBytes) return at::empty(sizes, options);
  c10::Storage storage(c10::Storage::use_byte_size_t(), bytes, cache, /*resizable=*/true);
  return at::empty({0}, options).set_(storage, 0, sizes);
}

// ---- linear ----------------------------------------------------------------------------------

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

template <typename T>
void add_row(const T* __restrict__ row, int64_t width, T* __restrict__ sum) {
  for (int64_t c = 0; c < width; ++c) sum[c] += row[c];
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

// ---- LSTM ------------------------------------------------------------------------------------

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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "meProp's backward on the CPU, compiled (see meprop/kernels/cpu.cpp)";
  module.def("linear", &linear);
  module.def("topk_columns", &topk_columns);
  module.def("lstm_layer", &lstm_layer);
  module.def("lstm_forward_directions", &lstm_forward_directions);
  module.def("touched_rows_adam", &touched_rows_adam);
  module.def("touched_rows_adagrad", &touched_rows_adagrad);
}
