// Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017; github.com/zalandoresearch/fashion-mnist) read
// from its four IDX files, as torchvision.datasets.FashionMNIST does.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "tessera/data/dataset.h"

namespace tessera::data {

/// The 60,000 training or 10,000 test images (28 x 28 grayscale) with labels 0..9, held in
/// memory (47 MB for the training split). Samples are uint8 [28, 28, 1] views.
///
///     FashionMNIST train("/usr/share/datasets/fashion-mnist", FashionMNIST::Split::train);
///     Sample s = train.get(0);  // s.image uint8 [28, 28, 1], s.label 9 ("Ankle boot")
class FashionMNIST : public Dataset {
 public:
  enum class Split { train, test };

  /// Finds `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` in `root` or in
  /// `root/FashionMNIST/raw` (torchvision's layout). Throws c10::Error listing the paths
  /// tried when a file is missing, c10::ValueError naming the file when it is malformed
  /// (magic number, dims, image/label count mismatch, label out of range).
  FashionMNIST(const std::string& root, Split split);

  /// From explicit IDX image and label files.
  FashionMNIST(const std::string& images_path, const std::string& labels_path);

  int64_t size() const override { return images_.size(0); }
  Sample get(int64_t index) const override;
  std::vector<std::string> classes() const override { return class_names(); }
  std::string source(int64_t index) const override;

  const at::Tensor& images() const { return images_; }  ///< uint8 [N, 28, 28]
  const at::Tensor& labels() const { return labels_; }  ///< int64 [N]

  /// "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
  /// "Bag", "Ankle boot".
  static std::vector<std::string> class_names();

 private:
  std::string images_path_;
  at::Tensor images_, labels_;
};

}  // namespace tessera::data
