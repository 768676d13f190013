// Fuzzes image decoding (vision/image_decode.cpp, image_format.cpp and the libjpeg / OpenCV
// backends): magic-byte sniffing, PNG IHDR and JPEG SOFn header parsing, the pixel cap checked
// before decoding, end-marker (truncation) checks and the decoders themselves. The cap is 1 Mi
// pixels here instead of 64 Mi so that a header at the cap decodes in milliseconds; the code path
// is the same. A decoded image must be uint8 [H, W, 3] within the cap and match the header.
#include <ATen/core/Tensor.h>

#include "fuzz_target.h"
#include "tessera/vision/image_decode.h"
#include "tessera/vision/image_format.h"

TESSERA_FUZZ_TARGET(image_decode) {
  using tessera::fuzz::require;
  using namespace tessera::vision;
  constexpr int64_t kMaxPixels = int64_t(1) << 20;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const ImageInfo info = read_image_info(bytes);
  require(info.format == sniff_image_format(bytes), "read_image_info and sniff disagree");
  (void)leading_bytes_hex(bytes);
  if (!image_decode_available()) return;
  const at::Tensor img = decode_image(bytes, "<fuzz input>", kMaxPixels);
  require(img.dim() == 3 && img.size(2) == 3 && img.scalar_type() == at::kByte,
          "decoded image is not uint8 [H, W, 3]");
  require(img.size(0) * img.size(1) <= kMaxPixels, "decoded image exceeds the pixel cap");
  require(img.size(1) == info.width, "decoded width differs from the header");
}
