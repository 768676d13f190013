// One batch of encoded images (JPEG/PNG bytes, as tar shards hold them) decoded and transformed
// in one call: samples run in parallel on ATen's intra-op pool, and the transform's own parallel
// loops run inline inside it. Calling the per-image functions from several Python threads
// instead oversubscribes the cores (each call opens its own parallel region: 3-5x slower on 2
// cores). A sample that fails to decode is left out and reported, never fatal.
//
//     BatchDecoder decode(transform);
//     BatchDecode out = decode(bytes, sources, seeds);
//     // out.pixels: float [ok, C, S, S]; out.rows: which inputs they are; out.errors: the others
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/data/buffer_pool.h"
#include "tessera/vision/image_transform.h"

namespace tessera::data {

struct BatchDecode {
  at::Tensor pixels;                ///< float [rows.size(), C, S, S]
  std::vector<int64_t> rows;        ///< input index of each output row, in order
  std::vector<std::string> errors;  ///< "<source>: <why>" for each input left out
};

class BatchDecoder {
 public:
  /// `buffers`: batch tensors kept for reuse (a fresh 38 MB batch costs ~10k page faults).
  /// `threads`: at most this many of the pool's threads decode a batch (0: the calling thread
  /// alone; -1: the whole pool), as the native loader's num_workers bounds its threads.
  explicit BatchDecoder(vision::TransformOptions transform, size_t buffers = 4, int64_t threads = -1)
      : transform_(std::move(transform)), pool_(buffers), threads_(threads) {}

  /// Sample i is decoded from images[i] (named sources[i] in errors) and transformed with a
  /// generator seeded by seeds[i]: its result does not depend on the thread that ran it.
  BatchDecode operator()(const std::vector<std::string>& images, const std::vector<std::string>& sources,
                         const std::vector<uint64_t>& seeds, int64_t max_pixels);

  const vision::ImageTransform& transform() const { return transform_; }

 private:
  vision::ImageTransform transform_;
  BufferPool pool_;
  int64_t threads_;
};

}  // namespace tessera::data
