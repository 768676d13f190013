// Checks shared by every decoder build: format by magic bytes (as PIL's Image.open sniffs
// rather than trusting the extension), header-size cap (PIL's decompression-bomb check) and
// truncation, before the pixel decoder in opencv_image_decode.cpp / image_decode_stub.cpp runs.
#include "tessera/vision/image_decode.h"
#include "tessera/core/regular_file.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "tessera/vision/image_decode_backend.h"

namespace tessera::vision {

std::string read_file_bytes(const std::string& path) {
  core::require_regular_file(path, "an image or data file");
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  TORCH_CHECK(f, "cannot open '", path, "': ", std::strerror(errno));
  std::string data;
  // Size from fseek/ftell, then one read: the common case (a regular file) in one syscall.
  if (std::fseek(f.get(), 0, SEEK_END) == 0) {
    const long size = std::ftell(f.get());
    if (size > 0) data.reserve(static_cast<size_t>(size));
    std::rewind(f.get());
  }
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f.get())) > 0) data.append(buf, got);
  TORCH_CHECK(!std::ferror(f.get()), "cannot read '", path, "': ", std::strerror(errno));
  return data;
}

at::Tensor decode_image(const std::string& bytes, const std::string& source, int64_t max_pixels) {
  const ImageInfo info = read_image_info(bytes);
  TORCH_CHECK_VALUE(info.format != ImageFormat::unknown, "decode_image(", source,
                    "): not a JPEG, PNG or WebP image (", bytes.size(), " bytes, first bytes: ",
                    leading_bytes_hex(bytes), ")");
  const char* fmt = image_format_name(info.format);
  // A PNG and a WebP always state both sizes; a JPEG may leave the height to a DNL marker
  // (rare), so only its width is required here and the height is checked after decoding.
  TORCH_CHECK_VALUE(info.width > 0 && (info.height > 0 || info.format == ImageFormat::jpeg),
                    "decode_image(", source, "): corrupt ", fmt,
                    " header (no valid image size found)");
  // Compared by division: PNG sizes reach 2^32 - 1, and their product overflows int64.
  const int64_t rows = std::max<int64_t>(info.height, 1);
  TORCH_CHECK_VALUE(info.width <= max_pixels / rows, "decode_image(", source, "): ",
                    info.width, " x ", info.height, " = ", uint64_t(info.height) * uint64_t(info.width),
                    " pixels exceeds the limit of ", max_pixels, " pixels");
  TORCH_CHECK_VALUE(info.complete, "decode_image(", source, "): truncated or corrupt ", fmt,
                    " data (no end-of-image marker)");
  // OpenCV reads no animation: without this it reported "corrupt webp data".
  TORCH_CHECK_VALUE(!info.animated, "decode_image(", source, "): an animated WebP; tessera decodes still ",
                    "images (take one frame out first: webpmux -get frame 1 in.webp -o out.webp)");
  at::Tensor img;
#ifdef TESSERA_WITH_LIBJPEG
  if (info.format == ImageFormat::jpeg) img = detail::decode_jpeg(bytes, info, source);
#endif
  if (!img.defined()) img = detail::decode_pixels(bytes, info, source, max_pixels);
  TORCH_CHECK_VALUE(img.size(0) * img.size(1) <= max_pixels, "decode_image(", source, "): ",
                    img.size(1), " x ", img.size(0), " pixels exceeds the limit of ", max_pixels);
  return img;
}

at::Tensor read_image(const std::string& path, int64_t max_pixels) {
  return decode_image(read_file_bytes(path), path, max_pixels);
}

bool image_decode_available() { return detail::have_pixel_decoder(); }

}  // namespace tessera::vision
