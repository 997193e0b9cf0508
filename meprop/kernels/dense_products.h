// Unified meProp's products with the k kept columns, and the LSTM forward's recurrent product.
// Part of meProp's compiled CPU kernels: included by cpu.cpp only, which is compiled as one
// unit (hence the unnamed namespace) so that every call can be inlined, which the register
// tiles of the products depend on.

#pragma once

#include "common.h"

namespace {

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
// Not inlined (nor transposed_tile): inlined into the OpenMP lambdas beside their other tile
// shapes, GCC kept half of the AVX2 accumulators on the stack; a call per tile costs nothing
// beside its k (or 64-row) loop.
template <typename T, int R, int V, bool Stream, typename Rows>
__attribute__((noinline)) void kept_product_tile(const T* kept, int64_t stride, int64_t k,
                                                 Rows table, int64_t dim, int64_t c0, T* out,
                                                 const T* addend = nullptr) {
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
      const Wide<T> weight = splat<T>(kept[r * stride + j]);
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
  constexpr int64_t L = WideVector<T>::lanes, V = kTiles.kept_vectors;
  int64_t c = 0;
  for (; c + V * L <= dim; c += V * L)
    kept_product_tile<T, R, V, Stream>(kept, stride, k, table, dim, c, out);
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
  constexpr int R = kTiles.kept_rows;
  const int64_t blocks = (rows + R - 1) / R;
  const int64_t grain = grain_for(kTiledParallelWork, R * k * dim);
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* source = kept + b * R * stride;
      T* target = out + b * R * dim;
      with_rows<R>(std::min<int64_t>(R, rows - b * R), [&](auto count) {
        kept_product_rows<T, count(), Stream>(source, stride, k, table, dim, target);
      });
    }
  });
  if constexpr (Stream) stream_fence();
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
  constexpr int64_t L = WideVector<T>::lanes, V = kTiles.recurrent_vectors;
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
#elif defined(__AVX2__)
// The 8 x 8 floats at source (rows ``from`` apart), transposed into out (rows ``to`` apart):
// unpacks of 32- and 64-bit pairs, then one round of 128-bit lane permutes.
inline void transpose_8x8(const float* source, int64_t from, float* out, int64_t to) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(source + i * from);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
  }
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x20);      // column j
    t[j + 4] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x31);  // column j + 4
  }
  for (int j = 0; j < 8; ++j) _mm256_storeu_ps(out + j * to, t[j]);
}
#endif

// The float transpose's block: 16 x 16 with AVX-512, 8 x 8 with AVX2, else none (scalar).
#if defined(__AVX512F__)
constexpr int64_t kTransposeBlock = 16;
inline void transpose_block(const float* source, int64_t from, float* out, int64_t to) {
  transpose_16x16(source, from, out, to);
}
#elif defined(__AVX2__)
constexpr int64_t kTransposeBlock = 8;
inline void transpose_block(const float* source, int64_t from, float* out, int64_t to) {
  transpose_8x8(source, from, out, to);
}
#else
constexpr int64_t kTransposeBlock = 0;
inline void transpose_block(const float*, int64_t, float*, int64_t) {}
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
      if constexpr (std::is_same_v<T, float> && kTransposeBlock > 0) {
        constexpr int64_t S = kTransposeBlock;
        if (r1 - r0 == B)
          for (; c0 + S <= cols; c0 += S)
            for (int64_t q = r0; q < r1; q += S)
              transpose_block(source + q * cols + c0, cols, out + c0 * rows + q, rows);
      }
      for (int64_t c = c0; c < cols; ++c)
        for (int64_t r = r0; r < r1; ++r) out[c * rows + r] = source[r * cols + c];
    }
  });
}

template <typename T>
void recurrent_product(const T* h, int64_t rows, int64_t k, const T* table, int64_t dim,
                       const T* addend, T* out) {
  constexpr int64_t L = WideVector<T>::lanes, V = kTiles.recurrent_vectors;
  constexpr int R = kTiles.recurrent_rows;
  const int64_t tiles = dim / (V * L);
  const int64_t grain = grain_for(kTiledParallelWork, rows * k * V * L);
  at::parallel_for(0, tiles + 1, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r0 = 0; r0 < rows; r0 += R) {
      const T* h_rows = h + r0 * k;
      const T* add = addend + r0 * dim;
      T* target = out + r0 * dim;
      with_rows<R>(std::min<int64_t>(R, rows - r0), [&](auto count) {
        recurrent_rows<T, count()>(h_rows, k, table, dim, add, target, begin, end, tiles);
      });
    }
  });
}

// kJ kept columns x V vectors of accumulators: out rows j0 .. j0+kJ (row pointers), columns
// c0 .. += the rows [b0, b1) of kept^T x inputs (=, for the first block: b0 == 0).
// ``ahead``: rows of ``inputs`` this far on are prefetched into L2 — the tile reads each of
// its rows in a short piece, too scattered for the hardware prefetcher, and without it the loop
// waits on memory.
constexpr int kJ = kTiles.transposed_columns;

template <typename T, int V>
__attribute__((noinline)) void transposed_tile(const T* kept, int64_t kp, int64_t j0,
                                               const T* inputs, int64_t dim, int64_t b0,
                                               int64_t b1, int64_t c0, int64_t ahead,
                                               int64_t rows, T* const* out) {
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
      const Wide<T> weight = splat<T>(kept[b * kp + j0 + j]);
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
  constexpr int64_t L = WideVector<T>::lanes, V = kTiles.transposed_vectors, kRows = 64;
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

}  // namespace
