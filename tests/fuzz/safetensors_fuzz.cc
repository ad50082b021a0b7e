// Fuzzes the safetensors reader (models/safetensors.h) over arbitrary bytes held in an exactly
// sized heap buffer, then reads every tensor it accepted through the conversions.
// Promise: Open() either refuses the bytes with a status or returns tensors that each lie wholly
// inside the data section and whose dtype x shape is their byte length; reading them never
// touches a byte outside the buffer (ASan would report it), and nothing is UB or leaks.
#include <cstddef>
#include <cstdint>
#include <string>

#include "models/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = gla::MappedFile::FromBytes("fuzz.safetensors", std::string(reinterpret_cast<const char*>(data), size));
  auto st = gla::SafetensorsFile::Open(file);
  if (!st.ok()) {
    GLA_FUZZ_CHECK(!st.status().message().empty(), "a refusal without a message");
    return 0;
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  const uint8_t* data_begin = file->data() + 8 + header_len;
  const uint8_t* data_end = file->data() + file->size();
  for (const gla::TensorView& t : st->tensors()) {
    GLA_FUZZ_CHECK(t.data >= data_begin && t.nbytes <= static_cast<size_t>(data_end - t.data),
                   "tensor '%s' lies outside the data section", t.name.c_str());
    GLA_FUZZ_CHECK(static_cast<uint64_t>(t.numel()) * gla::DTypeSize(t.dtype) == t.nbytes,
                   "tensor '%s': dtype x shape != its bytes", t.name.c_str());
    GLA_FUZZ_CHECK(st->Find(t.name) != nullptr, "tensor '%s' is not found by name", t.name.c_str());
    // Every byte through a conversion (the types that do not convert are refused with a status).
    auto f = gla::ToFloat32(t);
    auto i = gla::ToInt64(t);
    GLA_FUZZ_CHECK(!(f.ok() && i.ok()), "tensor '%s' converts both ways", t.name.c_str());
    if (f.ok()) GLA_FUZZ_CHECK(static_cast<int64_t>(f->size()) == t.numel(), "ToFloat32 size");
    if (i.ok()) GLA_FUZZ_CHECK(static_cast<int64_t>(i->size()) == t.numel(), "ToInt64 size");
    (void)t.ShapeString();
  }
  return 0;
}
