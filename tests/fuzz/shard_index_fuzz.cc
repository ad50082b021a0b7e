// Fuzzes the sharded-checkpoint index (model.safetensors.index.json, read by
// models/tensor_store.cc TensorStore::OpenDir) with arbitrary text, in a directory that holds two
// valid shards (tensors a, b in model-00001-of-00002.safetensors; c in model-00002-of-00002).
// Promise: the index is refused with a status, or the store holds exactly the tensors its
// weight_map names, each from the shard it names; no shard name leaves the directory; no UB,
// crash or leak.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "models/safetensors.h"
#include "models/tensor_store.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

const std::string& ModelDir() {
  static const std::string dir = [] {
    const std::string d = gla::fuzz::TempDir() + "/model";
    std::filesystem::create_directories(d);
    const std::vector<float> a = {1, 2}, b = {3, 4, 5, 6}, c = {7};
    const std::vector<gla::TensorToWrite> first = {gla::F32Tensor("a", {2}, a), gla::F32Tensor("b", {2, 2}, b)};
    const std::vector<gla::TensorToWrite> second = {gla::F32Tensor("c", {1}, c)};
    if (!gla::WriteSafetensors(d + "/model-00001-of-00002.safetensors", first).ok() ||
        !gla::WriteSafetensors(d + "/model-00002-of-00002.safetensors", second).ok())
      std::abort();
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = ModelDir();
  gla::fuzz::WriteFileOrDie(dir + "/model.safetensors.index.json",
                            std::string_view(reinterpret_cast<const char*>(data), size));
  auto store = gla::TensorStore::OpenDir(dir);
  if (!store.ok()) return 0;
  GLA_FUZZ_CHECK(store->size() >= 1 && store->size() <= 3, "%zu tensors", store->size());
  for (const std::string& name : store->Names()) {
    const gla::TensorView* t = store->Find(name);
    GLA_FUZZ_CHECK(t != nullptr, "'%s' listed but not found", name.c_str());
    GLA_FUZZ_CHECK(std::filesystem::path(t->file).parent_path() == std::filesystem::path(dir),
                   "'%s' read from %s, outside the model directory", name.c_str(), t->file.c_str());
    auto v = gla::ToFloat32(*t);
    GLA_FUZZ_CHECK(v.ok() && static_cast<int64_t>(v->size()) == t->numel(), "'%s' does not read", name.c_str());
  }
  return 0;
}
