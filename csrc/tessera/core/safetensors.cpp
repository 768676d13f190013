// safetensors I/O following the format spec of huggingface/safetensors: the reader trusts
// nothing in the file until it has been checked, so a corrupt file is an error, never a crash.
#include "tessera/core/safetensors.h"

#include "tessera/core/atomic_file.h"
#include "tessera/core/json_config.h"
#include "tessera/core/regular_file.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

namespace tessera::core {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference reader's own cap

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},   {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort},  {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

at::ScalarType dtype_from_name(const std::string& name, const std::string& where) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  TORCH_CHECK_VALUE(false, where, ": unsupported dtype '", name,
                    "' (expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
}

const char* dtype_name(at::ScalarType type, const std::string& key) {
  for (const auto& d : kDtypes)
    if (type == d.type) return d.name;
  TORCH_CHECK_TYPE(false, "safetensors cannot store tensor '", key, "' of dtype ", type);
}

// Owns a private mapping of the file; tensors keep it alive through their deleter.
struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr && addr != MAP_FAILED) ::munmap(addr, size);
  }
};

std::shared_ptr<Mapping> map_file(const std::string& path) {
  require_regular_file(path, "a safetensors file");  // before open(): opening a FIFO blocks
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    TORCH_CHECK(err != ENOENT, "safetensors file not found: ", path);
    TORCH_CHECK(false, "cannot open safetensors file ", path, ": ", std::strerror(err));
  }
  struct stat st {};
  auto map = std::make_shared<Mapping>();
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    TORCH_CHECK_VALUE(false, "safetensors file ", path, " is not a regular file");
  }
  map->size = static_cast<size_t>(st.st_size);
  if (map->size > 0) {
    map->addr = ::mmap(nullptr, map->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  }
  ::close(fd);
  TORCH_CHECK(map->addr != MAP_FAILED, "cannot map ", path, ": ", std::strerror(errno));
  return map;
}

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

struct Entry {
  std::string name;
  at::ScalarType type;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& name, const nlohmann::json& info, const std::string& path,
                  uint64_t data_size) {
  std::string where = "safetensors file " + path + ", tensor '" + name + "'";
  TORCH_CHECK_VALUE(info.is_object(), where, ": header entry is not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    TORCH_CHECK_VALUE(info.contains(field), where, ": header entry has no '", field, "'");
  TORCH_CHECK_VALUE(info["dtype"].is_string(), where, ": dtype is not a string");
  Entry e{name, dtype_from_name(info["dtype"].get<std::string>(), where), {}, 0, 0};
  const auto& shape = info["shape"];
  TORCH_CHECK_VALUE(shape.is_array(), where, ": shape is not an array");
  // The byte count must stay below 2^62 (not only the element count): a shape of 2^62 F64
  // values would otherwise wrap to 0 bytes and alias memory past the buffer.
  const uint64_t itemsize = c10::elementSize(e.type);
  uint64_t numel = 1;
  for (const auto& d : shape) {
    TORCH_CHECK_VALUE(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                      where, ": shape ", json_excerpt(shape), " has a non-integer or negative size");
    uint64_t dim = d.get<uint64_t>();
    TORCH_CHECK_VALUE(dim == 0 || numel <= (1ull << 62) / itemsize / dim, where, ": shape ",
                      json_excerpt(shape), " x ", itemsize, "-byte values overflows");
    numel *= dim;
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  const auto& off = info["data_offsets"];
  TORCH_CHECK_VALUE(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                        off[1].is_number_unsigned(),
                    where, ": data_offsets must be two non-negative integers, got ", json_excerpt(off));
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  TORCH_CHECK_VALUE(e.begin <= e.end && e.end <= data_size, where, ": data_offsets [", e.begin,
                    ", ", e.end, "] outside the data buffer of ", data_size, " bytes");
  uint64_t bytes = numel * itemsize;
  TORCH_CHECK_VALUE(e.end - e.begin == bytes, where, ": shape ", json_excerpt(shape), " x ",
                    info["dtype"].get<std::string>(), " needs ", bytes, " bytes but data_offsets span ",
                    e.end - e.begin);
  return e;
}

// The header's JSON, refusing a key given twice in one object: nlohmann keeps the last, where the
// reference reader refuses a repeated field (shape, __metadata__), and a repeated tensor name is
// read as one tensor here and as another by a tool that keeps the first.
nlohmann::json parse_header(const unsigned char* begin, const unsigned char* end, const std::string& path) {
  using Event = nlohmann::json::parse_event_t;
  std::vector<std::set<std::string>> open;
  auto refuse_repeats = [&](int, Event event, nlohmann::json& parsed) {
    if (event == Event::object_start) open.emplace_back();
    if (event == Event::object_end && !open.empty()) open.pop_back();
    if (event == Event::key && !open.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      TORCH_CHECK_VALUE(open.back().insert(key).second, "safetensors file ", path, ": key '", key.substr(0, 200),
                        "' is given twice in one object of the header (readers would disagree on which counts)");
    }
    return true;
  };
  return nlohmann::json::parse(begin, end, refuse_repeats, false);
}

// Parses `size` bytes at `bytes` (a file mapping or a string); every tensor co-owns `owner`.
TensorDict parse_buffer(unsigned char* bytes, size_t size, const std::shared_ptr<void>& owner,
                        const std::string& path, Metadata* metadata) {
  TORCH_CHECK_VALUE(size >= 8, "safetensors file ", path, " is truncated: ", size,
                    " bytes, not even the 8-byte header length");
  uint64_t header_len = read_u64_le(bytes);
  TORCH_CHECK_VALUE(header_len <= kMaxHeaderBytes, "safetensors file ", path, ": header length ",
                    header_len, " exceeds the ", kMaxHeaderBytes, "-byte limit (corrupt file?)");
  TORCH_CHECK_VALUE(8 + header_len <= size, "safetensors file ", path, " is truncated: header of ",
                    header_len, " bytes but the file has ", size, " bytes");
  nlohmann::json header = parse_header(bytes + 8, bytes + 8 + header_len, path);
  TORCH_CHECK_VALUE(!header.is_discarded(), "safetensors file ", path, ": header is not valid JSON");
  TORCH_CHECK_VALUE(header.is_object(), "safetensors file ", path, ": header is not a JSON object");

  const uint64_t data_size = size - 8 - header_len;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      TORCH_CHECK_VALUE(it->is_object(), "safetensors file ", path, ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        TORCH_CHECK_VALUE(m->is_string(), "safetensors file ", path, ": metadata '", m.key(),
                          "' is not a string");
        if (metadata) (*metadata)[m.key()] = m->get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(it.key(), *it, path, data_size));
  }
  // The buffer must be covered exactly: sorted spans touch end to begin, from 0 to the end.
  std::vector<const Entry*> order;
  for (const auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (const Entry* e : order) {
    TORCH_CHECK_VALUE(e->begin >= cursor, "safetensors file ", path, ", tensor '", e->name,
                      "': data_offsets [", e->begin, ", ", e->end, "] overlap the previous tensor");
    TORCH_CHECK_VALUE(e->begin == cursor, "safetensors file ", path, ", tensor '", e->name,
                      "': gap of ", e->begin - cursor, " bytes before its data");
    cursor = e->end;
  }
  TORCH_CHECK_VALUE(cursor == data_size, "safetensors file ", path, ": ", data_size - cursor,
                    " trailing bytes not covered by any tensor");

  TensorDict out;
  unsigned char* data = bytes + 8 + header_len;
  for (const auto& e : entries) {
    auto keep = owner;  // each tensor co-owns the mapping or string
    out[e.name] = at::from_blob(
        data + e.begin, e.shape, [keep](void*) mutable { keep.reset(); },
        at::TensorOptions().dtype(e.type));
  }
  return out;
}

}  // namespace

TensorDict load_safetensors(const std::string& path, Metadata* metadata) {
  auto map = map_file(path);
  return parse_buffer(static_cast<unsigned char*>(map->addr), map->size, map, path, metadata);
}

TensorDict parse_safetensors(std::string bytes, const std::string& source, Metadata* metadata) {
  // Tensors are writable views, as with a private mapping, so the string is owned and mutable.
  auto owned = std::make_shared<std::string>(std::move(bytes));
  return parse_buffer(reinterpret_cast<unsigned char*>(owned->data()), owned->size(), owned, source,
                      metadata);
}

std::string serialize_safetensors(const TensorDict& tensors, const Metadata& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> cpu;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK_VALUE(t.defined(), "cannot save undefined tensor '", name, "'");
    // A Python tensor subclass (FSDP2's DTensor) would dispatch to Python here, where the binding
    // has released the GIL: the process crashed. A meta tensor holds no values.
    TORCH_CHECK_VALUE(!t.unsafeGetTensorImpl()->is_python_dispatch() && !t.is_meta(), "cannot save tensor '", name,
                      "': it is ", t.is_meta() ? "on the meta device" : "a tensor subclass (a DTensor shard?)",
                      " and holds no values to write; save a full state dict of plain tensors");
    TORCH_CHECK_VALUE(name != "__metadata__", "cannot save a tensor named '__metadata__': the name is reserved "
                      "for the safetensors metadata block");
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    uint64_t bytes = c.numel() * c.element_size();
    header[name] = {{"dtype", dtype_name(c.scalar_type(), name)},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    cpu.push_back(c);
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // align the data buffer to 8 bytes
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += json;
  out.reserve(out.size() + offset);
  for (const auto& c : cpu) out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  return out;
}

void save_safetensors(const std::string& path, const TensorDict& tensors, const Metadata& metadata) {
  write_file_atomic(path, serialize_safetensors(tensors, metadata));
}

TensorDict load_checkpoint_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path single = fs::path(dir) / "model.safetensors";
  fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) return load_safetensors(single.string());
  TORCH_CHECK_VALUE(fs::exists(index), "no checkpoint in ", dir,
                    ": expected model.safetensors or model.safetensors.index.json");
  auto json = nlohmann::json::parse(read_file(index.string()), nullptr, false);
  TORCH_CHECK_VALUE(!json.is_discarded() && json.contains("weight_map") && json["weight_map"].is_object(),
                    index.string(), ": not a valid index (no 'weight_map' object)");
  std::map<std::string, TensorDict> shards;
  TensorDict out;
  for (auto it = json["weight_map"].begin(); it != json["weight_map"].end(); ++it) {
    TORCH_CHECK_VALUE(it->is_string(), index.string(), ": weight_map['", it.key(), "'] is not a file name");
    std::string shard = it->get<std::string>();
    TORCH_CHECK_VALUE(shard.find('/') == std::string::npos, index.string(), ": shard name '", shard,
                      "' must be a plain file name");
    auto found = shards.find(shard);
    if (found == shards.end())
      found = shards.emplace(shard, load_safetensors((fs::path(dir) / shard).string())).first;
    auto t = found->second.find(it.key());
    TORCH_CHECK_VALUE(t != found->second.end(), index.string(), ": tensor '", it.key(),
                      "' is listed in shard ", shard, " but not stored there");
    out[it.key()] = t->second;
  }
  return out;
}

}  // namespace tessera::core
