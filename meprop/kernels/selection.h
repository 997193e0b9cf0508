// Top-k selection: linear time per row, on the magnitudes' bit patterns.
// Part of meProp's compiled CPU kernels: included by cpu.cpp only, which is compiled as one
// unit (hence the unnamed namespace) so that every call can be inlined, which the register
// tiles of the products depend on.

#pragma once

#include "common.h"

namespace {

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

// 32 bytes of magnitude bits (8 int32 or 4 int64 lanes): the filter's unit below AVX-512, in
// the compiler's vector extensions (two registers at 16 bytes). A comparison gives -1 per lane
// that holds.
template <typename T>
using BitsVector = typename VectorOf<Bits<T>, 32>::type;

// Whether any lane of a comparison's result holds.
template <typename T>
inline bool any_lane(BitsVector<T> mask) {
  uint64_t words[4];
  std::memcpy(words, &mask, sizeof(words));
  return (words[0] | words[1] | words[2] | words[3]) != 0;
}

// How many of bits[0 .. vectors * kPad) are >= probe.
template <typename T>
inline int64_t count_at_least(const Bits<T>* bits, int64_t vectors, Bits<T> probe) {
#if defined(__AVX512F__)
  int64_t count = 0;
  using Ops = BitLanes<T>;
  const __m512i limit = Ops::broadcast(probe);
  for (int64_t v = 0; v < vectors; ++v)
    count += __builtin_popcount(Ops::at_least(_mm512_loadu_si512(bits + Ops::lanes * v), limit));
  return count;
#else
  // Per lane, the comparisons' -1s summed (minus the count); the lanes added once at the end.
  using V = BitsVector<T>;
  constexpr int64_t L = 32 / sizeof(T);
  const V limit = V{} + probe;
  V negated_counts{};
  for (int64_t i = 0; i < vectors * Scratch<T>::kPad; i += L)
    negated_counts += load_vector<V>(bits + i) >= limit;
  int64_t count = 0;
  for (int64_t l = 0; l < L; ++l) count -= negated_counts[l];
  return count;
#endif
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
#else
  // Vectors of which no entry passes (most of them: a few times k of n pass) are skipped
  // after one comparison; the others' entries are appended branch-free.
  using V = BitsVector<T>;
  constexpr int64_t L = 32 / sizeof(T);
  const V mask = V{} + std::numeric_limits<Bits<T>>::max(), bound = V{} + limit;
  for (; j + L <= n; j += L) {
    const V value = load_vector<V>(scores + j) & mask;
    const V above = value >= bound;
    if (!any_lane<T>(above)) continue;
    for (int64_t l = 0; l < L; ++l) {
      bits[count] = value[l];
      positions[count] = j + l;
      count += above[l] != 0;
    }
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

// Each group's k entries of largest magnitude in one row [groups * width]: columns
// [groups * k] (int64, into the full row).
template <typename T>
void select_groups(const T* row, int64_t groups, int64_t width, int64_t k, int64_t* columns,
                   Scratch<T>& scratch) {
  for (int64_t g = 0; g < groups; ++g) {
    int64_t* pos = columns + g * k;
    topk_positions(row + g * width, width, k, pos, scratch);
    for (int64_t j = 0; j < k; ++j) pos[j] += g * width;
  }
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
      int64_t* row_columns = columns + r * groups * k;
      select_groups(row, groups, width, k, row_columns, scratch);
      for (int64_t j = 0; j < groups * k; ++j) values[r * groups * k + j] = row[row_columns[j]];
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
  if (rows == 1 && column_sums == nullptr) {
    // One row (an LSTM step of one sentence): its magnitudes rank as their sums would, and the
    // same candidates in the same order give the same columns, without the sums in double.
    // That was half the selection's time at the tagger's shape (~25 us of a direction's ~380).
    Scratch<T> scratch(width);
    select_groups(grad, groups, width, k, columns, scratch);
    return;
  }
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
  select_groups(partial.data(), groups, width, k, columns, scratch);
}

}  // namespace
