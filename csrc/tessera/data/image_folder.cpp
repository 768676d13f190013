// ImageFolder after torchvision/datasets/folder.py: classes = sorted subfolder names;
// samples = sorted(os.walk(class_dir, followlinks=True)) then sorted file names per folder.
#include "tessera/data/image_folder.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>
#include <tuple>

#include "tessera/vision/image_decode.h"

namespace fs = std::filesystem;

namespace tessera::data {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool has_extension(const std::string& name, const std::vector<std::string>& extensions) {
  const std::string n = lower(name);
  for (const std::string& e : extensions) {
    if (n.size() >= e.size() && n.compare(n.size() - e.size(), e.size(), e) == 0) return true;
  }
  return false;
}

}  // namespace

ImageFolder::ImageFolder(const std::string& root, std::vector<std::string> extensions) {
  for (std::string& e : extensions) e = lower(e);
  std::error_code ec;
  TORCH_CHECK_VALUE(fs::is_directory(root, ec), "ImageFolder: '", root, "' is not a folder");
  TORCH_CHECK_VALUE(!extensions.empty(), "ImageFolder: no file extensions given for '", root, "'");
  for (const fs::directory_entry& e : fs::directory_iterator(root)) {
    if (e.is_directory(ec)) classes_.push_back(e.path().filename().string());
  }
  // Byte order of UTF-8 names is code-point order, i.e. Python's sorted().
  std::sort(classes_.begin(), classes_.end());
  TORCH_CHECK_VALUE(!classes_.empty(), "ImageFolder: no class subfolder in '", root, "'");
  std::vector<std::string> empty;
  for (size_t label = 0; label < classes_.size(); ++label) {
    // (folder, file name) pairs sort like os.walk's folders, then names within a folder.
    std::vector<std::tuple<std::string, std::string>> files;
    const fs::path dir = fs::path(root) / classes_[label];
    const auto opts = fs::directory_options::follow_directory_symlink |
                      fs::directory_options::skip_permission_denied;
    // Symlinked folders are followed (as torchvision's os.walk(followlinks=True)), each real folder
    // once: a link back to an ancestor listed the same images ~40 times, then stopped at the
    // filesystem's link depth.
    std::set<fs::path> seen{fs::canonical(dir, ec)};
    for (auto it = fs::recursive_directory_iterator(dir, opts); it != fs::recursive_directory_iterator();
         ++it) {
      if (it->is_directory(ec)) {
        const fs::path real = fs::canonical(it->path(), ec);
        if (ec || !seen.insert(real).second) it.disable_recursion_pending();
        continue;
      }
      const std::string name = it->path().filename().string();
      if (has_extension(name, extensions) && it->is_regular_file(ec))
        files.emplace_back(it->path().parent_path().string(), name);
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) empty.push_back(classes_[label]);
    for (const auto& [folder, name] : files)
      samples_.emplace_back(folder + "/" + name, static_cast<int64_t>(label));
  }
  if (!empty.empty()) {
    std::string names, exts;
    for (const std::string& c : empty) names += (names.empty() ? "" : ", ") + c;
    for (const std::string& e : extensions) exts += (exts.empty() ? "" : " ") + e;
    TORCH_CHECK_VALUE(false, "ImageFolder: no file with extension ", exts, " for the classes ", names,
                      " in '", root, "'");
  }
}

Sample ImageFolder::get(int64_t index) const {
  TORCH_CHECK_INDEX(index >= 0 && index < size(), "ImageFolder: index ", index,
                    " out of range for ", size(), " samples");
  const auto& [path, label] = samples_[static_cast<size_t>(index)];
  return {vision::read_image(path), label, ""};
}

std::string ImageFolder::source(int64_t index) const {
  return index >= 0 && index < size() ? samples_[static_cast<size_t>(index)].first
                                      : Dataset::source(index);
}

}  // namespace tessera::data
