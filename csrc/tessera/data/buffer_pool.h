// A pool of batch buffers, shared by the native loader and the shard batch decoder.
#pragma once
#include <ATen/ATen.h>

#include <mutex>
#include <vector>

namespace tessera::data {

// Reuses CPU batch buffers the consumer has let go of. A 64 x 3 x 224 x 224 float batch is
// 38 MB: above glibc's mmap threshold, so each fresh one costs ~10k page faults and zeroing
// (a third of a loader thread's time, measured). The pool keeps one base tensor per buffer
// and hands out views of it: a buffer is free when no view is left, i.e. its storage has one
// reference. Views, because a tensor that has been to Python keeps its TensorImpl referenced
// from its preserved PyObject, so the base's own use count never drops back.
// Pinned batches skip the pool: CUDA's caching host allocator already recycles them, and it
// also waits for async copies still reading a buffer, which we could not see.
class BufferPool {
 public:
  explicit BufferPool(size_t capacity) : capacity_(capacity) {}
  at::Tensor acquire(at::IntArrayRef sizes) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const at::Tensor& t : pool_) {
      if (t.sizes() == sizes && t.storage().use_count() == 1) return t.view(sizes);
    }
    at::Tensor t = at::empty(sizes, at::kFloat);
    if (pool_.size() < capacity_) pool_.push_back(t);
    return t.view(sizes);
  }

 private:
  std::mutex mu_;
  std::vector<at::Tensor> pool_;
  size_t capacity_;
};

}  // namespace tessera::data
