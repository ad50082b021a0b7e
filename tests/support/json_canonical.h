// The shared schemas' instances written as a generator writes them (tests of issue 21): compact,
// each object's members in the order its own schema lists them. Used by the byte-level suite
// (tests/unit/json_schema_test.cc) and the token-level one (tests/unit/json_schema_tokens_test.cc).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>

#include "engine/constraints/schema_algebra.h"
#include "nlohmann/json.hpp"

namespace gla::testing {

using ordered_json = nlohmann::ordered_json;

// Every object's members in the order its schema lists them: the order of first appearance of
// each property name anywhere in the schema (enough for these schemas; unknown names last).
inline void OrderMembers(ordered_json& v, const std::map<std::string, int>& order) {
  if (v.is_array()) {
    for (ordered_json& e : v) OrderMembers(e, order);
    return;
  }
  if (!v.is_object()) return;
  std::vector<std::pair<std::string, ordered_json>> members;
  for (auto it = v.begin(); it != v.end(); ++it) members.emplace_back(it.key(), it.value());
  std::stable_sort(members.begin(), members.end(), [&](const auto& a, const auto& b) {
    auto ra = order.find(a.first), rb = order.find(b.first);
    return (ra == order.end() ? 1 << 30 : ra->second) < (rb == order.end() ? 1 << 30 : rb->second);
  });
  ordered_json out = ordered_json::object();
  for (auto& [k, e] : members) {
    OrderMembers(e, order);
    out[k] = std::move(e);
  }
  v = std::move(out);
}

inline void PropertyOrder(const ordered_json& s, std::map<std::string, int>* order) {
  if (s.is_object()) {
    for (auto it = s.begin(); it != s.end(); ++it) {
      if (it.key() == "properties" && it->is_object())
        for (auto p = it->begin(); p != it->end(); ++p) order->emplace(p.key(), static_cast<int>(order->size()));
      PropertyOrder(it.value(), order);
    }
  } else if (s.is_array()) {
    for (const ordered_json& e : s) PropertyOrder(e, order);
  }
}

// The schema a $ref names (within the document), or the schema itself; null when it names nothing.
inline const ordered_json* Resolve(const ordered_json* s, const ordered_json& root) {
  for (int hops = 0; s != nullptr && s->is_object() && s->contains("$ref") && hops < 20; ++hops) {
    const ordered_json& ref = (*s)["$ref"];
    if (!ref.is_string() || ref.get<std::string>().rfind("#", 0) != 0) return nullptr;
    const std::string pointer = ref.get<std::string>().substr(1);
    try {
      s = pointer.empty() ? &root : &root.at(ordered_json::json_pointer(pointer));
    } catch (...) {
      return nullptr;
    }
  }
  return s;
}

// The instance's members in the order its own schema lists them (the generator's order), walking
// the instance with its schema through $ref, anyOf / oneOf (the branch that lists most of an
// object's names, or the first of the value's type), a single allOf, properties,
// additionalProperties and items. Where no schema says, the order of first appearance anywhere in
// the schema (`global`).
inline void Canonical(ordered_json& v, const ordered_json* s, const ordered_json& root, const std::map<std::string, int>& global) {
  s = Resolve(s, root);
  if (s == nullptr || !s->is_object()) {
    OrderMembers(v, global);
    return;
  }
  // A schema the compiler folds (allOf, a $ref or an alternation beside other keywords): its
  // members come in the folded schema's order (the branches' first, in their order).
  const bool folds = s->contains("allOf") || (s->contains("$ref") && s->size() > 1) ||
                     ((s->contains("anyOf") || s->contains("oneOf")) && s->size() > 1);
  if (folds) {
    constraints::SchemaAlgebra algebra(root);
    absl::StatusOr<ordered_json> folded = algebra.Normalize(*s, "#");
    if (folded.ok() && folded->is_object() && *folded != *s) {
      Canonical(v, &*folded, root, global);
      return;
    }
  }
  for (const char* comb : {"anyOf", "oneOf", "allOf"}) {
    if (!s->contains(comb) || !(*s)[comb].is_array() || (*s)[comb].empty()) continue;
    const ordered_json* best = &(*s)[comb][0];
    size_t best_score = 0;
    constraints::SchemaAlgebra algebra(root);
    for (const ordered_json& b : (*s)[comb]) {
      const ordered_json* r = Resolve(&b, root);
      if (r == nullptr || !r->is_object()) continue;
      // A branch the value is valid under first (its order is the one a generator following that
      // branch writes), then the one naming most of its members.
      const std::optional<bool> valid = algebra.Validate(v, b);
      size_t score = 1 + (valid.has_value() ? (*valid ? 1000000 : 0) : 500000);
      if (v.is_object() && r->contains("properties") && (*r)["properties"].is_object())
        for (auto it = v.begin(); it != v.end(); ++it) score += (*r)["properties"].contains(it.key()) ? 2 : 0;
      if (score > best_score) best = &b, best_score = score;
    }
    Canonical(v, best, root, global);
    return;
  }
  if (v.is_object()) {
    const ordered_json* props = s->contains("properties") && (*s)["properties"].is_object() ? &(*s)["properties"] : nullptr;
    const ordered_json* extra = s->contains("additionalProperties") && (*s)["additionalProperties"].is_object()
                            ? &(*s)["additionalProperties"]
                            : nullptr;
    if (s->contains("patternProperties") && (*s)["patternProperties"].is_object() && (*s)["patternProperties"].size() == 1)
      extra = &(*s)["patternProperties"].begin().value();  // the extra members a generator writes
    ordered_json out = ordered_json::object();
    if (props != nullptr)
      for (auto p = props->begin(); p != props->end(); ++p)
        if (v.contains(p.key())) {
          ordered_json member = v[p.key()];
          Canonical(member, &p.value(), root, global);
          out[p.key()] = std::move(member);
        }
    for (auto it = v.begin(); it != v.end(); ++it)
      if (props == nullptr || !props->contains(it.key())) {
        ordered_json member = it.value();
        Canonical(member, extra, root, global);
        out[it.key()] = std::move(member);
      }
    v = std::move(out);
  } else if (v.is_array()) {
    const ordered_json* tuple = s->contains("prefixItems") ? &(*s)["prefixItems"]
                        : s->contains("items") && (*s)["items"].is_array() ? &(*s)["items"]
                                                                            : nullptr;
    const ordered_json* each = s->contains("items") && !(*s)["items"].is_array() ? &(*s)["items"] : nullptr;
    for (size_t i = 0; i < v.size(); ++i)
      Canonical(v[i], tuple != nullptr && i < tuple->size() ? &(*tuple)[i] : each, root, global);
  }
}

}  // namespace gla::testing
