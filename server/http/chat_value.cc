#include "server/http/chat_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "models/status_macros.h"

namespace gla::chat {

const Value* Dict::Find(std::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

bool Truthy(const Value& x) {
  return std::visit(
      [](const auto& a) -> bool {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, Undefined> || std::is_same_v<T, None>) return false;
        else if constexpr (std::is_same_v<T, bool>) return a;
        else if constexpr (std::is_same_v<T, int64_t>) return a != 0;
        else if constexpr (std::is_same_v<T, double>) return a != 0.0;
        else if constexpr (std::is_same_v<T, std::string>) return !a.empty();
        else if constexpr (std::is_same_v<T, std::shared_ptr<const List>>) return !a->empty();
        else if constexpr (std::is_same_v<T, std::shared_ptr<const Dict>>) return !a->items.empty();
        else return true;
      },
      x.v);
}

std::string TypeName(const Value& x) {
  static constexpr const char* kNames[] = {"Undefined", "NoneType", "bool",      "int",      "float",
                                           "str",       "list",     "dict",      "Namespace", "function"};
  return kNames[x.v.index()];
}

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then Python's layout: fixed for exponents in [-4, 16).
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t e = sci.find('e');
  const int exp = std::atoi(sci.c_str() + e + 1);
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  if (exp >= -4 && exp < 16) {
    std::string out;
    if (exp < 0) {
      out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
      out = digits + std::string(static_cast<size_t>(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<size_t>(exp) + 1) + "." + digits.substr(static_cast<size_t>(exp) + 1);
    }
    return sign + out;
  }
  std::string mant = digits.substr(0, 1);
  if (digits.size() > 1) mant += "." + digits.substr(1);
  char ebuf[16];
  std::snprintf(ebuf, sizeof(ebuf), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return sign + mant + ebuf;
}

namespace {

absl::Status TooDeep() {
  return absl::ResourceExhaustedError(absl::StrCat("value nested deeper than ", kMaxValueDepth));
}

std::string ReprString(const std::string& s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\' || c == static_cast<unsigned char>(q)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof(b), "\\x%02x", c);
      out += b;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += q;
  return out;
}

absl::StatusOr<std::string> ReprAt(const Value& x, int depth);

absl::StatusOr<std::string> ReprItems(const Dict& d, int depth) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : d.items) {
    if (!first) out += ", ";
    first = false;
    ASSIGN_OR_RETURN(std::string r, ReprAt(v, depth + 1));
    absl::StrAppend(&out, ReprString(k), ": ", r);
  }
  return out + "}";
}

absl::StatusOr<std::string> ReprAt(const Value& x, int depth) {
  if (depth > kMaxValueDepth) return TooDeep();
  if (x.IsString()) return ReprString(x.AsString());
  if (x.IsUndefined()) return std::string("Undefined");
  if (x.IsList()) {
    std::string out = "[";
    bool first = true;
    for (const Value& e : x.AsList()) {
      if (!first) out += ", ";
      first = false;
      ASSIGN_OR_RETURN(std::string r, ReprAt(e, depth + 1));
      out += r;
    }
    return out + "]";
  }
  if (x.IsDict()) return ReprItems(x.AsDict(), depth);
  if (x.IsNamespace()) {
    ASSIGN_OR_RETURN(std::string r, ReprItems(std::get<std::shared_ptr<Namespace>>(x.v)->attrs, depth));
    return "<Namespace " + r + ">";
  }
  if (x.IsCallable()) return "<function " + std::get<Callable>(x.v).name + ">";
  if (x.IsNone()) return std::string("None");
  if (x.IsBool()) return std::string(std::get<bool>(x.v) ? "True" : "False");
  if (x.IsInt()) return std::to_string(std::get<int64_t>(x.v));
  return FloatRepr(std::get<double>(x.v));
}

void JsonString(const std::string& s, std::string* out) {
  *out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof(b), "\\u%04x", c);
          *out += b;
        } else {
          *out += static_cast<char>(c);
        }
    }
  }
  *out += '"';
}

absl::Status JsonAt(const Value& x, int indent, bool sort_keys, int depth, std::string* out) {
  if (depth > kMaxValueDepth) return TooDeep();
  // json.dumps' separators: (', ', ': ') without indent, (',', ': ') and a newline per item with.
  auto newline = [&](int level) {
    if (indent >= 0) {
      *out += '\n';
      out->append(static_cast<size_t>(indent) * static_cast<size_t>(level), ' ');
    }
  };
  const char* item_sep = indent >= 0 ? "," : ", ";
  if (x.IsString()) {
    JsonString(x.AsString(), out);
  } else if (x.IsNone()) {
    *out += "null";
  } else if (x.IsBool()) {
    *out += std::get<bool>(x.v) ? "true" : "false";
  } else if (x.IsInt()) {
    *out += std::to_string(std::get<int64_t>(x.v));
  } else if (x.IsFloat()) {
    const double d = std::get<double>(x.v);
    *out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : FloatRepr(d);
  } else if (x.IsList()) {
    const List& l = x.AsList();
    if (l.empty()) {
      *out += "[]";
      return absl::OkStatus();
    }
    *out += '[';
    for (size_t i = 0; i < l.size(); ++i) {
      if (i > 0) *out += item_sep;
      newline(depth + 1);
      RETURN_IF_ERROR(JsonAt(l[i], indent, sort_keys, depth + 1, out));
    }
    newline(depth);
    *out += ']';
  } else if (x.IsDict() || x.IsNamespace()) {
    const Dict& d = x.IsDict() ? x.AsDict() : std::get<std::shared_ptr<Namespace>>(x.v)->attrs;
    if (x.IsNamespace()) return absl::InvalidArgumentError("Object of type Namespace is not JSON serializable");
    if (d.items.empty()) {
      *out += "{}";
      return absl::OkStatus();
    }
    std::vector<const std::pair<std::string, Value>*> items;
    for (const auto& kv : d.items) items.push_back(&kv);
    if (sort_keys) {
      std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
    }
    *out += '{';
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) *out += item_sep;
      newline(depth + 1);
      JsonString(items[i]->first, out);
      *out += ": ";
      RETURN_IF_ERROR(JsonAt(items[i]->second, indent, sort_keys, depth + 1, out));
    }
    newline(depth);
    *out += '}';
  } else {
    return absl::InvalidArgumentError(absl::StrCat("Object of type ", TypeName(x), " is not JSON serializable"));
  }
  return absl::OkStatus();
}

// Python's numeric tower for bool/int/float comparisons.
bool IsNumeric(const Value& x) { return x.IsBool() || x.IsInt() || x.IsFloat(); }
double AsDouble(const Value& x) {
  if (x.IsBool()) return std::get<bool>(x.v) ? 1 : 0;
  if (x.IsInt()) return static_cast<double>(std::get<int64_t>(x.v));
  return std::get<double>(x.v);
}
int64_t AsIntOrBool(const Value& x) { return x.IsBool() ? (std::get<bool>(x.v) ? 1 : 0) : std::get<int64_t>(x.v); }

absl::StatusOr<bool> EqualsAt(const Value& a, const Value& b, int depth) {
  if (depth > kMaxValueDepth) return TooDeep();
  if (IsNumeric(a) && IsNumeric(b)) {
    if (!a.IsFloat() && !b.IsFloat()) return AsIntOrBool(a) == AsIntOrBool(b);
    return AsDouble(a) == AsDouble(b);
  }
  if (a.v.index() != b.v.index()) return false;
  if (a.IsUndefined() || a.IsNone()) return true;
  if (a.IsString()) return a.AsString() == b.AsString();
  if (a.IsList()) {
    const List &x = a.AsList(), &y = b.AsList();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i) {
      ASSIGN_OR_RETURN(bool eq, EqualsAt(x[i], y[i], depth + 1));
      if (!eq) return false;
    }
    return true;
  }
  if (a.IsDict()) {
    const Dict &x = a.AsDict(), &y = b.AsDict();
    if (x.items.size() != y.items.size()) return false;
    for (const auto& [k, v] : x.items) {
      const Value* w = y.Find(k);
      if (w == nullptr) return false;
      ASSIGN_OR_RETURN(bool eq, EqualsAt(v, *w, depth + 1));
      if (!eq) return false;
    }
    return true;
  }
  if (a.IsNamespace()) return std::get<std::shared_ptr<Namespace>>(a.v) == std::get<std::shared_ptr<Namespace>>(b.v);
  return std::get<Callable>(a.v).name == std::get<Callable>(b.v).name;
}

absl::StatusOr<bool> LessAt(const Value& a, const Value& b, int depth) {
  if (depth > kMaxValueDepth) return TooDeep();
  if (IsNumeric(a) && IsNumeric(b)) {
    if (!a.IsFloat() && !b.IsFloat()) return AsIntOrBool(a) < AsIntOrBool(b);
    return AsDouble(a) < AsDouble(b);
  }
  if (a.IsString() && b.IsString()) return a.AsString() < b.AsString();
  if (a.IsList() && b.IsList()) {
    const List &x = a.AsList(), &y = b.AsList();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      ASSIGN_OR_RETURN(bool eq, EqualsAt(x[i], y[i], depth + 1));
      if (!eq) return LessAt(x[i], y[i], depth + 1);
    }
    return x.size() < y.size();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'<' not supported between instances of '", TypeName(a), "' and '", TypeName(b), "'"));
}

}  // namespace

absl::StatusOr<std::string> ToStr(const Value& x) {
  if (x.IsString()) return x.AsString();
  if (x.IsUndefined()) return std::string();
  return ReprAt(x, 0);
}

absl::StatusOr<std::string> Repr(const Value& x) { return ReprAt(x, 0); }

absl::StatusOr<std::string> ToJson(const Value& x, int indent, bool sort_keys) {
  std::string out;
  RETURN_IF_ERROR(JsonAt(x, indent, sort_keys, 0, &out));
  return out;
}

absl::StatusOr<bool> Equals(const Value& a, const Value& b) { return EqualsAt(a, b, 0); }
absl::StatusOr<bool> Less(const Value& a, const Value& b) { return LessAt(a, b, 0); }

}  // namespace gla::chat
