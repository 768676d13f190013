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
  /// Keeps why `name` cannot be used. Registrations that run in static initialisers call this
  /// instead of throwing: a throw there ends the process (or the Python interpreter importing an
  /// extension) before anyone can catch it. The registry raises the reason where the name is used.
  void refuse(const std::string& name, std::string why) {
    std::lock_guard<std::mutex> lock(mutex_);
    refused_.emplace(name, std::move(why));
  }
  /// Why `name` was refused, or nothing.
  std::optional<std::string> refusal(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = refused_.find(name);
    return it == refused_.end() ? std::nullopt : std::optional<std::string>(it->second);
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
  std::map<std::string, std::string> refused_;
};

}  // namespace tessera::core
