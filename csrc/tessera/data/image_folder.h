// A class-per-subfolder image dataset after torchvision.datasets.ImageFolder (find_classes,
// make_dataset): same class order, same sample order, so labels and indices agree with it.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tessera/data/dataset.h"

namespace tessera::data {

/// `root/<class>/**/<file>.{jpg,jpeg,png}`: classes are the subfolder names sorted, label =
/// position; files are found recursively (symlinks followed) and ordered by folder then name,
/// as torchvision orders them. Images are decoded on `get` (uint8 [H, W, 3]).
///
///     ImageFolder ds("/data/imagenette/train");
///     ds.classes();            // {"n01440764", ...}
///     Sample s = ds.get(0);    // s.image uint8 [H, W, 3], s.label 0
class ImageFolder : public Dataset {
 public:
  /// Throws c10::Error when `root` is not a folder, has no class subfolder, or a class has no
  /// file with one of `extensions` (compared case-insensitively, dot included).
  explicit ImageFolder(const std::string& root,
                       std::vector<std::string> extensions = {".jpg", ".jpeg", ".png", ".webp"});

  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  /// Reads and decodes the file; c10::Error / c10::ValueError naming it when that fails.
  Sample get(int64_t index) const override;
  std::vector<std::string> classes() const override { return classes_; }
  std::string source(int64_t index) const override;

  /// (path, label) of every sample, in index order (torchvision's `.samples`).
  const std::vector<std::pair<std::string, int64_t>>& samples() const { return samples_; }

 private:
  std::vector<std::string> classes_;
  std::vector<std::pair<std::string, int64_t>> samples_;
};

}  // namespace tessera::data
