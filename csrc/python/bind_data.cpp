// Python bindings of csrc/tessera/vision (decode, transforms) and csrc/tessera/data (datasets,
// loader) as tessera._C.data, in pybind11's documented patterns (shared_ptr holders,
// iterator protocol, GIL release); python/tessera/data wraps them in the public API.
#include "bindings.h"

#include <c10/util/Exception.h>

#include <array>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "tessera/data/batch_decode.h"
#include "tessera/data/caption_file.h"
#include "tessera/data/fashion_mnist.h"
#include "tessera/data/image_folder.h"
#include "tessera/data/json_records.h"
#include "tessera/data/loader.h"
#include "tessera/data/sampler.h"
#include "tessera/data/tar_reader.h"
#include "tessera/vision/draw.h"
#include "tessera/vision/image_decode.h"
#include "tessera/vision/image_format.h"
#include "tessera/vision/image_transform.h"
#include "tessera/vision/transforms.h"

namespace tessera::python {
namespace {

using namespace tessera::data;
using namespace tessera::vision;


// A file or folder name as Python's os functions give it (undecodable bytes as surrogates, as
// torchvision's ImageFolder lists them): strict UTF-8 failed on such names, naming no path.
py::str fs_name(const std::string& name) {
  PyObject* s = PyUnicode_DecodeFSDefaultAndSize(name.data(), static_cast<Py_ssize_t>(name.size()));
  if (!s) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(s);
}

py::list fs_names(const std::vector<std::string>& names) {
  py::list out;
  for (const auto& n : names) out.append(fs_name(n));
  return out;
}

py::dict batch_to_dict(Batch&& b) {
  py::dict d;
  d["pixel_values"] = std::move(b.pixel_values);
  d["labels"] = std::move(b.labels);
  d["indices"] = std::move(b.indices);
  if (!b.captions.empty()) {
    py::list captions;
    for (const std::string& c : b.captions) {
      // Invalid UTF-8 in a caption file is replaced, not an exception in the middle of an epoch.
      PyObject* s = PyUnicode_DecodeUTF8(c.data(), static_cast<Py_ssize_t>(c.size()), "replace");
      if (s == nullptr) throw py::error_already_set();
      captions.append(py::reinterpret_steal<py::str>(s));
    }
    d["captions"] = captions;
  }
  return d;
}

void bind_vision(py::module_& m) {
  py::enum_<Interpolation>(m, "Interpolation")
      .value("bilinear", Interpolation::bilinear)
      .value("bicubic", Interpolation::bicubic);
  m.def("decode_image",
        [](const py::bytes& data, const std::string& source, int64_t max_pixels) {
          std::string bytes = data;
          return without_gil([&] { return decode_image(bytes, source, max_pixels); });
        },
        py::arg("data"), py::arg("source") = "<bytes>", py::arg("max_pixels") = kDefaultMaxImagePixels,
        "JPEG/PNG bytes -> uint8 [H, W, 3] RGB (format by magic bytes, pixel count capped).");
  m.def("read_image",
        [](const std::string& path, int64_t max_pixels) {
          return without_gil([&] { return read_image(path, max_pixels); });
        },
        py::arg("path"), py::arg("max_pixels") = kDefaultMaxImagePixels);
  m.def("image_info",
        [](const py::bytes& data) {
          const vision::ImageInfo info = vision::read_image_info(std::string(data));
          return std::make_tuple(std::string(vision::image_format_name(info.format)), info.height, info.width,
                                 info.complete);
        },
        py::arg("data"), "(format 'jpeg' | 'png' | 'webp' | 'unknown', height, width, complete) from the header alone.");
  m.def("image_decode_available", &image_decode_available);
  m.def("draw_shapes",
        [](int64_t height, int64_t width, const std::vector<std::tuple<std::string, std::array<uint8_t, 3>,
                                                                       int64_t, int64_t, int64_t>>& shapes,
           std::array<uint8_t, 3> background) {
          std::vector<Shape> list;
          for (const auto& [kind, rgb, cx, cy, size] : shapes) list.push_back({kind, rgb, cx, cy, size});
          return draw_shapes(height, width, list, background);
        },
        py::arg("height"), py::arg("width"), py::arg("shapes"), py::arg("background") = std::array<uint8_t, 3>{0, 0, 0},
        "uint8 [H, W, 3] RGB with filled shapes (kind, (r, g, b), cx, cy, size) drawn in order.");
  m.def("encode_png", [](const at::Tensor& image) { return py::bytes(encode_png(image)); }, py::arg("image"));
  m.def("drawing_available", &drawing_available);
  m.def("resize", [](const at::Tensor& img, int64_t h, int64_t w, Interpolation i) {
          return resize(img, h, w, i);
        }, py::arg("img"), py::arg("height"), py::arg("width"), py::arg("interpolation") = Interpolation::bicubic);
  m.def("resize_shortest", [](const at::Tensor& img, int64_t size, Interpolation i) {
          return resize_shortest(img, size, i);
        }, py::arg("img"), py::arg("size"), py::arg("interpolation") = Interpolation::bicubic);
  m.def("center_crop", [](const at::Tensor& img, int64_t h, int64_t w) {
          return center_crop(img, h, w);
        }, py::arg("img"), py::arg("height"), py::arg("width"));
  m.def("horizontal_flip", [](const at::Tensor& img) { return horizontal_flip(img); },
        py::arg("img"));
  m.def("to_float_normalized",
        [](const at::Tensor& img, const std::vector<double>& mean, const std::vector<double>& std) {
          return to_float_normalized(img, mean, std);
        }, py::arg("img"), py::arg("mean"), py::arg("std"));
  m.def("random_resized_crop_box",
        [](int64_t h, int64_t w, std::array<double, 2> scale, std::array<double, 2> ratio, at::Generator gen) {
          const CropBox b = random_resized_crop_box(h, w, scale, ratio, gen);
          return std::make_tuple(b.top, b.left, b.height, b.width);
        },
        py::arg("height"), py::arg("width"), py::arg("scale"), py::arg("ratio"), py::arg("generator"),
        "(top, left, height, width), drawn from `generator` as torchvision draws from the global one.");
  m.def("draw_horizontal_flip", &draw_horizontal_flip, py::arg("p"), py::arg("generator"));

  py::class_<TransformOptions>(m, "TransformOptions", "Settings of the CLIP image pipeline.")
      .def(py::init([](int64_t image_size, int64_t resize_size, std::vector<double> mean,
                       std::vector<double> std, bool train, std::array<double, 2> scale,
                       std::array<double, 2> ratio, double hflip_prob, bool expand_grayscale,
                       Interpolation interpolation, std::string resize_mode) {
             auto o = TransformOptions().image_size(image_size).resize_size(resize_size);
             o.mean(std::move(mean)).std(std::move(std)).train(train).scale(scale).ratio(ratio);
             o.hflip_prob(hflip_prob).expand_grayscale(expand_grayscale).interpolation(interpolation);
             o.resize_mode(std::move(resize_mode));
             ImageTransform check(o);  // reject bad values at construction
             return o;
           }),
           py::arg("image_size") = 224, py::arg("resize_size") = 0,
           py::arg("mean") = TransformOptions().mean(), py::arg("std") = TransformOptions().std(),
           py::arg("train") = false, py::arg("scale") = TransformOptions().scale(),
           py::arg("ratio") = TransformOptions().ratio(), py::arg("hflip_prob") = 0.5,
           py::arg("expand_grayscale") = true, py::arg("interpolation") = Interpolation::bicubic,
           py::arg("resize_mode") = "shortest")
#define TESSERA_PROPERTY(name) \
  .def_property_readonly(#name, [](const TransformOptions& o) { return o.name(); })
      TESSERA_PROPERTY(image_size) TESSERA_PROPERTY(resize_size) TESSERA_PROPERTY(mean)
      TESSERA_PROPERTY(std) TESSERA_PROPERTY(train) TESSERA_PROPERTY(scale) TESSERA_PROPERTY(ratio)
      TESSERA_PROPERTY(hflip_prob) TESSERA_PROPERTY(expand_grayscale) TESSERA_PROPERTY(interpolation)
      TESSERA_PROPERTY(resize_mode)
#undef TESSERA_PROPERTY
      .def("__repr__", [](const TransformOptions& o) {
        return "TransformOptions(image_size=" + std::to_string(o.image_size()) +
               ", train=" + (o.train() ? "True" : "False") + ")";
      });

  py::class_<ImageTransform>(m, "ImageTransform")
      .def(py::init<TransformOptions>(), py::arg("options"))
      .def("__call__",
           [](const ImageTransform& t, const at::Tensor& img, at::Generator gen) {
             return without_gil([&] { return t.apply(img, gen); });
           },
           py::arg("img"), py::arg("generator"),
           "uint8 HWC (or float CHW) -> float [C, S, S], random choices drawn from `generator`.")
      .def_property_readonly("options", &ImageTransform::options);
  py::class_<BatchDecoder, std::shared_ptr<BatchDecoder>>(
      m, "BatchDecoder", "A batch of JPEG/PNG bytes decoded and transformed on the intra-op pool (batch_decode.h).")
      .def(py::init<TransformOptions, size_t, int64_t>(), py::arg("transform"), py::arg("buffers") = 4,
           py::arg("threads") = -1)
      .def(
          "__call__",
          [](BatchDecoder& self, const std::vector<py::bytes>& images, const std::vector<std::string>& sources,
             const std::vector<uint64_t>& seeds, int64_t max_pixels) {
            std::vector<std::string> bytes(images.begin(), images.end());
            BatchDecode out = without_gil([&] { return self(bytes, sources, seeds, max_pixels); });
            return py::make_tuple(out.pixels, out.rows, out.errors);
          },
          py::arg("images"), py::arg("sources"), py::arg("seeds"), py::arg("max_pixels") = kDefaultMaxImagePixels,
          "(pixels [ok, C, S, S], rows, errors); samples that fail are left out and reported.");
  m.def("sample_seed", &sample_seed, py::arg("seed"), py::arg("epoch"), py::arg("index"));
  m.def("shard_indices", &shard_indices, py::arg("dataset_size"), py::arg("shuffle"), py::arg("seed"),
        py::arg("epoch"), py::arg("rank"), py::arg("world_size"));
}

void bind_datasets(py::module_& m) {
  py::class_<Dataset, std::shared_ptr<Dataset>>(m, "Dataset", "Map-style dataset of decoded images.")
      .def("__len__", &Dataset::size)
      .def("get",
           [](const Dataset& d, int64_t i) {
             Sample s = without_gil([&] { return d.get(i); });
             return py::make_tuple(s.image, s.label, s.caption);
           },
           py::arg("index"), "(image uint8 [H, W, C], label, caption)")
      .def_property_readonly("classes", [](const Dataset& d) { return fs_names(d.classes()); })
      .def_property_readonly("has_captions", &Dataset::has_captions)
      .def("source", [](const Dataset& d, int64_t i) { return fs_name(d.source(i)); }, py::arg("index"));

  py::class_<FashionMNIST, Dataset, std::shared_ptr<FashionMNIST>>(m, "FashionMNIST")
      .def(py::init([](const std::string& root, const std::string& split) {
             TORCH_CHECK_VALUE(split == "train" || split == "test", "FashionMNIST: split must be ",
                               "'train' or 'test', got '", split, "'");
             return without_gil([&] {
               return std::make_shared<FashionMNIST>(
                   root, split == "train" ? FashionMNIST::Split::train : FashionMNIST::Split::test);
             });
           }),
           py::arg("root"), py::arg("split"))
      .def(py::init([](const std::string& images, const std::string& labels) {
             return std::make_shared<FashionMNIST>(images, labels);
           }),
           py::arg("images_path"), py::arg("labels_path"))
      .def_property_readonly("images", &FashionMNIST::images)
      .def_property_readonly("labels", &FashionMNIST::labels);

  py::class_<ImageFolder, Dataset, std::shared_ptr<ImageFolder>>(m, "ImageFolder")
      .def(py::init([](const std::string& root, std::vector<std::string> extensions) {
             return without_gil([&] { return std::make_shared<ImageFolder>(root, std::move(extensions)); });
           }),
           py::arg("root"), py::arg("extensions") = std::vector<std::string>{".jpg", ".jpeg", ".png", ".webp"})
      .def_property_readonly("samples", [](const ImageFolder& d) {
        py::list out;
        for (const auto& [path, label] : d.samples()) out.append(py::make_tuple(fs_name(path), label));
        return out;
      });

  py::class_<CaptionDataset, Dataset, std::shared_ptr<CaptionDataset>>(m, "CaptionDataset")
      .def(py::init([](const std::string& path, const std::string& image_key, const std::string& caption_key) {
             return std::make_shared<CaptionDataset>(path, image_key, caption_key);
           }),
           py::arg("path"), py::arg("image_key") = "image", py::arg("caption_key") = "caption")
      .def_property_readonly("entries", [](const CaptionDataset& d) {
        py::list out;
        for (const CaptionEntry& e : d.entries()) out.append(py::make_tuple(e.image, e.caption));
        return out;
      });
}

void bind_loader(py::module_& m) {
  py::class_<TarReader, std::shared_ptr<TarReader>>(m, "TarReader",
                                                   "Regular members of a tar file, one at a time (tar_reader.h).")
      .def(py::init([](const std::string& path, int64_t max_member_bytes, bool headers_only) {
             TarLimits limits;
             limits.max_member_bytes = max_member_bytes;
             limits.headers_only = headers_only;
             return std::make_shared<TarReader>(path, limits);
           }),
           py::arg("path"), py::arg("max_member_bytes") = TarLimits().max_member_bytes,
           py::arg("headers_only") = false)
      .def("__iter__", [](std::shared_ptr<TarReader> self) { return self; })
      .def("__next__",
           [](TarReader& self) {
             TarMember member;
             if (!without_gil([&] { return self.next(member); })) throw py::stop_iteration();
             return py::make_tuple(member.name, py::bytes(member.data), member.offset, member.size);
           })
      .def_property_readonly("problems", &TarReader::problems)
      .def_property_readonly("members", &TarReader::members)
      .def_property_readonly("compressed", &TarReader::compressed);
  m.def("tar_name_is_safe", &tar_name_is_safe, py::arg("name"));
  m.def(
      "json_records",
      [](const std::string& path, int64_t max_record_bytes) {
        JsonScanLimits limits;
        limits.max_record_bytes = max_record_bytes;
        JsonRecords r = without_gil([&] { return scan_json_records(path, limits); });
        auto as_tensor = [](const std::vector<int64_t>& v) {
          return torch::tensor(c10::ArrayRef<int64_t>(v), torch::kInt64);
        };
        return py::make_tuple(r.format, as_tensor(r.offsets), as_tensor(r.lengths));
      },
      py::arg("path"), py::arg("max_record_bytes") = JsonScanLimits().max_record_bytes,
      "(format, offsets, lengths): each record's byte range in a JSON list or JSON-lines file "
      "(json_records.h).");

  py::class_<Loader, std::shared_ptr<Loader>>(m, "Loader", "Batches from C++ worker threads.")
      .def(py::init([](std::shared_ptr<Dataset> dataset, const TransformOptions& transform,
                       int64_t batch_size, bool shuffle, uint64_t seed, int64_t rank,
                       int64_t world_size, int64_t num_workers, int64_t prefetch, bool drop_last,
                       bool pin_memory, int64_t max_errors) {
             auto o = LoaderOptions().batch_size(batch_size).shuffle(shuffle).seed(seed).rank(rank);
             o.world_size(world_size).num_workers(num_workers).prefetch(prefetch).drop_last(drop_last);
             o.pin_memory(pin_memory).max_errors(max_errors);
             return std::make_shared<Loader>(std::move(dataset), transform, o);
           }),
           py::arg("dataset"), py::arg("transform"), py::arg("batch_size"), py::arg("shuffle"),
           py::arg("seed"), py::arg("rank"), py::arg("world_size"), py::arg("num_workers"),
           py::arg("prefetch"), py::arg("drop_last"), py::arg("pin_memory"), py::arg("max_errors"))
      .def("__len__", &Loader::size)
      .def_property_readonly("samples_per_rank", &Loader::samples_per_rank)
      .def("set_epoch", [](Loader& l, int64_t e) { l.set_epoch(e); }, py::arg("epoch"),
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("epoch", &Loader::epoch)
      .def("__iter__",
           [](std::shared_ptr<Loader> l) {
             // A finished epoch is iterated again from its start, as a DataLoader would.
             if (l->state().batches >= l->size()) {
               py::gil_scoped_release nogil;
               l->rewind();
             }
             return l;
           })
      .def("__next__",
           [](Loader& l) {
             // Workers never need the GIL; the consumer waits without it.
             std::optional<Batch> b = without_gil([&] { return l.next(); });
             if (!b) throw py::stop_iteration();
             return batch_to_dict(std::move(*b));
           })
      .def("stop", &Loader::stop, py::call_guard<py::gil_scoped_release>())
      .def("rewind", &Loader::rewind, py::call_guard<py::gil_scoped_release>())
      .def("state", [](const Loader& l) {
        const LoaderState s = l.state();
        return std::make_pair(s.epoch, s.batches);
      })
      .def("load_state",
           [](Loader& l, int64_t epoch, int64_t batches) {
             without_gil([&] { l.load_state({epoch, batches}); });
           },
           py::arg("epoch"), py::arg("batches"))
      .def_property_readonly("skipped", &Loader::skipped)
      .def_property_readonly("errors", &Loader::errors);
}

}  // namespace

void bind_data(py::module_& m) {
  m.doc() = "Image decoding, CLIP transforms, datasets and the threaded loader.";
  bind_vision(m);
  bind_datasets(m);
  bind_loader(m);
}

namespace {
const bool registered = register_submodule("data", "image decoding, transforms, datasets and the threaded loader", &bind_data, 20);
}  // namespace

}  // namespace tessera::python
