// Internal seam between image_decode.cpp (format and size checks, shared) and the pixel
// decoders: opencv_image_decode.cpp with OpenCV, image_decode_stub.cpp without, and
// libjpeg_image_decode.cpp for JPEG when libjpeg is found.
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

/// JPEG through libjpeg directly (libjpeg_image_decode.cpp, built with TESSERA_WITH_LIBJPEG):
/// uint8 [H, W, 3] RGB, or an undefined tensor when it leaves the image to decode_pixels
/// (CMYK, or a height stated only by a DNL marker). Throws c10::ValueError for corrupt data.
at::Tensor decode_jpeg(const std::string& bytes, const ImageInfo& info, const std::string& source);

}  // namespace tessera::vision::detail
