// Image container sniffing from magic bytes and header dimensions, after the PNG spec (W3C,
// IHDR chunk), JPEG (ITU T.81, SOFn segments) and WebP (RFC 9649: VP8, VP8L, VP8X) - no decoder
// needed, so it works without OpenCV.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace tessera::vision {

/// The containers tessera decodes. Anything else is rejected before a decoder sees it.
enum class ImageFormat { unknown, jpeg, png, webp };

/// What the header says about an image, read without decoding pixels.
struct ImageInfo {
  ImageFormat format = ImageFormat::unknown;
  int64_t height = 0;  ///< 0 when the header does not state it (e.g. a JPEG using DNL)
  int64_t width = 0;
  /// The stream has its end marker: JPEG EOI (FF D9) after the first scan, PNG IEND, all of
  /// WebP's RIFF size. A truncated file lacks it; libjpeg only warns about that and pads with
  /// grey, so we check.
  bool complete = false;
  /// A WebP whose VP8X header sets the animation flag: frames, not a still image.
  bool animated = false;
};

/// The format named by the leading magic bytes: FF D8 FF (JPEG), 89 'PNG' 0D 0A 1A 0A, or
/// 'RIFF' size 'WEBP'.
///
///     sniff_image_format(bytes) == ImageFormat::png
ImageFormat sniff_image_format(std::string_view bytes);

/// Magic bytes plus header fields: PNG width/height from IHDR, JPEG from the first SOFn
/// segment, WebP from its first chunk. Never throws; a malformed header leaves height/width at 0.
///
///     ImageInfo info = read_image_info(bytes);  // {png, 480, 640, true}
ImageInfo read_image_info(std::string_view bytes);

/// "ff d8 ff e0 ..." - the first `n` bytes in hex, for error messages about unknown formats.
std::string leading_bytes_hex(std::string_view bytes, size_t n = 8);

/// "jpeg", "png", "webp" or "unknown".
const char* image_format_name(ImageFormat format);

}  // namespace tessera::vision
