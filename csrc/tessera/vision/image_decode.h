// JPEG/PNG decoding to RGB uint8 tensors, as torchvision's default loader does with PIL
// (`Image.open(f).convert("RGB")`), here on OpenCV's imdecode when built with it.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace tessera::vision {

/// Default pixel cap: 64 Mi pixels (8192 x 8192), a decompression-bomb guard in the spirit
/// of PIL's MAX_IMAGE_PIXELS; a 256 MB RGB buffer is the most one image may take.
constexpr int64_t kDefaultMaxImagePixels = int64_t(1) << 26;

/// Decodes JPEG, PNG or WebP bytes to uint8 [H, W, 3] RGB. Grayscale and palette images are
/// expanded to three channels, an alpha channel is dropped (PIL's convert("RGB")), and EXIF
/// orientation is ignored, as PIL does. 16-bit PNG keeps the high byte of each value (PIL
/// clips to 255 instead). With libjpeg (TESSERA_WITH_LIBJPEG) JPEG is decoded exactly as PIL
/// decodes it (ISLOW DCT, fancy upsampling); CMYK JPEG, PNG and WebP (libwebp) go through OpenCV.
/// The format comes from the magic bytes, never from the file name; the header dimensions are
/// checked against `max_pixels` before any pixel is decoded. `source` only names the data
/// in errors. Throws c10::ValueError naming `source` for an unknown format (with the first
/// bytes), an image over the cap, or corrupt or truncated data; c10::Error when tessera was
/// built without OpenCV.
///
///     at::Tensor rgb = decode_image(bytes, "cat.jpg");  // uint8 [H, W, 3]
at::Tensor decode_image(const std::string& bytes, const std::string& source,
                        int64_t max_pixels = kDefaultMaxImagePixels);

/// Reads `path` and decodes it with decode_image. Throws c10::Error naming the path when the
/// file cannot be read.
///
///     at::Tensor rgb = read_image("/data/cats/001.png");
at::Tensor read_image(const std::string& path, int64_t max_pixels = kDefaultMaxImagePixels);

/// Whole file contents; c10::Error naming the path and the OS error on failure.
std::string read_file_bytes(const std::string& path);

/// True when tessera was built with OpenCV, i.e. decode_image can decode pixels.
bool image_decode_available();

}  // namespace tessera::vision
