#include "server/http/chat_builtins.h"

#include <cmath>
#include <ctime>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "models/status_macros.h"

namespace gla::chat {
namespace {

// jinja2.sandbox.MAX_RANGE: the sandbox refuses larger ranges.
constexpr int64_t kMaxRange = 100000;

absl::Status TypeError(std::string_view what) { return absl::InvalidArgumentError(std::string(what)); }

bool IsAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
char Upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }
char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string UpperStr(std::string s) {
  for (char& c : s) c = Upper(c);
  return s;
}
std::string LowerStr(std::string s) {
  for (char& c : s) c = Lower(c);
  return s;
}
std::string Capitalize(const std::string& s) {
  std::string out = LowerStr(s);
  if (!out.empty()) out[0] = Upper(out[0]);
  return out;
}

// str.strip family: `chars` null strips whitespace; otherwise any of its code points.
std::string Strip(const std::string& s, const std::string* chars, bool left, bool right) {
  const auto cps = CodePoints(s);
  std::vector<std::string_view> set;
  if (chars != nullptr) set = CodePoints(*chars);
  auto strippable = [&](std::string_view cp) {
    if (chars == nullptr) return cp.size() == 1 && IsAsciiSpace(cp[0]);
    for (std::string_view c : set) {
      if (c == cp) return true;
    }
    return false;
  };
  size_t lo = 0, hi = cps.size();
  if (left) {
    while (lo < hi && strippable(cps[lo])) ++lo;
  }
  if (right) {
    while (hi > lo && strippable(cps[hi - 1])) --hi;
  }
  std::string out;
  for (size_t i = lo; i < hi; ++i) out += cps[i];
  return out;
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` around every code point
    int64_t n = 0;
    for (std::string_view cp : CodePoints(s)) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      out += cp;
    }
    if (count < 0 || n < count) out += to;
    return out;
  }
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
    ++n;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

// Python's str.split(sep=None, maxsplit=-1).
List Split(const std::string& s, const std::string* sep, int64_t maxsplit) {
  List out;
  if (sep == nullptr) {
    size_t i = 0;
    while (true) {
      while (i < s.size() && IsAsciiSpace(s[i])) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
        size_t end = s.size();
        while (end > i && IsAsciiSpace(s[end - 1])) --end;
        out.push_back(Value::Str(s.substr(i, end - i)));
        break;
      }
      size_t j = i;
      while (j < s.size() && !IsAsciiSpace(s[j])) ++j;
      out.push_back(Value::Str(s.substr(i, j - i)));
      i = j;
    }
    return out;
  }
  size_t pos = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    const size_t hit = s.find(*sep, pos);
    if (hit == std::string::npos) break;
    out.push_back(Value::Str(s.substr(pos, hit - pos)));
    pos = hit + sep->size();
  }
  out.push_back(Value::Str(s.substr(pos)));
  return out;
}

// Arguments by position or keyword, as Python binds them.
class Params {
 public:
  Params(std::string_view fn, const Args& args, const Kwargs& kwargs, std::vector<std::string_view> names)
      : fn_(fn), args_(args), kwargs_(kwargs), names_(std::move(names)) {}
  absl::Status Check() const {
    if (args_.size() > names_.size()) {
      return TypeError(absl::StrCat(std::string(fn_), "() takes at most ", names_.size(), " argument(s), got ", args_.size()));
    }
    for (const auto& [k, v] : kwargs_) {
      bool known = false;
      for (std::string_view n : names_) known = known || n == k;
      if (!known) return TypeError(absl::StrCat(std::string(fn_), "() got an unexpected keyword argument '", k, "'"));
    }
    return absl::OkStatus();
  }
  const Value* Get(size_t i) const {
    for (const auto& [k, v] : kwargs_) {
      if (k == names_[i]) return &v;
    }
    return i < args_.size() ? &args_[i] : nullptr;
  }
  absl::StatusOr<const std::string*> Str(size_t i, bool required) const {
    const Value* v = Get(i);
    if (v == nullptr || (!required && v->IsNone())) {
      if (required) return TypeError(absl::StrCat(std::string(fn_), "() missing argument '", std::string(names_[i]), "'"));
      return nullptr;
    }
    if (!v->IsString()) return TypeError(absl::StrCat(std::string(fn_), "() argument '", std::string(names_[i]), "' must be a string"));
    return &v->AsString();
  }
  absl::StatusOr<int64_t> Int(size_t i, int64_t def) const {
    const Value* v = Get(i);
    if (v == nullptr || v->IsNone()) return def;
    if (v->IsBool()) return std::get<bool>(v->v) ? 1 : 0;
    if (!v->IsInt()) return TypeError(absl::StrCat(std::string(fn_), "() argument '", std::string(names_[i]), "' must be an integer"));
    return std::get<int64_t>(v->v);
  }
  bool Bool(size_t i, bool def) const {
    const Value* v = Get(i);
    return v == nullptr ? def : Truthy(*v);
  }

 private:
  std::string_view fn_;
  const Args& args_;
  const Kwargs& kwargs_;
  std::vector<std::string_view> names_;
};

absl::StatusOr<Value> Attribute(const Value& x, const std::string& path) {
  // jinja2's attribute="a.b" walks dots; a missing key is Undefined.
  Value cur = x;
  size_t pos = 0;
  while (pos <= path.size()) {
    const size_t dot = path.find('.', pos);
    const std::string key = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    const Value* next = nullptr;
    if (cur.IsDict()) next = cur.AsDict().Find(key);
    if (cur.IsNamespace()) next = std::get<std::shared_ptr<Namespace>>(cur.v)->attrs.Find(key);
    if (cur.IsUndefined()) return TypeError(cur.UndefinedHint());
    if (next == nullptr) return Value::MakeUndefined(absl::StrCat("no attribute '", key, "'"));
    cur = *next;
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return cur;
}

absl::StatusOr<int64_t> Length(const Value& x) {
  if (x.IsString()) return static_cast<int64_t>(CodePoints(x.AsString()).size());
  if (x.IsList()) return static_cast<int64_t>(x.AsList().size());
  if (x.IsDict()) return static_cast<int64_t>(x.AsDict().items.size());
  if (x.IsUndefined()) return 0;
  return TypeError(absl::StrCat("object of type '", TypeName(x), "' has no len()"));
}

// select/reject and selectattr/rejectattr: `attr` null for the former.
absl::StatusOr<Value> SelectOrReject(const Value& seq, const Args& args, bool by_attr, bool select) {
  ASSIGN_OR_RETURN(List items, Iterate(seq));
  size_t next = 0;
  std::string attr;
  if (by_attr) {
    if (args.empty() || !args[0].IsString()) return TypeError("selectattr/rejectattr need an attribute name");
    attr = args[0].AsString();
    next = 1;
  }
  std::string test;
  if (next < args.size()) {
    if (!args[next].IsString()) return TypeError("the test name must be a string");
    test = args[next].AsString();
    ++next;
  }
  const Args test_args(args.begin() + static_cast<std::ptrdiff_t>(next), args.end());
  List out;
  for (const Value& item : items) {
    Value subject = item;
    if (by_attr) {
      ASSIGN_OR_RETURN(subject, Attribute(item, attr));
    }
    bool pass = Truthy(subject);
    if (!test.empty()) {
      ASSIGN_OR_RETURN(pass, ApplyTest(test, subject, test_args));
    }
    if (pass == select) out.push_back(item);
  }
  return Value::MakeList(std::move(out));
}

}  // namespace

std::vector<std::string_view> CodePoints(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    if (i + n > s.size()) n = 1;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) n = 1;
    }
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

absl::StatusOr<List> Iterate(const Value& v) {
  if (v.IsList()) return v.AsList();
  if (v.IsUndefined()) return List{};
  if (v.IsDict()) {
    List keys;
    for (const auto& [k, x] : v.AsDict().items) keys.push_back(Value::Str(k));
    return keys;
  }
  if (v.IsString()) {
    List chars;
    for (std::string_view cp : CodePoints(v.AsString())) chars.push_back(Value::Str(std::string(cp)));
    return chars;
  }
  return TypeError(absl::StrCat("'", TypeName(v), "' object is not iterable"));
}

absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& x, const Args& args) {
  auto arg = [&]() -> absl::StatusOr<Value> {
    if (args.size() != 1) return TypeError(absl::StrCat("test '", std::string(name), "' takes one argument"));
    return args[0];
  };
  if (name == "defined") return !x.IsUndefined();
  if (name == "undefined") return x.IsUndefined();
  if (name == "none") return x.IsNone();
  if (name == "string") return x.IsString();
  if (name == "mapping") return x.IsDict();
  // Undefined iterates (as empty) and has a length in jinja2, so it is iterable and a sequence.
  if (name == "iterable") return x.IsString() || x.IsList() || x.IsDict() || x.IsUndefined();
  if (name == "sequence") return x.IsString() || x.IsList() || x.IsDict() || x.IsUndefined();
  if (name == "number") return x.IsBool() || x.IsInt() || x.IsFloat();
  if (name == "integer") return x.IsInt();
  if (name == "float") return x.IsFloat();
  if (name == "boolean") return x.IsBool();
  if (name == "true") return x.IsBool() && std::get<bool>(x.v);
  if (name == "false") return x.IsBool() && !std::get<bool>(x.v);
  if (name == "callable") return x.IsCallable();
  if (name == "lower" || name == "upper") {
    if (!x.IsString()) return false;
    const std::string& s = x.AsString();
    return s == (name == "lower" ? LowerStr(s) : UpperStr(s));
  }
  if (name == "odd" || name == "even") {
    if (!x.IsInt()) return TypeError(absl::StrCat("test '", std::string(name), "' needs an integer"));
    return (std::get<int64_t>(x.v) % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    ASSIGN_OR_RETURN(Value d, arg());
    if (!x.IsInt() || !d.IsInt() || std::get<int64_t>(d.v) == 0) return TypeError("divisibleby needs non-zero integers");
    return std::get<int64_t>(x.v) % std::get<int64_t>(d.v) == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==" || name == "sameas") {
    ASSIGN_OR_RETURN(Value y, arg());
    if (name == "sameas" && x.v.index() != y.v.index()) return false;
    return Equals(x, y);
  }
  if (name == "ne" || name == "!=") {
    ASSIGN_OR_RETURN(Value y, arg());
    ASSIGN_OR_RETURN(bool eq, Equals(x, y));
    return !eq;
  }
  if (name == "lt" || name == "lessthan" || name == "<") {
    ASSIGN_OR_RETURN(Value y, arg());
    return Less(x, y);
  }
  if (name == "gt" || name == "greaterthan" || name == ">") {
    ASSIGN_OR_RETURN(Value y, arg());
    return Less(y, x);
  }
  if (name == "le" || name == "<=") {
    ASSIGN_OR_RETURN(Value y, arg());
    ASSIGN_OR_RETURN(bool gt, Less(y, x));
    return !gt;
  }
  if (name == "ge" || name == ">=") {
    ASSIGN_OR_RETURN(Value y, arg());
    ASSIGN_OR_RETURN(bool lt, Less(x, y));
    return !lt;
  }
  if (name == "in") {
    ASSIGN_OR_RETURN(Value y, arg());
    if (y.IsString()) return x.IsString() && y.AsString().find(x.AsString()) != std::string::npos;
    ASSIGN_OR_RETURN(List items, Iterate(y));
    for (const Value& item : items) {
      ASSIGN_OR_RETURN(bool eq, Equals(x, item));
      if (eq) return true;
    }
    return false;
  }
  return TypeError(absl::StrCat("no test named '", std::string(name), "'"));
}

absl::StatusOr<Value> ApplyFilter(Evaluator& ev, std::string_view name, const Value& x, const Args& args,
                                  const Kwargs& kwargs) {
  auto str = [&]() { return ToStr(x); };
  if (name == "trim") {
    Params p("trim", args, kwargs, {"chars"});
    RETURN_IF_ERROR(p.Check());
    ASSIGN_OR_RETURN(const std::string* chars, p.Str(0, false));
    ASSIGN_OR_RETURN(std::string s, str());
    return Value::Str(Strip(s, chars, true, true));
  }
  if (name == "length" || name == "count") {
    ASSIGN_OR_RETURN(int64_t n, Length(x));
    return Value::Int(n);
  }
  if (name == "upper" || name == "lower" || name == "capitalize" || name == "title" || name == "string" ||
      name == "safe") {
    ASSIGN_OR_RETURN(std::string s, str());
    if (name == "upper") return Value::Str(UpperStr(s));
    if (name == "lower") return Value::Str(LowerStr(s));
    if (name == "capitalize") return Value::Str(Capitalize(s));
    if (name == "title") {  // jinja2: each word after - ( { [ < or whitespace, capitalized
      std::string out;
      bool start = true;
      for (char c : s) {
        const bool sep = IsAsciiSpace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
        out += sep ? c : start ? Upper(c) : Lower(c);
        start = sep;
      }
      return Value::Str(std::move(out));
    }
    return Value::Str(std::move(s));
  }
  if (name == "default" || name == "d") {
    Params p("default", args, kwargs, {"default_value", "boolean"});
    RETURN_IF_ERROR(p.Check());
    const Value* def = p.Get(0);
    if (x.IsUndefined() || (p.Bool(1, false) && !Truthy(x))) return def != nullptr ? *def : Value::Str("");
    return x;
  }
  if (name == "tojson") {
    Params p("tojson", args, kwargs, {"ensure_ascii", "indent", "separators", "sort_keys"});
    RETURN_IF_ERROR(p.Check());
    if (p.Bool(0, false)) return TypeError("tojson(ensure_ascii=True) is not supported");
    if (p.Get(2) != nullptr && !p.Get(2)->IsNone()) return TypeError("tojson(separators=...) is not supported");
    ASSIGN_OR_RETURN(int64_t indent, p.Int(1, -1));
    if (indent > 64) return TypeError("tojson indent over 64");
    ASSIGN_OR_RETURN(std::string j, ToJson(x, static_cast<int>(indent), p.Bool(3, false)));
    return Value::Str(std::move(j));
  }
  if (name == "first" || name == "last") {
    ASSIGN_OR_RETURN(List items, Iterate(x));
    if (items.empty()) return Value::MakeUndefined(absl::StrCat("No ", std::string(name), " item, sequence was empty."));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    Params p("join", args, kwargs, {"d", "attribute"});
    RETURN_IF_ERROR(p.Check());
    ASSIGN_OR_RETURN(const std::string* sep, p.Str(0, false));
    ASSIGN_OR_RETURN(const std::string* attr, p.Str(1, false));
    ASSIGN_OR_RETURN(List items, Iterate(x));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      Value item = items[i];
      if (attr != nullptr) {
        ASSIGN_OR_RETURN(item, Attribute(item, *attr));
      }
      ASSIGN_OR_RETURN(std::string s, ToStr(item));
      if (i > 0 && sep != nullptr) out += *sep;
      out += s;
      if (static_cast<int64_t>(out.size()) > ev.limits().max_output_bytes) {
        return absl::ResourceExhaustedError("string over the size limit");
      }
    }
    return Value::Str(std::move(out));
  }
  if (name == "replace") {
    Params p("replace", args, kwargs, {"old", "new", "count"});
    RETURN_IF_ERROR(p.Check());
    ASSIGN_OR_RETURN(const std::string* from, p.Str(0, true));
    ASSIGN_OR_RETURN(const std::string* to, p.Str(1, true));
    ASSIGN_OR_RETURN(int64_t count, p.Int(2, -1));
    ASSIGN_OR_RETURN(std::string s, str());
    return CallMethod(ev, Value::Str(std::move(s)), "replace", {Value::Str(*from), Value::Str(*to), Value::Int(count)},
                      {});
  }
  if (name == "list") {
    ASSIGN_OR_RETURN(List items, Iterate(x));
    return Value::MakeList(std::move(items));
  }
  if (name == "reverse") {
    if (x.IsString()) {
      auto cps = CodePoints(x.AsString());
      std::string out;
      for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
      return Value::Str(std::move(out));
    }
    ASSIGN_OR_RETURN(List items, Iterate(x));
    return Value::MakeList(List(items.rbegin(), items.rend()));
  }
  if (name == "items") {
    if (x.IsUndefined()) return Value::MakeList({});
    if (!x.IsDict()) return TypeError(absl::StrCat("items filter needs a mapping, got '", TypeName(x), "'"));
    List out;
    for (const auto& [k, v] : x.AsDict().items) out.push_back(Value::MakeList({Value::Str(k), v}));
    return Value::MakeList(std::move(out));
  }
  if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
    if (!kwargs.empty()) return TypeError(absl::StrCat(std::string(name), " takes no keyword arguments"));
    return SelectOrReject(x, args, name.size() > 6, name[0] == 's');
  }
  if (name == "map") {
    ASSIGN_OR_RETURN(List items, Iterate(x));
    List out;
    const Value* attr = nullptr;
    const Value* def = nullptr;
    for (const auto& [k, v] : kwargs) {
      if (k == "attribute") attr = &v;
      else if (k == "default") def = &v;
      else return TypeError(absl::StrCat("map() got an unexpected keyword argument '", k, "'"));
    }
    if (attr != nullptr) {
      if (!attr->IsString()) return TypeError("map(attribute=...) needs a string");
      for (const Value& item : items) {
        ASSIGN_OR_RETURN(Value v, Attribute(item, attr->AsString()));
        out.push_back(v.IsUndefined() && def != nullptr ? *def : v);
      }
      return Value::MakeList(std::move(out));
    }
    if (args.empty() || !args[0].IsString()) return TypeError("map needs a filter name or attribute=");
    const Args rest(args.begin() + 1, args.end());
    for (const Value& item : items) {
      ASSIGN_OR_RETURN(Value v, ApplyFilter(ev, args[0].AsString(), item, rest, {}));
      out.push_back(std::move(v));
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "abs") {
    if (x.IsInt()) {
      if (std::get<int64_t>(x.v) == INT64_MIN) return TypeError("integer overflow");
      return Value::Int(std::llabs(std::get<int64_t>(x.v)));
    }
    if (x.IsFloat()) return Value::Float(std::fabs(std::get<double>(x.v)));
    return TypeError(absl::StrCat("bad operand type for abs(): '", TypeName(x), "'"));
  }
  if (name == "int") {
    if (x.IsInt()) return x;
    if (x.IsBool()) return Value::Int(std::get<bool>(x.v) ? 1 : 0);
    if (x.IsFloat() && std::isfinite(std::get<double>(x.v)) && std::fabs(std::get<double>(x.v)) < 9.2e18) {
      return Value::Int(static_cast<int64_t>(std::get<double>(x.v)));
    }
    if (x.IsString()) {
      const std::string s = Strip(x.AsString(), nullptr, true, true);
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(s.c_str(), &end, 10);
      if (!s.empty() && end == s.c_str() + s.size() && errno == 0) return Value::Int(v);
    }
    return args.empty() ? Value::Int(0) : args[0];
  }
  if (name == "float") {
    if (x.IsFloat()) return x;
    if (x.IsInt() || x.IsBool()) return Value::Float(x.IsInt() ? static_cast<double>(std::get<int64_t>(x.v))
                                                               : (std::get<bool>(x.v) ? 1.0 : 0.0));
    if (x.IsString()) {
      const std::string s = Strip(x.AsString(), nullptr, true, true);
      char* end = nullptr;
      const double v = std::strtod(s.c_str(), &end);
      if (!s.empty() && end == s.c_str() + s.size()) return Value::Float(v);
    }
    return args.empty() ? Value::Float(0.0) : args[0];
  }
  return TypeError(absl::StrCat("no filter named '", std::string(name), "'"));
}

absl::StatusOr<Value> CallMethod(Evaluator& ev, const Value& obj, std::string_view name, const Args& args,
                                 const Kwargs& kwargs) {
  if (obj.IsString()) {
    const std::string& s = obj.AsString();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      Params p(name, args, kwargs, {"chars"});
      RETURN_IF_ERROR(p.Check());
      ASSIGN_OR_RETURN(const std::string* chars, p.Str(0, false));
      return Value::Str(Strip(s, chars, name != "rstrip", name != "lstrip"));
    }
    if (name == "startswith" || name == "endswith") {
      Params p(name, args, kwargs, {"prefix"});
      RETURN_IF_ERROR(p.Check());
      const Value* a = p.Get(0);
      if (a == nullptr) return TypeError(absl::StrCat(std::string(name), "() takes one argument"));
      List options = a->IsList() ? a->AsList() : List{*a};
      for (const Value& o : options) {
        if (!o.IsString()) return TypeError(absl::StrCat(std::string(name), "() argument must be str or a tuple of str"));
        const std::string& t = o.AsString();
        if (t.size() <= s.size() &&
            (name == "startswith" ? s.compare(0, t.size(), t) == 0 : s.compare(s.size() - t.size(), t.size(), t) == 0)) {
          return Value::Bool(true);
        }
      }
      return Value::Bool(false);
    }
    if (name == "split" || name == "rsplit") {
      Params p(name, args, kwargs, {"sep", "maxsplit"});
      RETURN_IF_ERROR(p.Check());
      ASSIGN_OR_RETURN(const std::string* sep, p.Str(0, false));
      ASSIGN_OR_RETURN(int64_t maxsplit, p.Int(1, -1));
      if (sep != nullptr && sep->empty()) return TypeError("empty separator");
      if (name == "rsplit" && maxsplit >= 0) return TypeError("rsplit with maxsplit is not supported");
      return Value::MakeList(Split(s, sep, maxsplit));
    }
    if (name == "upper") return Value::Str(UpperStr(s));
    if (name == "lower") return Value::Str(LowerStr(s));
    if (name == "capitalize") return Value::Str(Capitalize(s));
    if (name == "title") {  // Python: a letter after a non-letter is upper case, others lower
      std::string out;
      bool prev_alpha = false;
      for (char c : s) {
        out += IsAlpha(c) ? (prev_alpha ? Lower(c) : Upper(c)) : c;
        prev_alpha = IsAlpha(c);
      }
      return Value::Str(std::move(out));
    }
    if (name == "replace") {
      Params p(name, args, kwargs, {"old", "new", "count"});
      RETURN_IF_ERROR(p.Check());
      ASSIGN_OR_RETURN(const std::string* from, p.Str(0, true));
      ASSIGN_OR_RETURN(const std::string* to, p.Str(1, true));
      ASSIGN_OR_RETURN(int64_t count, p.Int(2, -1));
      // Bound the result before building it: every match may grow it.
      const int64_t matches = from->empty() ? static_cast<int64_t>(CodePoints(s).size()) + 1 : [&] {
        int64_t n = 0;
        for (size_t pos = s.find(*from); pos != std::string::npos; pos = s.find(*from, pos + from->size())) ++n;
        return n;
      }();
      const int64_t n = count < 0 ? matches : std::min(count, matches);
      const int64_t size = static_cast<int64_t>(s.size()) + n * (static_cast<int64_t>(to->size()) -
                                                                 static_cast<int64_t>(from->size()));
      if (size > ev.limits().max_output_bytes) return absl::ResourceExhaustedError("string over the size limit");
      return Value::Str(Replace(s, *from, *to, count));
    }
    if (name == "join") {
      if (args.size() != 1) return TypeError("join() takes one argument");
      return ApplyFilter(ev, "join", args[0], {obj}, {});
    }
    if (name == "find" || name == "count") {
      if (args.size() != 1 || !args[0].IsString()) return TypeError(absl::StrCat(std::string(name), "() takes one string"));
      const std::string& t = args[0].AsString();
      if (name == "find") {
        const size_t hit = s.find(t);
        return Value::Int(hit == std::string::npos ? -1 : static_cast<int64_t>(CodePoints(s.substr(0, hit)).size()));
      }
      if (t.empty()) return Value::Int(static_cast<int64_t>(CodePoints(s).size()) + 1);
      int64_t n = 0;
      for (size_t pos = s.find(t); pos != std::string::npos; pos = s.find(t, pos + t.size())) ++n;
      return Value::Int(n);
    }
  }
  if (obj.IsDict()) {
    const Dict& d = obj.AsDict();
    if (name == "get") {
      Params p("get", args, kwargs, {"key", "default"});
      RETURN_IF_ERROR(p.Check());
      const Value* key = p.Get(0);
      if (key == nullptr) return TypeError("get() needs a key");
      const Value* found = key->IsString() ? d.Find(key->AsString()) : nullptr;
      if (found != nullptr) return *found;
      const Value* def = p.Get(1);
      return def != nullptr ? *def : Value::MakeNone();
    }
    if ((name == "items" || name == "keys" || name == "values") && args.empty() && kwargs.empty()) {
      List out;
      for (const auto& [k, v] : d.items) {
        out.push_back(name == "items" ? Value::MakeList({Value::Str(k), v}) : name == "keys" ? Value::Str(k) : v);
      }
      return Value::MakeList(std::move(out));
    }
  }
  return absl::NotFoundError(absl::StrCat("'", TypeName(obj), "' object has no method '", std::string(name), "'"));
}

absl::StatusOr<Value> CallGlobal(Evaluator& ev, std::string_view name, const Args& args, const Kwargs& kwargs) {
  if (name == "raise_exception") {
    if (args.size() != 1) return TypeError("raise_exception() takes one argument");
    ASSIGN_OR_RETURN(std::string msg, ToStr(args[0]));
    return ev.Raise(std::move(msg));
  }
  if (name == "namespace" || name == "dict") {
    if (!args.empty()) {
      if (args.size() != 1 || !args[0].IsDict()) return TypeError(absl::StrCat(std::string(name), "() takes keyword arguments"));
    }
    Dict d;
    if (!args.empty()) d = args[0].AsDict();
    for (const auto& [k, v] : kwargs) {
      bool replaced = false;
      for (auto& [dk, dv] : d.items) {
        if (dk == k) {
          dv = v;
          replaced = true;
        }
      }
      if (!replaced) d.items.emplace_back(k, v);
    }
    if (name == "dict") return Value::MakeDict(std::move(d));
    return ev.NewNamespace(std::move(d));
  }
  if (name == "range") {
    if (!kwargs.empty() || args.empty() || args.size() > 3) return TypeError("range() takes 1 to 3 integers");
    int64_t v[3] = {0, 0, 1};
    for (size_t i = 0; i < args.size(); ++i) {
      if (!args[i].IsInt()) return TypeError("range() takes integers");
    }
    if (args.size() == 1) {
      v[1] = std::get<int64_t>(args[0].v);
    } else {
      for (size_t i = 0; i < args.size(); ++i) v[i] = std::get<int64_t>(args[i].v);
    }
    if (v[2] == 0) return TypeError("range() arg 3 must not be zero");
    // Python's len(range(...)), in long double to stay clear of overflow.
    const long double span = static_cast<long double>(v[1]) - static_cast<long double>(v[0]);
    const long double n = span / static_cast<long double>(v[2]);
    const long double count = n <= 0 ? 0 : std::ceil(n);
    if (count > kMaxRange) {
      return absl::ResourceExhaustedError(
          absl::StrCat("Range too big. The sandbox blocks ranges larger than MAX_RANGE (", kMaxRange, ")."));
    }
    List out;
    for (int64_t i = 0; i < static_cast<int64_t>(count); ++i) out.push_back(Value::Int(v[0] + i * v[2]));
    return Value::MakeList(std::move(out));
  }
  if (name == "strftime_now") {
    if (args.size() != 1 || !args[0].IsString()) return TypeError("strftime_now() takes a format string");
    const std::string& fmt = args[0].AsString();
    if (fmt.size() > 256) return TypeError("strftime_now() format longer than 256 bytes");
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[4096];
    const size_t n = std::strftime(buf, sizeof(buf), fmt.c_str(), &tm);
    return Value::Str(std::string(buf, n));
  }
  return TypeError(absl::StrCat("'", std::string(name), "' is not callable"));
}

}  // namespace gla::chat
