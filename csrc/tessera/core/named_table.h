// A thread-safe table of named entries, the storage behind tessera's registries (model configs,
// families, projectors): sorted names for listings and "known: ..." errors. Callers keep one in a
// function-local static so static initialisers in other translation units can register into it.
#pragma once
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace tessera::core {

template <class T>
class NamedTable {
 public:
  /// Adds `name` unless it is there already; returns whether it was added.
  bool add(const std::string& name, T value) {
    std::lock_guard<std::mutex> lock(mutex_);
    return items_.emplace(name, std::move(value)).second;
  }
  /// A copy of the entry, or nothing.
  std::optional<T> get(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = items_.find(name);
    return it == items_.end() ? std::nullopt : std::optional<T>(it->second);
  }
  /// The entry itself, or null (entries are never replaced or removed).
  const T* find(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = items_.find(name);
    return it == items_.end() ? nullptr : &it->second;
  }
  std::vector<std::string> names() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> out;
    for (const auto& [name, _] : items_) out.push_back(name);
    return out;
  }
  /// "a, b, c": the names, for error messages.
  std::string known() const {
    std::string out;
    for (const auto& name : names()) out += (out.empty() ? "" : ", ") + name;
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, T> items_;
};

}  // namespace tessera::core
