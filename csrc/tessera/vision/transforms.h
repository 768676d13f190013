// Image transforms after torchvision.transforms.v2.functional (resize, center_crop, crop,
// horizontal_flip, normalize, RandomResizedCrop.make_params), on ATen ops, so they run
// without OpenCV and give torchvision's tensor results.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

namespace tessera::vision {

// Image layout convention for every function here: a uint8 tensor is HWC (as decode_image
// returns it), a floating tensor is CHW (as models take it). The dtype decides, so a
// [3, H, 3] tensor is never ambiguous.

enum class Interpolation { bilinear, bicubic };

/// (height, width) after resizing the shorter side to `size`, the longer side scaled and
/// truncated (torchvision's `_compute_resized_output_size` with an int size).
std::pair<int64_t, int64_t> shortest_side_size(int64_t height, int64_t width, int64_t size);

/// Antialiased resize (torchvision `resize(..., antialias=True)` on tensors; PIL-like
/// filters): uint8 stays uint8 (ATen's native uint8 kernel, as torchvision v2 uses), float
/// stays float. Returns `img` itself when the size is unchanged, as torchvision does.
///
///     at::Tensor small = resize(rgb_u8_hwc, 224, 298);  // uint8 [224, 298, 3]
at::Tensor resize(const at::Tensor& img, int64_t height, int64_t width,
                  Interpolation interpolation = Interpolation::bicubic);

/// resize() with the shorter side to `size`: torchvision `Resize(size)` with an int size.
at::Tensor resize_shortest(const at::Tensor& img, int64_t size,
                           Interpolation interpolation = Interpolation::bicubic);

/// A view of rows [top, top + height) and columns [left, left + width). The box must lie
/// inside the image (c10::ValueError otherwise).
at::Tensor crop(const at::Tensor& img, int64_t top, int64_t left, int64_t height, int64_t width);

/// torchvision `center_crop`: offsets round((H - h) / 2) half-to-even as Python's round (with
/// `floor_offsets`, (H - h) / 2 rounded down, as transformers' image processors crop); an image
/// smaller than the crop is first zero-padded around (floor left/top, ceil right/bottom).
///
///     at::Tensor sq = center_crop(small, 224, 224);
at::Tensor center_crop(const at::Tensor& img, int64_t height, int64_t width, bool floor_offsets = false);

/// Mirror left-right (a copy).
at::Tensor horizontal_flip(const at::Tensor& img);

/// uint8 -> float conversion and per-channel normalisation, as ToTensor (x / 255) followed by
/// Normalize ((x - mean) / std), in float32 with the same rounding, so results are bitwise
/// torchvision's. Precomputes a 256-entry table per channel, so a uint8 image costs one
/// lookup per value. One input channel broadcasts to all of mean.size() channels
/// (grayscale -> RGB, as PIL's convert("RGB")).
///
///     Normalize norm({0.481, 0.458, 0.408}, {0.269, 0.261, 0.276});
///     at::Tensor x = norm(rgb_u8_hwc);  // float [3, H, W]
class Normalize {
 public:
  Normalize(std::vector<double> mean, std::vector<double> std);

  /// uint8 HWC -> float CHW (scaled by 1/255), or float CHW -> float CHW (not rescaled).
  at::Tensor operator()(const at::Tensor& img) const;

  /// Writes the normalised uint8 HWC `img` (any strides) into `out`, a contiguous float
  /// [channels, H, W] tensor (e.g. one slot of a batch); `flip` mirrors left-right on the way.
  void into(const at::Tensor& img, const at::Tensor& out, bool flip = false) const;

  int64_t channels() const { return static_cast<int64_t>(mean_.size()); }

 private:
  std::vector<float> mean_, std_;
  std::vector<std::array<float, 256>> table_;  // [channel][uint8 value]
};

/// Normalize(mean, std)(img), for one-off use.
at::Tensor to_float_normalized(const at::Tensor& img, const std::vector<double>& mean,
                               const std::vector<double>& std);

/// A crop box in pixels.
struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

/// torchvision's RandomResizedCrop.make_params for an image of `height` x `width`: up to 10
/// draws of area fraction in `scale` and log-uniform aspect ratio in `ratio`, then a
/// ratio-clamped center crop. Draws from `gen` exactly as torchvision draws from the global
/// generator, so the same seed gives the same box.
///
///     auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
///     CropBox box = random_resized_crop_box(256, 320, {0.08, 1.0}, {3. / 4, 4. / 3}, gen);
CropBox random_resized_crop_box(int64_t height, int64_t width, std::array<double, 2> scale,
                                std::array<double, 2> ratio, at::Generator gen);

/// Crop `random_resized_crop_box` and resize it to `height` x `width`.
at::Tensor random_resized_crop(const at::Tensor& img, int64_t height, int64_t width,
                               std::array<double, 2> scale, std::array<double, 2> ratio,
                               at::Generator gen,
                               Interpolation interpolation = Interpolation::bicubic);

/// One draw of RandomHorizontalFlip: true with probability `p` (torch.rand(1) < p).
bool draw_horizontal_flip(double p, at::Generator gen);

/// horizontal_flip(img) when draw_horizontal_flip(p, gen), else img.
at::Tensor random_horizontal_flip(const at::Tensor& img, double p, at::Generator gen);

}  // namespace tessera::vision
