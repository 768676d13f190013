// Magic-byte sniffing and header parsing after the PNG spec (IHDR is the first chunk, fixed
// offsets), JPEG T.81 Annex B (marker segments up to the first SOS) and the WebP container
// (RFC 9649: a RIFF file whose first chunk is VP8, VP8L or VP8X).
#include "tessera/vision/image_format.h"

#include <cstdio>

namespace tessera::vision {
namespace {

uint8_t at(std::string_view b, size_t i) { return static_cast<uint8_t>(b[i]); }
uint32_t be16(std::string_view b, size_t i) { return (uint32_t(at(b, i)) << 8) | at(b, i + 1); }
uint32_t be32(std::string_view b, size_t i) { return (be16(b, i) << 16) | be16(b, i + 2); }
uint32_t le16(std::string_view b, size_t i) { return at(b, i) | (uint32_t(at(b, i + 1)) << 8); }
uint32_t le24(std::string_view b, size_t i) { return le16(b, i) | (uint32_t(at(b, i + 2)) << 16); }
uint32_t le32(std::string_view b, size_t i) { return le16(b, i) | (le16(b, i + 2) << 16); }

constexpr char kPngMagic[] = "\x89PNG\r\n\x1a\n";

// SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG extension) and CC (DAC) share the
// range but are not frame headers.
bool is_sof(uint8_t m) { return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC; }
// Markers that stand alone, without a length field: TEM, RSTn, SOI.
bool is_standalone(uint8_t m) { return m == 0x01 || (m >= 0xD0 && m <= 0xD8); }

void read_jpeg(std::string_view b, ImageInfo& info) {
  const size_t n = b.size();
  size_t pos = 2, scan_start = 0;
  while (pos < n) {
    if (at(b, pos) != 0xFF) return;  // segments must start on a marker
    while (pos < n && at(b, pos) == 0xFF) ++pos;  // fill bytes before a marker are legal
    if (pos >= n) return;
    const uint8_t marker = at(b, pos++);
    if (is_standalone(marker)) continue;
    if (marker == 0xD9 || pos + 2 > n) return;  // EOI before any scan: nothing to decode
    const uint32_t len = be16(b, pos);
    if (len < 2) return;
    if (is_sof(marker) && pos + 7 <= n) {
      info.height = be16(b, pos + 3);
      info.width = be16(b, pos + 5);
    }
    if (marker == 0xDA) {
      scan_start = pos + len;
      break;
    }
    pos += len;
  }
  if (scan_start == 0) return;
  // Entropy-coded data stuffs every FF with 00 (or is a RSTn), so FF D9 after the first
  // scan can only be the end marker; an embedded EXIF thumbnail's EOI comes before it.
  for (size_t i = n - 1; i > scan_start; --i) {
    if (at(b, i) == 0xD9 && at(b, i - 1) == 0xFF) {
      info.complete = true;
      return;
    }
  }
}

void read_png(std::string_view b, ImageInfo& info) {
  // signature(8) | length(4) "IHDR" width(4) height(4) depth color ...
  if (b.size() < 24 || b.substr(12, 4) != "IHDR") return;
  info.width = be32(b, 16);
  info.height = be32(b, 20);
  const size_t iend = b.rfind("IEND");
  info.complete = iend != std::string_view::npos && iend > 24;
}

void read_webp(std::string_view b, ImageInfo& info) {
  // "RIFF" size(4) "WEBP" | fourcc(4) chunk-size(4) chunk data ...
  if (b.size() < 30) return;
  const std::string_view chunk = b.substr(12, 4);
  if (chunk == "VP8 ") {  // lossy: frame tag(3), start code 9d 01 2a, 14-bit sizes
    if (at(b, 23) != 0x9d || at(b, 24) != 0x01 || at(b, 25) != 0x2a) return;
    info.width = le16(b, 26) & 0x3fff;
    info.height = le16(b, 28) & 0x3fff;
  } else if (chunk == "VP8L") {  // lossless: signature 2f, then 14 bits each of size - 1
    if (at(b, 20) != 0x2f) return;
    const uint32_t bits = le32(b, 21);
    info.width = (bits & 0x3fff) + 1;
    info.height = ((bits >> 14) & 0x3fff) + 1;
  } else if (chunk == "VP8X") {  // extended: flags(4), then 24 bits each of canvas size - 1
    info.animated = (at(b, 20) & 0x02) != 0;  // flags: Rsv(2) ICC Alpha EXIF XMP Animation Rsv
    info.width = int64_t(le24(b, 24)) + 1;
    info.height = int64_t(le24(b, 27)) + 1;
  } else {
    return;
  }
  info.complete = int64_t(le32(b, 4)) + 8 <= int64_t(b.size());  // the RIFF size is all there
}

}  // namespace

ImageFormat sniff_image_format(std::string_view bytes) {
  if (bytes.size() >= 3 && at(bytes, 0) == 0xFF && at(bytes, 1) == 0xD8 && at(bytes, 2) == 0xFF)
    return ImageFormat::jpeg;
  if (bytes.size() >= 8 && bytes.substr(0, 8) == std::string_view(kPngMagic, 8))
    return ImageFormat::png;
  if (bytes.size() >= 12 && bytes.substr(0, 4) == "RIFF" && bytes.substr(8, 4) == "WEBP")
    return ImageFormat::webp;
  return ImageFormat::unknown;
}

ImageInfo read_image_info(std::string_view bytes) {
  ImageInfo info;
  info.format = sniff_image_format(bytes);
  if (info.format == ImageFormat::jpeg) read_jpeg(bytes, info);
  if (info.format == ImageFormat::png) read_png(bytes, info);
  if (info.format == ImageFormat::webp) read_webp(bytes, info);
  return info;
}

std::string leading_bytes_hex(std::string_view bytes, size_t n) {
  std::string out;
  char buf[4];
  for (size_t i = 0; i < n && i < bytes.size(); ++i) {
    std::snprintf(buf, sizeof buf, i ? " %02x" : "%02x", at(bytes, i));
    out += buf;
  }
  if (bytes.size() > n) out += " ...";
  return bytes.empty() ? "<empty>" : out;
}

const char* image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::jpeg: return "jpeg";
    case ImageFormat::png: return "png";
    case ImageFormat::webp: return "webp";
    default: return "unknown";
  }
}

}  // namespace tessera::vision
