// Dropout's mask from a counter-based hash: each element's keep/drop is a function of its
// index and a seed, so the threads and vector lanes need no shared generator state and the
// result is the same for any thread count. torch's CPU dropout draws its mask from one
// sequential generator, which at the parser's 10,000 x 500 hidden layers cost more than
// meProp's whole backward.
// Part of meProp's compiled CPU kernels: included by cpu.cpp only, which is compiled as one
// unit (hence the unnamed namespace).

#pragma once

#include "common.h"

namespace {

// A 32-bit integer hash with full avalanche (Wellons' "lowbias32"): 32-bit multiplies only,
// which every level's vector units have.
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// out = x * mask, mask[i] = scale where the hash of (i, seed) is at least ``threshold`` (a
// share 1 - threshold / 2^32 of the elements), else 0.
template <typename T>
void dropout_elements(const T* __restrict__ x, T* __restrict__ out, T* __restrict__ mask,
                      int64_t begin, int64_t end, uint32_t key, uint32_t salt, uint32_t threshold,
                      T scale) {
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t block = mix32(key + 0x9e3779b9U * static_cast<uint32_t>(i >> 32));
    const uint32_t hash = mix32(static_cast<uint32_t>(i) ^ block) ^ salt;
    const T keep = mix32(hash) >= threshold ? scale : T(0);
    mask[i] = keep;
    out[i] = x[i] * keep;
  }
}

// (output, mask) of dropout with probability p on x, the mask holding 0 or 1 / (1 - p) (the
// backward multiplies by it); ``seed`` chooses the mask.
std::tuple<at::Tensor, at::Tensor> dropout(const at::Tensor& input, double p, int64_t seed) {
  TORCH_CHECK(p >= 0 && p < 1, "dropout: need 0 <= p < 1");
  const auto x = input.contiguous();
  check_input(x, "input");
  auto out = at::empty_like(x), mask = at::empty_like(x);
  const uint64_t bits = static_cast<uint64_t>(seed);
  const uint32_t key = static_cast<uint32_t>(bits), salt = static_cast<uint32_t>(bits >> 32);
  const uint32_t threshold =
      static_cast<uint32_t>(std::min(p * 4294967296.0, 4294967295.0));
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dropout", [&] {
    using T = scalar_t;
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    const T* source = x.data_ptr<T>();
    T* target = out.data_ptr<T>();
    T* keep = mask.data_ptr<T>();
    at::parallel_for(0, n, kParallelWork, [&](int64_t begin, int64_t end) {
      dropout_elements(source, target, keep, begin, end, key, salt, threshold, scale);
    });
  });
  return {out, mask};
}

}  // namespace
