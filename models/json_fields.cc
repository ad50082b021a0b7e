#include "models/json_fields.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/excerpt.h"
#include "models/status_macros.h"

namespace gla {

absl::Status JsonFields::Error(absl::string_view field, absl::string_view what) const {
  return absl::InvalidArgumentError(absl::StrCat(source_, ": field '", field, "' ", what));
}

const JsonFields::json* JsonFields::Get(absl::string_view field) const {
  auto it = j_.find(std::string(field));
  return (it == j_.end() || it->is_null()) ? nullptr : &*it;
}

const JsonFields::json* JsonFields::Require(absl::string_view field, absl::Status* status) const {
  const json* v = Get(field);
  if (v == nullptr && status->ok()) *status = Error(field, "is missing");
  return v;
}

absl::Status JsonFields::Int(absl::string_view field, int* out, int64_t min_value, int64_t max_value) const {
  const json* v = Get(field);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number_integer()) return Error(field, "must be an integer");
  const int64_t x = v->get<int64_t>();
  if (x < min_value || x > max_value) return Error(field, absl::StrCat("= ", x, " is out of range"));
  *out = static_cast<int>(x);
  return absl::OkStatus();
}

absl::Status JsonFields::OptInt(absl::string_view field, std::optional<int>* out) const {
  if (Get(field) == nullptr) return absl::OkStatus();
  int x = 0;
  RETURN_IF_ERROR(Int(field, &x, 0));
  *out = x;
  return absl::OkStatus();
}

absl::Status JsonFields::Double(absl::string_view field, double* out) const {
  const json* v = Get(field);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number()) return Error(field, "must be a number");
  const double x = v->get<double>();
  if (!std::isfinite(x)) return Error(field, "must be finite");
  *out = x;
  return absl::OkStatus();
}

absl::Status JsonFields::Bool(absl::string_view field, bool* out) const {
  const json* v = Get(field);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) return Error(field, "must be true or false");
  *out = v->get<bool>();
  return absl::OkStatus();
}

absl::Status JsonFields::String(absl::string_view field, std::string* out) const {
  const json* v = Get(field);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_string()) return Error(field, "must be a string");
  *out = v->get<std::string>();
  return absl::OkStatus();
}

absl::Status JsonFields::Strings(absl::string_view field, std::vector<std::string>* out) const {
  const json* v = Get(field);
  if (v == nullptr) return absl::OkStatus();
  if (v->is_string()) {
    out->push_back(v->get<std::string>());
    return absl::OkStatus();
  }
  if (!v->is_array()) return Error(field, "must be a string or a list of strings");
  for (const json& e : *v) {
    if (!e.is_string()) return Error(field, "must be a string or a list of strings");
    out->push_back(e.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status JsonFields::Indices(absl::string_view field, std::vector<int>* out) const {
  const json* v = Get(field);
  if (v == nullptr) return absl::OkStatus();
  const std::vector<json> items = v->is_array() ? v->get<std::vector<json>>() : std::vector<json>{*v};
  for (const json& e : items) {
    if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > kMaxDim)
      return Error(field, "must be a non-negative integer or a list of them");
    out->push_back(e.get<int>());
  }
  return absl::OkStatus();
}

absl::Status JsonFields::RefuseUnlessNull(absl::string_view field) const {
  if (const json* v = Get(field))
    return Error(field, absl::StrCat("= ", Excerpt(v->dump()), " is not supported (only null)"));
  return absl::OkStatus();
}

absl::Status JsonFields::RefuseUnlessBool(absl::string_view field, bool ok) const {
  bool v = ok;
  RETURN_IF_ERROR(Bool(field, &v));
  if (v != ok) return Error(field, absl::StrCat("= ", v ? "true" : "false", " is not supported"));
  return absl::OkStatus();
}

absl::Status JsonFields::RefuseUnlessString(absl::string_view field, std::initializer_list<absl::string_view> ok,
                                            bool required) const {
  const json* v = Get(field);
  if (v == nullptr) return required ? Error(field, "is missing") : absl::OkStatus();
  for (absl::string_view s : ok)
    if (v->is_string() && v->get<std::string>() == s) return absl::OkStatus();
  return Error(field,
               absl::StrCat("= ", Excerpt(v->dump()), " is not supported (only \"", absl::StrJoin(ok, "\", \""), "\")"));
}

absl::Status JsonFields::RefuseUnlessEmpty(absl::string_view field) const {
  const json* v = Get(field);
  if (v == nullptr || ((v->is_array() || v->is_object()) && v->empty())) return absl::OkStatus();
  return Error(field, absl::StrCat("= ", Excerpt(v->dump()), " is not supported (only empty or null)"));
}

}  // namespace gla
