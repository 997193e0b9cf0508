// Per-example meProp's products: sums over each row's kept entries, gathered and scattered.
// Part of meProp's compiled CPU kernels: included by cpu.cpp only, which is compiled as one
// unit (hence the unnamed namespace) so that every call can be inlined, which the register
// tiles of the products depend on.

#pragma once

#include "common.h"

namespace {

// Register tiles: kTile(T) consecutive columns (kTiles.sum_vectors registers: 512 bytes with
// AVX-512, 256 with AVX2) are accumulated in registers over all the entries that write them
// before one store.
template <typename T>
constexpr int64_t kTile = kTiles.sum_vectors * kVectorBytes / sizeof(T);

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
    const Wide<T> weight = splat<T>(weights[e]);
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
  if constexpr (Stream) stream_fence();
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
  // Column tiles of kTiles.scatter_bytes (256; 128 at 16-byte vectors, as 8 registers): a
  // block's rows of one tile (128 KB) and the next pass's rows, being prefetched, stay in L2
  // beside the tile of the gradient. (Blocks of 512 rows and the
  // prefetch into L1 measured 5-10 % faster than 1,024 rows prefetched into L2 only.)
  constexpr int64_t W = kTiles.scatter_bytes / sizeof(T), kLines = kTiles.scatter_bytes / 64;
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

}  // namespace
