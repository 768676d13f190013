// The CLIP image pipelines, after open_clip's transform.py image_transform(): evaluation
// (Resize shortest side bicubic, CenterCrop, ToTensor, Normalize) and training
// (RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize), as one configured call.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "tessera/vision/transforms.h"

namespace tessera::vision {

/// Settings of ImageTransform. Defaults are CLIP's (OpenAI mean/std, 224 px, bicubic).
struct TransformOptions {
  using Range = std::array<double, 2>;
  /// Output side S: images come out float [3, S, S].
  TORCH_ARG(int64_t, image_size) = 224;
  /// Evaluation only: shorter side resized to this before the center crop; 0 means
  /// image_size (CLIP); e.g. 256 for the ImageNet-style resize-then-crop.
  TORCH_ARG(int64_t, resize_size) = 0;
  TORCH_ARG(std::vector<double>, mean) = {0.48145466, 0.4578275, 0.40821073};
  TORCH_ARG(std::vector<double>, std) = {0.26862954, 0.26130258, 0.27577711};
  /// Training pipeline (random resized crop + flip) instead of resize + center crop.
  TORCH_ARG(bool, train) = false;
  /// Training: area fraction range of the random crop (torchvision's default; open_clip
  /// trains CLIP with (0.9, 1.0)).
  TORCH_ARG(Range, scale) = Range{0.08, 1.0};
  /// Training: aspect-ratio range of the random crop.
  TORCH_ARG(Range, ratio) = Range{3.0 / 4.0, 4.0 / 3.0};
  /// Training: probability of a horizontal flip; 0 leaves the flip (and its draw) out.
  TORCH_ARG(double, hflip_prob) = 0.5;
  /// One-channel images are repeated to mean.size() channels (PIL's convert("RGB")); when
  /// false they keep one channel, normalised with mean[0] / std[0].
  TORCH_ARG(bool, expand_grayscale) = true;
  TORCH_ARG(Interpolation, interpolation) = Interpolation::bicubic;
  /// Evaluation: "shortest" resizes the shorter side then center-crops (CLIP, open_clip; offsets
  /// rounded as torchvision's); "shortest_floor" the same with offsets rounded down, as
  /// transformers' CLIPImageProcessor (LLaVA's) crops an image whose margin is odd;
  /// "squash" resizes the whole image to the square (BLIP-2's processor, LAVIS, timm's crop_mode);
  /// "pad" centers it on a square of the mean colour first (LLaVA-1.5's image_aspect_ratio pad).
  TORCH_ARG(std::string, resize_mode) = "shortest";
};

/// A configured pipeline: uint8 HWC (what decode_image gives) in, normalised float CHW out.
/// Every random choice draws from the generator passed in, so a per-sample generator makes
/// the output independent of thread scheduling.
///
///     ImageTransform eval(TransformOptions().image_size(224));
///     at::Tensor x = eval.apply(read_image("cat.jpg"), gen);        // float [3, 224, 224]
///     ImageTransform train(TransformOptions().train(true).scale({0.9, 1.0}));
class ImageTransform {
 public:
  explicit ImageTransform(TransformOptions options = {});

  /// The transformed image as a new float [C, S, S] tensor (C = 3, or 1 for a grayscale
  /// image with expand_grayscale off). Float CHW input is accepted too (not rescaled by 255).
  at::Tensor apply(const at::Tensor& img, at::Generator gen) const;

  /// Same as apply, written into `out` (contiguous float [C, S, S], e.g. a batch slot),
  /// fusing the flip and the float conversion into one pass for uint8 input.
  void apply_into(const at::Tensor& img, at::Generator gen, const at::Tensor& out) const;

  /// Channels of the output for an input with `in_channels` channels.
  int64_t output_channels(int64_t in_channels) const;

  const TransformOptions& options() const { return options_; }

 private:
  // The geometric part: uint8 HWC / float CHW in, S x S out; sets *flip for the caller.
  at::Tensor geometry(const at::Tensor& img, at::Generator gen, bool* flip) const;

  TransformOptions options_;
  Normalize normalize_;
  Normalize normalize_gray_;  // mean[0] / std[0] for one-channel images kept as one
};

}  // namespace tessera::vision
