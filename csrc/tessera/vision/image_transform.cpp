// CLIP evaluation and training pipelines after open_clip's transform.py (image_transform):
// geometry on uint8 with ATen's antialiased kernels, then one fused flip + float + normalise.
#include "tessera/vision/image_transform.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <string>
#include <vector>

namespace tessera::vision {
namespace {

/// LLaVA's expand2square: the image centred on a square of `mean` (uint8: int(mean * 255), as
/// LLaVA truncates), the offset (long - short) / 2 rounded down.
at::Tensor pad_to_square(const at::Tensor& img, const std::vector<double>& mean) {
  const bool u8 = img.scalar_type() == at::kByte;
  const int64_t H = img.size(u8 ? 0 : 1), W = img.size(u8 ? 1 : 2), C = img.size(u8 ? 2 : 0);
  if (H == W) return img;
  const int64_t side = std::max(H, W);
  std::vector<double> fill(C);
  for (int64_t c = 0; c < C; ++c) {
    const double m = mean.at(C == 1 ? 0 : c);
    fill[c] = u8 ? static_cast<double>(static_cast<int64_t>(m * 255)) : m;
  }
  at::Tensor colour = at::tensor(fill, at::kDouble).to(img.scalar_type());
  at::Tensor out = u8 ? colour.view({1, 1, C}).expand({side, side, C}).contiguous()
                      : colour.view({C, 1, 1}).expand({C, side, side}).contiguous();
  const int64_t top = (side - H) / 2, left = (side - W) / 2;
  (u8 ? out.narrow(0, top, H).narrow(1, left, W) : out.narrow(1, top, H).narrow(2, left, W)).copy_(img);
  return out;
}

}  // namespace

ImageTransform::ImageTransform(TransformOptions options)
    : options_(std::move(options)),
      normalize_(options_.mean(), options_.std()),
      normalize_gray_({options_.mean().at(0)}, {options_.std().at(0)}) {
  TORCH_CHECK_VALUE(options_.image_size() > 0, "TransformOptions: image_size must be positive, got ",
                    options_.image_size());
  TORCH_CHECK_VALUE(options_.resize_size() >= 0, "TransformOptions: resize_size must be >= 0, got ",
                    options_.resize_size());
  const std::string& mode = options_.resize_mode();
  TORCH_CHECK_VALUE(mode == "shortest" || mode == "shortest_floor" || mode == "squash" || mode == "pad",
                    "TransformOptions: resize_mode must be 'shortest', 'shortest_floor', 'squash' or 'pad', got '",
                    mode, "'");
  TORCH_CHECK_VALUE(options_.hflip_prob() >= 0 && options_.hflip_prob() <= 1,
                    "TransformOptions: hflip_prob must be in [0, 1], got ", options_.hflip_prob());
  const auto& s = options_.scale();
  const auto& r = options_.ratio();
  TORCH_CHECK_VALUE(0 < s[0] && s[0] <= s[1] && s[1] <= 1 && 0 < r[0] && r[0] <= r[1],
                    "TransformOptions: scale must satisfy 0 < min <= max <= 1 and ratio ",
                    "0 < min <= max, got scale (", s[0], ", ", s[1], "), ratio (", r[0], ", ", r[1], ")");
}

int64_t ImageTransform::output_channels(int64_t in_channels) const {
  if (in_channels == 1 && !options_.expand_grayscale()) return 1;
  TORCH_CHECK_VALUE(in_channels == 1 || in_channels == normalize_.channels(), "ImageTransform: ",
                    "image has ", in_channels, " channels, expected 1 or ", normalize_.channels(),
                    " (uint8 images are [H, W, C], float ones [C, H, W]: torchvision's uint8 read_image "
                    "gives [C, H, W], .permute(1, 2, 0) it)");
  return normalize_.channels();
}

at::Tensor ImageTransform::geometry(const at::Tensor& img, at::Generator gen, bool* flip) const {
  const int64_t S = options_.image_size();
  const bool u8 = img.scalar_type() == at::kByte;
  const int64_t H = img.size(u8 ? 0 : 1), W = img.size(u8 ? 1 : 2);
  *flip = false;
  if (!options_.train()) {
    if (options_.resize_mode() == "squash") return resize(img, S, S, options_.interpolation());
    if (options_.resize_mode() == "pad") {
      // LLaVA pads the RGB image: a grey one goes to three channels first, so the pad is the mean
      // colour, not grey (a float CHW image pads with the mean value itself).
      const int64_t C = img.size(u8 ? 2 : 0), wide = static_cast<int64_t>(options_.mean().size());
      const bool expand = C == 1 && options_.expand_grayscale() && wide > 1;
      const at::Tensor rgb = expand ? (u8 ? img.expand({H, W, wide}) : img.expand({wide, H, W})) : img;
      return resize(pad_to_square(rgb, options_.mean()), S, S, options_.interpolation());
    }
    const int64_t r = options_.resize_size() > 0 ? options_.resize_size() : S;
    return center_crop(resize_shortest(img, r, options_.interpolation()), S, S,
                       options_.resize_mode() == "shortest_floor");
  }
  // Draw order as torchvision's Compose([RandomResizedCrop, RandomHorizontalFlip, ...]).
  const CropBox b = random_resized_crop_box(H, W, options_.scale(), options_.ratio(), gen);
  at::Tensor out = resize(crop(img, b.top, b.left, b.height, b.width), S, S, options_.interpolation());
  *flip = options_.hflip_prob() > 0 && draw_horizontal_flip(options_.hflip_prob(), gen);
  return out;
}

void ImageTransform::apply_into(const at::Tensor& img, at::Generator gen, const at::Tensor& out) const {
  TORCH_CHECK_VALUE(img.defined() && img.dim() == 3, "ImageTransform: expected a uint8 HWC or ",
                    "float CHW image, got ", img.defined() ? img.sizes() : at::IntArrayRef{});
  const bool u8 = img.scalar_type() == at::kByte;
  const int64_t C = output_channels(img.size(u8 ? 2 : 0));
  const Normalize& norm = C == 1 ? normalize_gray_ : normalize_;
  bool flip = false;
  // Half and bfloat16 images resize in float32 (ATen's resampling kernels have no 16-bit CPU path).
  const bool narrow = img.scalar_type() == at::kHalf || img.scalar_type() == at::kBFloat16;
  const at::Tensor x = geometry(narrow ? img.to(at::kFloat) : img, gen, &flip);
  if (u8) {
    norm.into(x, out, flip);
  } else {
    out.copy_(norm(flip ? horizontal_flip(x) : x));
  }
}

at::Tensor ImageTransform::apply(const at::Tensor& img, at::Generator gen) const {
  TORCH_CHECK_VALUE(img.defined() && img.dim() == 3, "ImageTransform: expected a uint8 HWC or ",
                    "float CHW image, got ", img.defined() ? img.sizes() : at::IntArrayRef{});
  const bool u8 = img.scalar_type() == at::kByte;
  const int64_t S = options_.image_size();
  at::Tensor out = at::empty({output_channels(img.size(u8 ? 2 : 0)), S, S}, at::kFloat);
  apply_into(img, gen, out);
  return out;
}

}  // namespace tessera::vision
