#include "tessera/data/batch_decode.h"

#include <algorithm>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include "tessera/vision/image_decode.h"

namespace tessera::data {

BatchDecode BatchDecoder::operator()(const std::vector<std::string>& images, const std::vector<std::string>& sources,
                                     const std::vector<uint64_t>& seeds, int64_t max_pixels) {
  const vision::ImageTransform& transform = transform_;
  const int64_t n = static_cast<int64_t>(images.size());
  TORCH_CHECK_VALUE(sources.size() == images.size() && seeds.size() == images.size(), "decode_batch: ", n,
                    " images, ", sources.size(), " sources and ", seeds.size(), " seeds");
  const int64_t S = transform.options().image_size();
  const int64_t C = transform.output_channels(3);
  at::Tensor slots = pool_.acquire({n, C, S, S});
  std::vector<std::string> failed(images.size());
  // At most `threads_` chunks (0: one, which runs inline); -1: one per sample, the pool's split.
  const int64_t chunks = threads_ < 0 ? n : std::max<int64_t>(threads_, 1);
  const int64_t grain = std::max<int64_t>(1, (n + chunks - 1) / std::max<int64_t>(chunks, 1));
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      try {
        at::Tensor img = vision::decode_image(images[i], sources[i], max_pixels);
        TORCH_CHECK_VALUE(transform.output_channels(img.size(2)) == C, sources[i], ": ", img.size(2),
                          " channel(s) where the batch has ", C);
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seeds[i]);
        transform.apply_into(img, gen, slots[i]);
      } catch (const c10::Error& e) {
        failed[i] = e.what_without_backtrace();
        if (failed[i].empty()) failed[i] = sources[i] + ": undecodable";
      }
    }
  });
  BatchDecode out;
  for (int64_t i = 0; i < n; ++i) {
    if (failed[i].empty()) {
      out.rows.push_back(i);
    } else {
      out.errors.push_back(std::move(failed[i]));
    }
  }
  out.pixels = static_cast<int64_t>(out.rows.size()) == n
                   ? slots
                   : slots.index_select(0, at::tensor(out.rows, at::kLong));
  return out;
}

}  // namespace tessera::data
