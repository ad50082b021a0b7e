#include "models/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/excerpt.h"
#include "models/file_io.h"
#include "models/status_macros.h"
#include "nlohmann/json.hpp"

namespace gla {

using json = nlohmann::json;

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::ShapeString() const { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

namespace {

absl::Status Corrupt(const std::string& path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": corrupt safetensors: ", what));
}

// Parses the header JSON, refusing duplicate top-level names (nlohmann would keep the last).
absl::StatusOr<json> ParseHeaderJson(const std::string& path, absl::string_view text) {
  std::set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && parsed.is_string()) {
      if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty())
        duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json header = json::parse(text.begin(), text.end(), on_event, /*allow_exceptions=*/false);
  if (header.is_discarded()) return Corrupt(path, "header is not valid JSON");
  if (!duplicate.empty()) return Corrupt(path, absl::StrCat("duplicate tensor name '", Excerpt(duplicate), "'"));
  if (!header.is_object()) return Corrupt(path, "header is not a JSON object");
  return header;
}

bool GetU64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::shared_ptr<const MappedFile> file, MappedFile::Open(path));
  return Open(std::move(file));
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(std::shared_ptr<const MappedFile> file) {
  SafetensorsFile f;
  f.file_ = std::move(file);
  const std::string& path = f.file_->path();
  const size_t size = f.file_->size();
  const uint8_t* base = f.file_->data();
  if (size < 8) return Corrupt(path, absl::StrCat("file is ", size, " bytes, shorter than the 8-byte header length"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  if (header_len > kMaxSafetensorsHeaderBytes)
    return Corrupt(path, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                      kMaxSafetensorsHeaderBytes));
  if (header_len > size - 8)
    return Corrupt(path, absl::StrCat("header length ", header_len, " runs past the end of the ",
                                      size, "-byte file"));
  // Writers pad the header with spaces so that the data section starts 8-byte aligned; a length
  // that is not a multiple of 8 is a cut or a foreign layout, and every tensor would be read off.
  if (header_len % 8 != 0)
    return Corrupt(path, absl::StrCat("header length ", header_len,
                                      " is not a multiple of 8 (the data section must start 8-byte aligned)"));
  const absl::string_view text(reinterpret_cast<const char*>(base + 8), header_len);
  ASSIGN_OR_RETURN(json header, ParseHeaderJson(path, text));

  const uint8_t* data_start = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return Corrupt(path, "__metadata__ is not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          return Corrupt(path, absl::StrCat("__metadata__ value '", Excerpt(m.key()), "' is not a string"));
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", Excerpt(name), "'");
    if (!entry.is_object()) return Corrupt(path, absl::StrCat(where, " is not an object"));
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string()) return Corrupt(path, absl::StrCat(where, " has no string dtype"));
    if (sh == entry.end() || !sh->is_array()) return Corrupt(path, absl::StrCat(where, " has no shape array"));
    if (off == entry.end() || !off->is_array() || off->size() != 2)
      return Corrupt(path, absl::StrCat(where, " has no [begin, end] data_offsets"));
    TensorView t;
    t.name = name;
    t.file = path;
    auto dtype = ParseDType(dt->get<std::string>());
    if (!dtype) return Corrupt(path, absl::StrCat(where, " has unknown dtype '", Excerpt(dt->get<std::string>()), "'"));
    t.dtype = *dtype;
    uint64_t numel = 1;
    for (const json& d : *sh) {
      uint64_t dim;
      if (!GetU64(d, &dim)) return Corrupt(path, absl::StrCat(where, " has a shape entry that is not a non-negative integer"));
      // Every partial product fits int64 too: TensorView::numel() multiplies in that order.
      if (dim > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel) ||
          numel > static_cast<uint64_t>(INT64_MAX))
        return Corrupt(path, absl::StrCat(where, " has a shape whose size overflows"));
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t begin, end, nbytes;
    if (!GetU64((*off)[0], &begin) || !GetU64((*off)[1], &end) || begin > end)
      return Corrupt(path, absl::StrCat(where, " has invalid data_offsets"));
    if (end > data_size)
      return Corrupt(path, absl::StrCat(where, " data_offsets [", begin, ", ", end,
                                        "] run past the end of the data section (", data_size, " bytes)"));
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(DTypeSize(t.dtype)), &nbytes) ||
        nbytes != end - begin)
      return Corrupt(path, absl::StrCat(where, ": dtype ", DTypeName(t.dtype), " x shape ", t.ShapeString(),
                                        " does not match its ", end - begin, " bytes"));
    t.data = data_start + begin;
    t.nbytes = static_cast<size_t>(nbytes);
    ranges.push_back({begin, end, f.tensors_.size()});
    f.tensors_.push_back(std::move(t));
  }
  // The tensors tile the data section exactly: from 0, each where the last ended, the last at its
  // end. A header length that is off (a cut inside the header's padding still parses) or a file
  // with bytes nobody owns is refused instead of being read a few bytes off.
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t covered = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (ranges[i].begin < covered)
      return Corrupt(path, absl::StrCat("tensors '", Excerpt(f.tensors_[ranges[i - 1].index].name), "' and '",
                                        Excerpt(f.tensors_[ranges[i].index].name), "' overlap"));
    if (ranges[i].begin > covered)
      return Corrupt(path, absl::StrCat("bytes [", covered, ", ", ranges[i].begin, ") of the data section belong to no tensor (before '",
                                        Excerpt(f.tensors_[ranges[i].index].name), "')"));
    covered = ranges[i].end;
  }
  if (covered != data_size)
    return Corrupt(path, absl::StrCat("the tensors cover ", covered, " bytes of the ", data_size,
                                      "-byte data section (header length or file size is off)"));
  return f;
}

const TensorView* SafetensorsFile::Find(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

namespace {
template <typename Out, typename In>
void Convert(const uint8_t* src, size_t n, Out* dst) {
  for (size_t i = 0; i < n; ++i) {
    In v;
    std::memcpy(&v, src + i * sizeof(In), sizeof(In));
    dst[i] = static_cast<Out>(v);
  }
}

template <typename Out>
absl::StatusOr<std::vector<Out>> ToFloating(const TensorView& t) {
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<Out> out(n);
  switch (t.dtype) {
    case DType::kF32: Convert<Out, float>(t.data, n, out.data()); break;
    case DType::kF64: Convert<Out, double>(t.data, n, out.data()); break;
    case DType::kF8E4M3:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<Out>(Float8E4M3ToFloat(t.data[i]));
      break;
    case DType::kF16:
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = static_cast<Out>(t.dtype == DType::kF16 ? HalfToFloat(h) : BFloat16ToFloat(h));
      }
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", t.name, "' has dtype ",
                                                     DTypeName(t.dtype), ", expected a floating-point type"));
  }
  return out;
}
}  // namespace

absl::StatusOr<std::vector<float>> ToFloat32(const TensorView& t) { return ToFloating<float>(t); }
absl::StatusOr<std::vector<double>> ToFloat64(const TensorView& t) { return ToFloating<double>(t); }

absl::StatusOr<std::vector<int64_t>> ToInt64(const TensorView& t) {
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<int64_t> out(n);
  switch (t.dtype) {
    case DType::kI64: Convert<int64_t, int64_t>(t.data, n, out.data()); break;
    case DType::kI32: Convert<int64_t, int32_t>(t.data, n, out.data()); break;
    case DType::kI16: Convert<int64_t, int16_t>(t.data, n, out.data()); break;
    case DType::kI8: Convert<int64_t, int8_t>(t.data, n, out.data()); break;
    case DType::kU8: Convert<int64_t, uint8_t>(t.data, n, out.data()); break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", t.name, "' has dtype ",
                                                     DTypeName(t.dtype), ", expected an integer type"));
  }
  return out;
}

TensorToWrite F32Tensor(std::string name, std::vector<int64_t> shape, std::span<const float> v) {
  return {std::move(name), DType::kF32, std::move(shape),
          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size_bytes())};
}

absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__" || !names.insert(t.name).second)
      return absl::InvalidArgumentError(absl::StrCat(path, ": duplicate or reserved tensor name '", t.name, "'"));
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' has a negative dim"));
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * DTypeSize(t.dtype) != t.bytes.size())
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' has ", t.bytes.size(),
                                                     " bytes, its dtype x shape needs ", numel * DTypeSize(t.dtype)));
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  std::vector<std::span<const uint8_t>> parts = {{len, 8},
                                                  {reinterpret_cast<const uint8_t*>(text.data()), text.size()}};
  for (const auto& t : tensors) parts.push_back(t.bytes);
  // Temp file, fsync, rename, directory fsync: a trained adapter or checkpoint survives a crash.
  return WriteFileAtomically(path, parts);
}

}  // namespace gla
