// Memory for large gradients: a cache of freed blocks.
// Part of meProp's compiled CPU kernels: included by cpu.cpp only, which is compiled as one
// unit (hence the unnamed namespace) so that every call can be inlined, which the register
// tiles of the products depend on.

#pragma once

#include "common.h"

namespace {

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

}  // namespace
