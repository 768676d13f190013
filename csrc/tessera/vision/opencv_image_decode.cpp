// Pixel decoding with OpenCV's cv::imdecode (libjpeg-turbo / libpng), flags chosen to give
// what PIL's convert("RGB") gives: 3 channels, alpha dropped, EXIF orientation not applied.
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "tessera/vision/image_decode_backend.h"

namespace tessera::vision::detail {

bool have_pixel_decoder() { return true; }

at::Tensor decode_pixels(const std::string& bytes, const ImageInfo& info, const std::string& source,
                         int64_t max_pixels) {
  // OpenCV's own thread pool off: tessera decodes images in parallel itself, and OpenCV's
  // parallel_for_ takes a process-wide TLS mutex that a fork() could copy held, hanging a forked
  // DataLoader worker in its first decode (~1 % of forks while loader threads decode).
  static const bool serial = [] {
    cv::setNumThreads(0);
    return true;
  }();
  (void)serial;
  const cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
  // IMREAD_COLOR alone would rotate by the EXIF orientation tag; PIL (and so torchvision's
  // loader) leaves pixels as stored, and so do we.
  const int flags = cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION;
  // Decoded into OpenCV's own buffer, then colour-swapped into the tensor: the swap has to
  // copy anyway, and a pre-filled destination would hide a failure (imdecode leaves it
  // untouched when the header is rejected).
  cv::Mat bgr;
  try {
    bgr = cv::imdecode(buf, flags);
  } catch (const cv::Exception& e) {
    TORCH_CHECK_VALUE(false, "decode_image(", source, "): corrupt ", image_format_name(info.format),
                      " data (", e.what(), ")");
  }
  TORCH_CHECK_VALUE(!bgr.empty() && bgr.type() == CV_8UC3, "decode_image(", source,
                    "): corrupt ", image_format_name(info.format), " data (the decoder failed)");
  TORCH_CHECK_VALUE(int64_t(bgr.rows) * bgr.cols <= max_pixels, "decode_image(", source, "): ",
                    bgr.cols, " x ", bgr.rows, " pixels exceeds the limit of ", max_pixels);
  at::Tensor out = at::empty({bgr.rows, bgr.cols, 3}, at::kByte);
  cv::Mat rgb(bgr.rows, bgr.cols, CV_8UC3, out.data_ptr());
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return out;
}

}  // namespace tessera::vision::detail
