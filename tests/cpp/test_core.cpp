// core/: safetensors validation (every malformed layout is an error naming file and tensor),
// atomic writes, JSON config errors, the weight-loading rules.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "tessera/core/atomic_file.h"
#include "tessera/core/json_config.h"
#include "tessera/core/registry.h"
#include "tessera/core/safetensors.h"
#include "tessera/core/weight_loading.h"

#include <torch/nn/module.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <set>

#include "test_util.h"

using namespace tessera::core;

namespace {

std::string temp_path(const std::string& name) { return tessera::testing::temp_path("core_" + name); }

// A safetensors file from a raw header and data buffer, for malformed layouts.
std::string write_raw(const std::string& name, const std::string& header, size_t data_bytes,
                      int64_t header_len_override = -1) {
  std::string path = temp_path(name);
  std::ofstream f(path, std::ios::binary);
  uint64_t n = header_len_override >= 0 ? static_cast<uint64_t>(header_len_override) : header.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  f.write(len, 8);
  f << header << std::string(data_bytes, '\0');
  return path;
}

void expect_error(const std::string& path, const std::string& needle) {
  try {
    load_safetensors(path);
    FAIL() << "expected an error for " << path;
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

}  // namespace

TEST(Safetensors, RoundTripsEveryDtype) {
  TensorDict t;
  for (auto type : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar,
                    at::kByte, at::kBool}) {
    t[std::string("t_") + c10::toString(type)] = (at::rand({3, 5}) * 100).to(type);
  }
  t["scalar"] = at::tensor(3.5);
  t["empty"] = at::empty({0, 4});
  t["strided"] = at::arange(12, at::kFloat).view({3, 4}).t();  // non-contiguous
  std::string path = temp_path("all.safetensors");
  save_safetensors(path, t, {{"format", "pt"}});
  Metadata meta;
  auto back = load_safetensors(path, &meta);
  EXPECT_EQ(meta.at("format"), "pt");
  ASSERT_EQ(back.size(), t.size());
  for (const auto& [k, v] : t) {
    EXPECT_EQ(back.at(k).scalar_type(), v.scalar_type()) << k;
    EXPECT_TRUE(at::equal(back.at(k), v)) << k;
  }
  back.at("scalar").fill_(1.0);  // copy-on-write mapping: writable, the file is untouched
  EXPECT_EQ(load_safetensors(path).at("scalar").item<double>(), 3.5);
}

TEST(Safetensors, RejectsMalformedFiles) {
  const std::string f32 = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  {
    std::string p = temp_path("short.safetensors");
    std::ofstream(p) << "abc";
    expect_error(p, "truncated");
  }
  expect_error(write_raw("hugeheader.safetensors", f32, 8, int64_t(1) << 40), "header length");
  expect_error(write_raw("pasteof.safetensors", f32, 8, 4096), "truncated");
  expect_error(write_raw("notjson.safetensors", "{not json", 8), "not valid JSON");
  expect_error(write_raw("dtype.safetensors", R"({"a":{"dtype":"F8","shape":[2],"data_offsets":[0,8]}})", 8),
               "unsupported dtype");
  expect_error(write_raw("span.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "'a'");
  expect_error(write_raw("range.safetensors", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4),
               "outside the data buffer");
  // Tensor "a" over bytes 0-8, then a second entry.
  const auto after_a = [](const char* second) {
    return std::string(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)") + second;
  };
  expect_error(
      write_raw("overlap.safetensors", after_a(R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})"), 12),
      "overlap");
  expect_error(write_raw("gap.safetensors", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "gap");
  expect_error(write_raw("trailing.safetensors", f32, 16), "trailing");
  expect_error(write_raw("negshape.safetensors", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
               "negative");
  // A repeated key at any level: which one counts would depend on the reader.
  expect_error(write_raw("twice.safetensors", R"({"a":{"dtype":"F32","shape":[2],"shape":[1],"data_offsets":[0,8]}})",
                         8),
               "key 'shape' is given twice");
  expect_error(
      write_raw("twicename.safetensors", after_a(R"("a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})"), 8),
      "key 'a' is given twice");
  EXPECT_THROW(load_safetensors(temp_path("does_not_exist.safetensors")), c10::Error);
}

TEST(Safetensors, ShardedCheckpointFolder) {
  namespace fs = std::filesystem;
  std::string dir = temp_path("sharded");
  fs::create_directories(dir);
  save_safetensors(dir + "/model-00001-of-00002.safetensors", {{"a", at::ones({2})}});
  save_safetensors(dir + "/model-00002-of-00002.safetensors", {{"b", at::zeros({3})}});
  nlohmann::json index = {{"weight_map", {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}}}};
  write_json_file(dir + "/model.safetensors.index.json", index);
  auto t = load_checkpoint_dir(dir);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_TRUE(at::equal(t.at("b"), at::zeros({3})));
  index["weight_map"]["c"] = "model-00001-of-00002.safetensors";
  write_json_file(dir + "/model.safetensors.index.json", index);
  EXPECT_THROW(load_checkpoint_dir(dir), c10::ValueError);
}

TEST(AtomicFile, ReplacesWholeFileAndLeavesNoTemp) {
  namespace fs = std::filesystem;
  // A fresh folder per run (fs::remove_all resolves to a copy inside libtorch that crashes).
  std::string tmpl = temp_path("atomicXXXXXX");
  std::string dir = mkdtemp(tmpl.data());
  write_file_atomic(dir + "/x.txt", "first");
  write_file_atomic(dir + "/x.txt", "second");
  EXPECT_EQ(read_file(dir + "/x.txt"), "second");
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(JsonConfig, ErrorsNameTheKey) {
  auto j = nlohmann::json::parse(R"({"hidden_size": "wide", "eps": 1e-5})");
  ConfigReader r(j, "my config");
  try {
    r.get_int("hidden_size", 1);
    FAIL();
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("my config: hidden_size must be an integer"), std::string::npos);
  }
  EXPECT_DOUBLE_EQ(r.get_double("eps", 0), 1e-5);
  EXPECT_EQ(r.get_int("missing", 7), 7);
  EXPECT_THROW(r.reject_unknown({"eps"}), c10::ValueError);
  std::string p = temp_path("bad.json");
  std::ofstream(p) << "{oops";
  EXPECT_THROW(read_json_file(p), c10::ValueError);
}

namespace {
TensorDict keys(std::initializer_list<const char*> names) {
  TensorDict out;
  float v = 0;
  for (const char* n : names) out[n] = at::full({1}, v++);
  return out;
}
std::set<std::string> names_of(const TensorDict& d) {
  std::set<std::string> out;
  for (const auto& [k, _] : d) out.insert(k);
  return out;
}
}  // namespace

TEST(WeightLoading, AliasesRenameOnlyWhatTheModuleLacksAndTiesFillOmittedKeys) {
  WeightLoading how;
  how.key_aliases = {{"^old\\.", "missing."}, {"^old\\.", "new."}};  // the first that yields an own key wins
  how.tied_weights = {{"head.weight", "embed.weight"}, {"kept.weight", "embed.weight"}};
  const std::set<std::string> own{"new.w", "x", "embed.weight", "head.weight", "kept.weight"};
  auto out = rename_for_module(keys({"old.w", "x", "embed.weight", "kept.weight", "a.position_ids", "position_ids"}),
                               own, how, nlohmann::json(), "ckpt");
  EXPECT_EQ(names_of(out), own);  // position_ids dropped, head.weight filled from embed.weight
  EXPECT_TRUE(at::equal(out.at("head.weight"), out.at("embed.weight")));
  EXPECT_FALSE(at::equal(out.at("kept.weight"), out.at("embed.weight")));  // present: not overwritten
}

TEST(WeightLoading, BasePrefixAndParentFolderAsTransformers) {
  WeightLoading base;
  base.base_model_prefix = "vit";
  auto out = rename_for_module(keys({"vit.a", "vit.b", "decoder.c"}), {"a", "b"}, base, nlohmann::json(), "ckpt");
  EXPECT_EQ(names_of(out), (std::set<std::string>{"a", "b"}));  // the task head is left out
  // A module that itself has the prefix (the task model) keeps every key.
  out = rename_for_module(keys({"vit.a", "decoder.c"}), {"vit.a", "decoder.c"}, base, nlohmann::json(), "ckpt");
  EXPECT_EQ(names_of(out), (std::set<std::string>{"vit.a", "decoder.c"}));

  WeightLoading part;
  part.key_aliases = {{"^vision_model\\.", ""}};
  part.base_config_key = "vision_config";
  const auto parent = nlohmann::json{{"vision_config", nlohmann::json::object()}};
  out = rename_for_module(keys({"vision_model.a", "text_model.b"}), {"a"}, part, parent, "ckpt");
  EXPECT_EQ(names_of(out), (std::set<std::string>{"a"}));
  // In its own folder the part loads strictly: the stray key stays for the strict load to report.
  out = rename_for_module(keys({"a", "b"}), {"a"}, part, nlohmann::json::object(), "ckpt");
  EXPECT_EQ(names_of(out), (std::set<std::string>{"a", "b"}));
  // A parent folder holding none of the part's weights is an error naming the folder and the part.
  tessera::testing::expect_error(
      [&] { rename_for_module(keys({"text_model.b"}), {"a"}, part, parent, "checkpoint /x"); },
      "checkpoint /x: none of the module's weights are in this checkpoint (its 'vision_config' part)");
}

namespace {
struct RulesA : torch::nn::Module {
  RulesA() : torch::nn::Module("TestOnlyModule") {}
};
struct RulesB : torch::nn::Module {
  RulesB() : torch::nn::Module("TestOnlyModule") {}  // the same name, another class
};
struct RulesC : torch::nn::Module {};
struct RulesD : torch::nn::Module {};
struct RulesE : torch::nn::Module {};
}  // namespace

TEST(WeightLoading, RulesFollowTheModuleClassNotItsName) {
  WeightLoading how;
  how.key_aliases = {{"^a\\.", ""}};
  EXPECT_TRUE(register_weight_loading<RulesA>("TestOnlyModule", how));
  EXPECT_EQ(weight_loading("TestOnlyModule").key_aliases, how.key_aliases);
  EXPECT_EQ(weight_loading(RulesA()).key_aliases, how.key_aliases);
  EXPECT_TRUE(weight_loading(RulesB()).key_aliases.empty());  // a user's module that shares the name
  EXPECT_TRUE(weight_loading("NoSuchModule").key_aliases.empty());
}

// Registration runs in static initialisers, where a throw ends the process: it never throws; what
// it refused is raised where the rules are read, naming the module and the reason.
TEST(WeightLoading, RefusedRulesAreRaisedWhereTheyAreRead) {
  WeightLoading how;
  how.key_aliases = {{"^c\\.", ""}};
  EXPECT_TRUE(register_weight_loading<RulesC>("TestOnlyTwice", how));
  EXPECT_FALSE(register_weight_loading<RulesD>("TestOnlyTwice", how));
  tessera::testing::expect_error([] { weight_loading("TestOnlyTwice"); }, "'TestOnlyTwice': declared twice");
  tessera::testing::expect_error([] { weight_loading(RulesD()); }, "declared twice");
  WeightLoading bad;
  bad.key_aliases = {{"(unclosed", ""}};
  EXPECT_FALSE(register_weight_loading<RulesE>("TestOnlyBadPattern", bad));
  tessera::testing::expect_error([] { weight_loading(RulesE()); },
                                 "'TestOnlyBadPattern': key alias '(unclosed' is not a regular expression");
  WeightLoading group;
  group.key_aliases = {{"^(x)\\.", "$1."}};
  EXPECT_FALSE(register_weight_loading(std::type_index(typeid(int)), "TestOnlyGroup", group));
  tessera::testing::expect_error([] { weight_loading("TestOnlyGroup"); }, "the replacement must be plain text");
  EXPECT_FALSE(register_weight_loading(std::type_index(typeid(long)), "", how));
  // Rules given directly are checked where they are applied.
  tessera::testing::expect_error([&] { rename_for_module({}, {}, group, nlohmann::json(), "ckpt"); },
                                 "ckpt: key alias '^(x)\\.' -> '$1.': the replacement must be plain text");
  const auto names = list_weight_loading();
  EXPECT_TRUE(std::count(names.begin(), names.end(), "TestOnlyBadPattern"));  // refused names are listed
}

TEST(Registry, AFamilyRegisteredTwiceIsRaisedWhereItIsUsed) {
  register_family("test_only_family", [](const nlohmann::json&, const std::string&) {});
  register_family("test_only_family", [](const nlohmann::json&, const std::string&) {});  // no throw: static init
  tessera::testing::expect_error([] { validate_config("test_only_family", nlohmann::json::object(), "v.json"); },
                                 "v.json: model family 'test_only_family' is registered twice");
}
