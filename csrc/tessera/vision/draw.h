// Procedural pictures for embedded instruction data (coloured shapes on a plain background) and
// PNG encoding, drawn with OpenCV. Deterministic: no anti-aliasing, integer geometry.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::vision {

/// One filled shape: `kind` is "circle", "square" or "triangle"; centre (cx, cy) and `size`
/// (circle radius, half the square's side, the triangle's circumradius) in pixels.
struct Shape {
  std::string kind;
  std::array<uint8_t, 3> rgb{255, 255, 255};
  int64_t cx = 0, cy = 0, size = 1;
};

/// uint8 [height, width, 3] RGB: `background` with `shapes` drawn in order (later on top).
/// Throws c10::Error naming the shape for an unknown kind or a non-positive size.
at::Tensor draw_shapes(int64_t height, int64_t width, const std::vector<Shape>& shapes,
                       std::array<uint8_t, 3> background = {0, 0, 0});

/// PNG bytes of a uint8 [H, W] or [H, W, 1|3] RGB image (lossless, deterministic).
std::string encode_png(const at::Tensor& image);

/// False in a build without OpenCV (the functions above then throw, saying how to get it).
bool drawing_available();

}  // namespace tessera::vision
