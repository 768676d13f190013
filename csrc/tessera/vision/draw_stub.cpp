// Drawing in a build without OpenCV (CMake drops opencv_*.cpp then): a clear error.
#ifndef TESSERA_WITH_OPENCV
#include <c10/util/Exception.h>

#include "tessera/vision/draw.h"

namespace tessera::vision {

static constexpr const char* kHowTo =
    ": tessera was built without OpenCV; rebuild with it (apt install libopencv-dev, CMake "
    "-DTESSERA_WITH_OPENCV=ON)";

at::Tensor draw_shapes(int64_t, int64_t, const std::vector<Shape>&, std::array<uint8_t, 3>) {
  TORCH_CHECK(false, "draw_shapes", kHowTo);
}
std::string encode_png(const at::Tensor&) { TORCH_CHECK(false, "encode_png", kHowTo); }
bool drawing_available() { return false; }

}  // namespace tessera::vision
#endif  // TESSERA_WITH_OPENCV
