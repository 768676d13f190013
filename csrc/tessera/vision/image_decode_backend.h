// Internal seam between image_decode.cpp (format and size checks, shared) and the pixel
// decoder: opencv_image_decode.cpp with OpenCV, image_decode_stub.cpp without.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "tessera/vision/image_format.h"

namespace tessera::vision::detail {

/// Decodes already-sniffed bytes to uint8 [H, W, 3] RGB. `info` holds the header fields
/// (height/width may be 0 when the header did not state them).
at::Tensor decode_pixels(const std::string& bytes, const ImageInfo& info, const std::string& source,
                         int64_t max_pixels);

/// Whether decode_pixels is a real decoder.
bool have_pixel_decoder();

}  // namespace tessera::vision::detail
