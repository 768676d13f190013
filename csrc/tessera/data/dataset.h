// The map-style dataset interface, after torch.utils.data.Dataset (__len__/__getitem__) and
// LibTorch's torch::data::datasets::Dataset, reduced to what the image loader needs.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::data {

/// One example: a decoded image and its target.
struct Sample {
  at::Tensor image;     ///< uint8 [H, W, C], C = 1 or 3 (decode_image's layout)
  int64_t label = -1;   ///< class index; -1 when the dataset has no classes
  std::string caption;  ///< empty when the dataset has no captions
};

/// A random-access collection of samples. `get` must be safe to call from several threads
/// at once (the loader's workers do) and should throw c10::Error naming the file for a bad
/// sample; the loader skips it and records the message.
///
///     struct Squares : tessera::data::Dataset {
///       int64_t size() const override { return 10; }
///       Sample get(int64_t i) const override { return {at::full({2, 2, 1}, i, at::kByte), i, ""}; }
///     };
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Sample get(int64_t index) const = 0;
  /// Class names, index = label (empty when the dataset has no classes).
  virtual std::vector<std::string> classes() const { return {}; }
  /// Whether samples carry captions (the loader then returns them).
  virtual bool has_captions() const { return false; }
  /// Where sample `index` comes from (file path, or "file#index"), for error reports.
  virtual std::string source(int64_t index) const { return "sample " + std::to_string(index); }
};

}  // namespace tessera::data
