// The pixel decoder of a build without OpenCV (CMake drops opencv_*.cpp then): format and
// size checks in image_decode.cpp still run, decoding itself raises a clear error.
#ifndef TESSERA_WITH_OPENCV
#include <c10/util/Exception.h>

#include "tessera/vision/image_decode_backend.h"

namespace tessera::vision::detail {

bool have_pixel_decoder() { return false; }

at::Tensor decode_pixels(const std::string& bytes, const ImageInfo& info, const std::string& source,
                         int64_t max_pixels) {
  TORCH_CHECK(false, "decode_image(", source, "): tessera was built without OpenCV, so it cannot ",
              "decode ", image_format_name(info.format), " images; rebuild with OpenCV ",
              "(apt install libopencv-dev, CMake -DTESSERA_WITH_OPENCV=ON) or use tensor datasets ",
              "such as FashionMNIST");
}

}  // namespace tessera::vision::detail
#endif  // TESSERA_WITH_OPENCV
