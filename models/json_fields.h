// Typed reads of one JSON object's fields, for the files a checkpoint or an adapter brings
// (config.json, adapter_config.json). Every error names the file and the field and quotes the
// value through Excerpt (bounded). Absent and null fields are the same (HF and PEFT write null for
// options left unset): reads leave *out as it was, refusals pass. Internal to models/.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace gla {

class JsonFields {
 public:
  using json = nlohmann::json;
  // Largest integer a size or width field may hold (Int's default bound).
  static constexpr int64_t kMaxDim = int64_t{1} << 30;

  // `j` and `source` (the file's name in errors) must outlive the reader.
  JsonFields(const json& j, const std::string& source) : j_(j), source_(source) {}

  absl::Status Error(absl::string_view field, absl::string_view what) const;
  const json* Get(absl::string_view field) const;  // null when absent or null
  // As Get; when absent sets *status to "is missing" (the first missing field wins).
  const json* Require(absl::string_view field, absl::Status* status) const;

  absl::Status Int(absl::string_view field, int* out, int64_t min_value, int64_t max_value = kMaxDim) const;
  absl::Status OptInt(absl::string_view field, std::optional<int>* out) const;  // >= 0
  absl::Status Double(absl::string_view field, double* out) const;              // finite
  absl::Status Bool(absl::string_view field, bool* out) const;
  absl::Status String(absl::string_view field, std::string* out) const;
  // A string or a list of strings.
  absl::Status Strings(absl::string_view field, std::vector<std::string>* out) const;
  // An integer or a list of integers, each in [0, kMaxDim].
  absl::Status Indices(absl::string_view field, std::vector<int>* out) const;

  // Options that change the computation in ways we do not implement: refused unless absent/null,
  // unless equal to `ok`, unless one of the strings `ok` (and present, when `required`), unless an
  // empty list or map.
  absl::Status RefuseUnlessNull(absl::string_view field) const;
  absl::Status RefuseUnlessBool(absl::string_view field, bool ok) const;
  absl::Status RefuseUnlessString(absl::string_view field, std::initializer_list<absl::string_view> ok,
                                  bool required = false) const;
  absl::Status RefuseUnlessEmpty(absl::string_view field) const;

 private:
  const json& j_;
  const std::string& source_;
};

}  // namespace gla
