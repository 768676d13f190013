// Fashion-MNIST after torchvision.datasets.FashionMNIST (file names, class names) and the
// dataset's README (IDX layout, 10 classes), with every file checked before use.
#include "tessera/data/fashion_mnist.h"

#include <c10/util/Exception.h>

#include <filesystem>

#include "tessera/data/idx_file.h"

namespace tessera::data {
namespace {

std::string find_file(const std::string& root, const std::string& stem) {
  std::string tried;
  for (const std::string& dir : {root, root + "/FashionMNIST/raw"}) {
    for (const char* ext : {".gz", ""}) {
      const std::string p = dir + "/" + stem + ext;
      if (std::filesystem::is_regular_file(p)) return p;
      tried += "\n  " + p;
    }
  }
  TORCH_CHECK_VALUE(false, "FashionMNIST: '", stem, "' not found; tried:", tried);  // a bad --data: one line
}

}  // namespace

FashionMNIST::FashionMNIST(const std::string& root, Split split)
    : FashionMNIST(find_file(root, split == Split::train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte"),
                   find_file(root, split == Split::train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte")) {}

FashionMNIST::FashionMNIST(const std::string& images_path, const std::string& labels_path)
    : images_path_(images_path) {
  images_ = read_idx(images_path, kIdxImagesMagic);
  const at::Tensor labels = read_idx(labels_path, kIdxLabelsMagic);
  TORCH_CHECK_VALUE(images_.scalar_type() == at::kByte && images_.dim() == 3 && images_.size(1) > 0 &&
                        images_.size(2) > 0,
                    "FashionMNIST: '", images_path, "' must hold uint8 images [N, rows, cols], got ",
                    images_.scalar_type(), " ", images_.sizes());
  TORCH_CHECK_VALUE(labels.scalar_type() == at::kByte && labels.dim() == 1, "FashionMNIST: '",
                    labels_path, "' must hold uint8 labels [N], got ", labels.scalar_type(), " ",
                    labels.sizes());
  TORCH_CHECK_VALUE(labels.size(0) == images_.size(0), "FashionMNIST: '", images_path, "' has ",
                    images_.size(0), " images but '", labels_path, "' has ", labels.size(0), " labels");
  const auto num_classes = static_cast<int64_t>(class_names().size());
  TORCH_CHECK_VALUE(labels.numel() == 0 || labels.max().item<int64_t>() < num_classes,
                    "FashionMNIST: '", labels_path, "' has label ", labels.max().item<int64_t>(),
                    ", expected 0..", num_classes - 1);
  labels_ = labels.to(at::kLong);
}

Sample FashionMNIST::get(int64_t index) const {
  TORCH_CHECK_INDEX(index >= 0 && index < size(), "FashionMNIST: index ", index,
                    " out of range for ", size(), " samples");
  return {images_[index].unsqueeze(2), labels_[index].item<int64_t>(), ""};
}

std::string FashionMNIST::source(int64_t index) const {
  return images_path_ + "#" + std::to_string(index);
}

std::vector<std::string> FashionMNIST::class_names() {
  return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
}

}  // namespace tessera::data
