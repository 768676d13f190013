// JPEG decoding straight through libjpeg(-turbo), following its libjpeg.txt usage outline
// (error manager with setjmp, jpeg_mem_src, read_scanlines), with the settings PIL's decoder
// uses: ISLOW DCT, fancy upsampling, RGB output. Compiled only with TESSERA_WITH_LIBJPEG.
//
// Why not OpenCV for JPEG: OpenCV 4.6's decoder reads one row at a time and swaps RGB to BGR
// with a scalar byte loop, which made it 5x slower than libjpeg-turbo itself on 256 px
// images (560 us vs 110 us) - the loader's largest cost. PNG still goes to OpenCV; CMYK JPEG is
// read here too, as PIL converts it (OpenCV's rounding was one level off).
#ifdef TESSERA_WITH_LIBJPEG
#include <algorithm>
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include <jpeglib.h>

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include "tessera/vision/image_decode_backend.h"

namespace tessera::vision::detail {
namespace {

struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings ("extraneous bytes before marker") are not failures for PIL either; truncation
// is caught before decoding by the end-marker check in image_decode.cpp.
void on_message(j_common_ptr, int) {}

enum class Status { ok, failed, unsupported };

// Decodes into dst (height x width x 3). Only plain data lives in this frame across setjmp,
// so the longjmp out of libjpeg skips no destructor.
Status decode_rgb(const std::string& bytes, uint8_t* dst, int64_t height, int64_t width,
                  char* message) {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.emit_message = on_message;
  if (setjmp(err.jump)) {
    std::strncpy(message, err.message, JMSG_LENGTH_MAX);
    jpeg_destroy_decompress(&cinfo);
    return Status::failed;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  const bool gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
  const bool cmyk = cinfo.num_components == 4;
  if (cinfo.image_height != height || cinfo.image_width != width ||
      (cmyk && cinfo.jpeg_color_space != JCS_CMYK && cinfo.jpeg_color_space != JCS_YCCK)) {
    jpeg_destroy_decompress(&cinfo);  // a size our header reader disagrees with, or 4 channels of another kind
    return Status::unsupported;
  }
  // Gray is decoded as gray and widened below: not every libjpeg converts gray to RGB.
  cinfo.out_color_space = gray ? JCS_GRAYSCALE : cmyk ? JCS_CMYK : JCS_RGB;
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&cinfo);
  const size_t row_bytes = static_cast<size_t>(width) * 3;
  if (cmyk) {
    // As PIL reads it: Adobe's inverted polarity, always ("CMYK;I"), then its cmyk2rgb, which for
    // inverted c, k is k - c*k/255 rounded as its MULDIV255. libjpeg's pool frees the row.
    JSAMPARRAY row = (*cinfo.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&cinfo), JPOOL_IMAGE,
                                                 static_cast<JDIMENSION>(width * 4), 1);
    while (cinfo.output_scanline < cinfo.output_height) {
      uint8_t* out = dst + cinfo.output_scanline * row_bytes;
      jpeg_read_scanlines(&cinfo, row, 1);
      const uint8_t* in = row[0];
      for (int64_t x = 0; x < width; ++x, in += 4, out += 3) {
        const int k = in[3];
        for (int c = 0; c < 3; ++c) {
          const int t = (255 - in[c]) * k + 128;
          out[c] = static_cast<uint8_t>(std::clamp(k - (((t >> 8) + t) >> 8), 0, 255));
        }
      }
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return Status::ok;
  }
  JSAMPROW rows[16];
  while (cinfo.output_scanline < cinfo.output_height) {
    const JDIMENSION n = std::min<JDIMENSION>(16, cinfo.output_height - cinfo.output_scanline);
    for (JDIMENSION i = 0; i < n; ++i) rows[i] = dst + (cinfo.output_scanline + i) * row_bytes;
    jpeg_read_scanlines(&cinfo, rows, n);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (gray) {
    // Each row holds `width` gray bytes at its start; widen back to front, in place.
    for (int64_t y = 0; y < height; ++y) {
      uint8_t* row = dst + y * row_bytes;
      for (int64_t x = width - 1; x >= 0; --x) row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = row[x];
    }
  }
  return Status::ok;
}

}  // namespace

at::Tensor decode_jpeg(const std::string& bytes, const ImageInfo& info, const std::string& source) {
  if (info.height <= 0 || info.width <= 0) return at::Tensor();  // DNL height: OpenCV's job
  at::Tensor out = at::empty({info.height, info.width, 3}, at::kByte);
  char message[JMSG_LENGTH_MAX] = {0};
  switch (decode_rgb(bytes, out.data_ptr<uint8_t>(), info.height, info.width, message)) {
    case Status::ok: return out;
    case Status::unsupported: return at::Tensor();
    case Status::failed: break;
  }
  TORCH_CHECK_VALUE(false, "decode_image(", source, "): corrupt jpeg data (libjpeg: ", message, ")");
}

}  // namespace tessera::vision::detail
#endif  // TESSERA_WITH_LIBJPEG
