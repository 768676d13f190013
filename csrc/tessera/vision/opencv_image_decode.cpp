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
  const cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8UC1, const_cast<char*>(bytes.data()));
  // IMREAD_COLOR alone would rotate by the EXIF orientation tag; PIL (and so torchvision's
  // loader) leaves pixels as stored, and so do we.
  const int flags = cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION;
  // Decode straight into the tensor when the header told us the size: imdecode's
  // Mat::create keeps a buffer of the right size and type, which saves a copy per image.
  at::Tensor out;
  cv::Mat dst;
  if (info.height > 0 && info.width > 0) {
    out = at::empty({info.height, info.width, 3}, at::kByte);
    dst = cv::Mat(static_cast<int>(info.height), static_cast<int>(info.width), CV_8UC3,
                  out.data_ptr());
  }
  try {
    cv::imdecode(buf, flags, &dst);
  } catch (const cv::Exception& e) {
    TORCH_CHECK_VALUE(false, "decode_image(", source, "): corrupt ", image_format_name(info.format),
                      " data (", e.what(), ")");
  }
  TORCH_CHECK_VALUE(!dst.empty() && dst.type() == CV_8UC3, "decode_image(", source,
                    "): corrupt ", image_format_name(info.format), " data (the decoder failed)");
  if (!out.defined() || dst.data != out.data_ptr()) {
    // The decoder picked another size than the header stated (JPEG with a DNL height).
    TORCH_CHECK_VALUE(int64_t(dst.rows) * dst.cols <= max_pixels, "decode_image(", source,
                      "): ", dst.cols, " x ", dst.rows, " pixels exceeds the limit of ", max_pixels);
    out = at::empty({dst.rows, dst.cols, 3}, at::kByte);
    cv::Mat rgb(dst.rows, dst.cols, CV_8UC3, out.data_ptr());
    cv::cvtColor(dst, rgb, cv::COLOR_BGR2RGB);
    return out;
  }
  cv::cvtColor(dst, dst, cv::COLOR_BGR2RGB);  // OpenCV decodes to BGR; swap in place
  return out;
}

}  // namespace tessera::vision::detail
