#include <c10/util/Exception.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>

#include "tessera/vision/draw.h"

namespace tessera::vision {
namespace {

cv::Scalar bgr(const std::array<uint8_t, 3>& rgb) { return cv::Scalar(rgb[2], rgb[1], rgb[0]); }

void draw(cv::Mat& canvas, const Shape& s, size_t index) {
  TORCH_CHECK(s.size > 0, "draw_shapes: shape ", index, " (", s.kind, ") needs size > 0, got ", s.size);
  const cv::Point c(static_cast<int>(s.cx), static_cast<int>(s.cy));
  const int r = static_cast<int>(s.size);
  if (s.kind == "circle") {
    cv::circle(canvas, c, r, bgr(s.rgb), cv::FILLED, cv::LINE_8);
  } else if (s.kind == "square") {
    cv::rectangle(canvas, cv::Point(c.x - r, c.y - r), cv::Point(c.x + r, c.y + r), bgr(s.rgb),
                  cv::FILLED, cv::LINE_8);
  } else if (s.kind == "triangle") {
    // Point up; vertices on the circumcircle, rounded once so every build draws the same pixels.
    std::vector<cv::Point> pts;
    for (int k = 0; k < 3; ++k) {
      const double a = -M_PI / 2 + k * 2 * M_PI / 3;
      pts.emplace_back(c.x + static_cast<int>(std::lround(r * std::cos(a))),
                       c.y + static_cast<int>(std::lround(r * std::sin(a))));
    }
    cv::fillConvexPoly(canvas, pts, bgr(s.rgb), cv::LINE_8);
  } else {
    TORCH_CHECK(false, "draw_shapes: shape ", index, " has unknown kind '", s.kind,
                "' (circle, square or triangle)");
  }
}

}  // namespace

at::Tensor draw_shapes(int64_t height, int64_t width, const std::vector<Shape>& shapes,
                       std::array<uint8_t, 3> background) {
  TORCH_CHECK(height > 0 && width > 0 && height <= (int64_t{1} << 26) / width,
              "draw_shapes: height and width must be positive (at most 2^26 pixels), got ", height,
              " x ", width);
  cv::Mat canvas(static_cast<int>(height), static_cast<int>(width), CV_8UC3, bgr(background));
  for (size_t i = 0; i < shapes.size(); ++i) draw(canvas, shapes[i], i);
  cv::cvtColor(canvas, canvas, cv::COLOR_BGR2RGB);
  return at::from_blob(canvas.data, {height, width, 3}, at::kByte).clone();
}

std::string encode_png(const at::Tensor& image) {
  TORCH_CHECK(image.device().is_cpu(), "encode_png: expected a CPU tensor, got one on ", image.device());
  TORCH_CHECK(image.scalar_type() == at::kByte && (image.dim() == 2 || image.dim() == 3),
              "encode_png: expected a uint8 [H, W] or [H, W, C] tensor, got ", image.scalar_type(),
              " ", image.sizes());
  const int64_t channels = image.dim() == 2 ? 1 : image.size(2);
  TORCH_CHECK(channels == 1 || channels == 3, "encode_png: 1 or 3 channels, got ", channels);
  at::Tensor img = image.contiguous();
  cv::Mat mat(static_cast<int>(img.size(0)), static_cast<int>(img.size(1)),
              channels == 1 ? CV_8UC1 : CV_8UC3, img.data_ptr());
  cv::Mat out;  // a new buffer: converting in place would rewrite the caller's tensor
  if (channels == 3) cv::cvtColor(mat, out, cv::COLOR_RGB2BGR);
  else out = mat;
  std::vector<uchar> buf;
  TORCH_CHECK(cv::imencode(".png", out, buf), "encode_png: OpenCV could not encode the image");
  return std::string(buf.begin(), buf.end());
}

bool drawing_available() { return true; }

}  // namespace tessera::vision
