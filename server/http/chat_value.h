// The values a chat template computes with: Python's types as jinja2 sees them (None, bool, int,
// float, str, list, dict), jinja2's Undefined, the mutable namespace(), and callables (the
// template's globals and its macros). Lists and dicts are immutable once built, as in
// ImmutableSandboxedEnvironment, so they are shared; a namespace is the one mutable object.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace gla::chat {

struct Value;
struct MacroNode;  // chat_ast.h

// jinja2's default Undefined: renders as "", is falsy and iterates as empty; any other use (an
// attribute, an operator, a call) is an error naming what was missing.
struct Undefined {
  std::string hint;  // "'x' is undefined", "'dict object' has no attribute 'x'"
};
struct None {};
using List = std::vector<Value>;
// A dict keeps insertion order (Python's) and, as the templates need, string keys only.
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  const Value* Find(std::string_view key) const;
};
struct Namespace {
  Dict attrs;
};
// A global function (by name) or a macro of the template.
struct Callable {
  std::string name;
  const MacroNode* macro = nullptr;  // null for built-in globals
};

struct Value {
  using Storage = std::variant<Undefined, None, bool, int64_t, double, std::string, std::shared_ptr<const List>,
                               std::shared_ptr<const Dict>, std::shared_ptr<Namespace>, Callable>;
  Storage v;

  Value() : v(Undefined{}) {}
  static Value MakeUndefined(std::string hint) { return Value(Storage(Undefined{std::move(hint)})); }
  static Value MakeNone() { return Value(Storage(None{})); }
  static Value Bool(bool b) { return Value(Storage(b)); }
  static Value Int(int64_t i) { return Value(Storage(i)); }
  static Value Float(double d) { return Value(Storage(d)); }
  static Value Str(std::string s) { return Value(Storage(std::move(s))); }
  static Value MakeList(List l) { return Value(Storage(std::make_shared<const List>(std::move(l)))); }
  static Value MakeDict(Dict d) { return Value(Storage(std::make_shared<const Dict>(std::move(d)))); }

  bool IsUndefined() const { return std::holds_alternative<Undefined>(v); }
  bool IsNone() const { return std::holds_alternative<None>(v); }
  bool IsBool() const { return std::holds_alternative<bool>(v); }
  bool IsInt() const { return std::holds_alternative<int64_t>(v); }
  bool IsFloat() const { return std::holds_alternative<double>(v); }
  bool IsNumber() const { return IsInt() || IsFloat(); }  // Python's bool is a number too: see IsNumberTest
  bool IsString() const { return std::holds_alternative<std::string>(v); }
  bool IsList() const { return std::holds_alternative<std::shared_ptr<const List>>(v); }
  bool IsDict() const { return std::holds_alternative<std::shared_ptr<const Dict>>(v); }
  bool IsNamespace() const { return std::holds_alternative<std::shared_ptr<Namespace>>(v); }
  bool IsCallable() const { return std::holds_alternative<Callable>(v); }

  const std::string& AsString() const { return std::get<std::string>(v); }
  const List& AsList() const { return *std::get<std::shared_ptr<const List>>(v); }
  const Dict& AsDict() const { return *std::get<std::shared_ptr<const Dict>>(v); }
  const std::string& UndefinedHint() const { return std::get<Undefined>(v).hint; }

  explicit Value(Storage s) : v(std::move(s)) {}
};

// Python's truth value (Undefined is false, a namespace true).
bool Truthy(const Value& x);
// Python's type name, for errors ("str", "int", "dict", ...).
std::string TypeName(const Value& x);

// Values nest only as deep as a template builds them, but a namespace may hold itself: every
// walk over a value (printing, JSON, equality) stops at this depth with an error.
inline constexpr int kMaxValueDepth = 64;

// str(x) as jinja2 prints {{ x }}: strings as they are, None as "None", True/False, floats as
// Python's repr, lists and dicts as Python's repr.
absl::StatusOr<std::string> ToStr(const Value& x);
// Python's repr(x) ("'a'" for a string).
absl::StatusOr<std::string> Repr(const Value& x);
// json.dumps(x, ensure_ascii=False, indent=indent) as transformers' tojson filter calls it
// (indent < 0: none; sort_keys as given).
absl::StatusOr<std::string> ToJson(const Value& x, int indent, bool sort_keys);
// Python's ==, with 1 == 1.0 and True == 1.
absl::StatusOr<bool> Equals(const Value& a, const Value& b);
// Python's <: numbers with numbers, strings with strings (code point order = UTF-8 byte order),
// lists element-wise; anything else is a TypeError.
absl::StatusOr<bool> Less(const Value& a, const Value& b);

// Python's float repr (shortest round trip; "1.0", "1e+16", "inf", "nan").
std::string FloatRepr(double d);

}  // namespace gla::chat
