#include "server/http/chat_eval.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "models/status_macros.h"
#include "server/http/chat_builtins.h"

namespace gla::chat {

struct Evaluator::DepthGuard {
  explicit DepthGuard(int* d) : depth(d) { ++*depth; }
  ~DepthGuard() { --*depth; }
  int* depth;
};

namespace {

absl::Status TypeError(std::string_view what) { return absl::InvalidArgumentError(std::string(what)); }

bool IsNumeric(const Value& x) { return x.IsBool() || x.IsInt() || x.IsFloat(); }
double AsDouble(const Value& x) {
  if (x.IsBool()) return std::get<bool>(x.v) ? 1 : 0;
  if (x.IsInt()) return static_cast<double>(std::get<int64_t>(x.v));
  return std::get<double>(x.v);
}
int64_t AsInt(const Value& x) { return x.IsBool() ? (std::get<bool>(x.v) ? 1 : 0) : std::get<int64_t>(x.v); }

absl::Status Unsupported(const std::string& op, const Value& a, const Value& b) {
  return TypeError(
      absl::StrCat("unsupported operand type(s) for ", op, ": '", TypeName(a), "' and '", TypeName(b), "'"));
}

// Python's index into a sequence of `n`: negative counts from the end; -1 when outside.
int64_t NormIndex(int64_t i, int64_t n) {
  if (i < 0) i += n;
  return i < 0 || i >= n ? -1 : i;
}

// Python's slice indices for a sequence of n.
absl::StatusOr<std::vector<int64_t>> SliceIndices(int64_t n, const Value& start, const Value& stop, const Value& step) {
  int64_t st = 1;
  if (!step.IsNone() && !step.IsUndefined()) {
    if (!step.IsInt()) return TypeError("slice indices must be integers or None");
    st = std::get<int64_t>(step.v);
    if (st == 0) return TypeError("slice step cannot be zero");
  }
  auto bound = [&](const Value& v, int64_t def) -> absl::StatusOr<int64_t> {
    if (v.IsNone() || v.IsUndefined()) return def;
    if (!v.IsInt() && !v.IsBool()) return TypeError("slice indices must be integers or None");
    int64_t i = AsInt(v);
    if (i < 0) {
      i += n;
      if (i < 0) i = st < 0 ? -1 : 0;
    } else if (i >= n) {
      i = st < 0 ? n - 1 : n;
    }
    return i;
  };
  ASSIGN_OR_RETURN(int64_t lo, bound(start, st < 0 ? n - 1 : 0));
  ASSIGN_OR_RETURN(int64_t hi, bound(stop, st < 0 ? -1 : n));
  std::vector<int64_t> idx;
  if (st > 0) {
    for (int64_t i = lo; i < hi; i += st) idx.push_back(i);
  } else {
    for (int64_t i = lo; i > hi; i += st) idx.push_back(i);
  }
  return idx;
}

}  // namespace

Evaluator::Evaluator(const RenderLimits& limits, Dict context) : limits_(limits) {
  for (const char* name : kGlobalNames) {
    if (context.Find(name) == nullptr) context.items.emplace_back(name, Value{Value::Storage(Callable{name})});
  }
  frames_.push_back(std::move(context));
}

absl::Status Evaluator::Charge(int64_t units) {
  work_ += units;
  if (work_ > limits_.max_work) {
    return absl::ResourceExhaustedError(
        absl::StrCat("chat template exceeded its work budget (", limits_.max_work, " units)"));
  }
  return absl::OkStatus();
}

absl::Status Evaluator::Raise(std::string msg) {
  raised_ = true;
  return absl::InvalidArgumentError(std::move(msg));
}

absl::Status Evaluator::Locate(absl::Status s, int line) {
  if (s.ok() || raised_ || located_) return s;
  located_ = true;
  return absl::Status(s.code(), absl::StrCat("chat template line ", line, ": ", s.message()));
}

Value Evaluator::Lookup(const std::string& name) const {
  for (auto f = frames_.rbegin(); f != frames_.rend(); ++f) {
    if (const Value* v = f->Find(name)) return *v;
  }
  return Value::MakeUndefined(absl::StrCat("'", name, "' is undefined"));
}

void Evaluator::Assign(const std::string& name, Value v) {
  for (auto& [k, old] : frames_.back().items) {
    if (k == name) {
      old = std::move(v);
      return;
    }
  }
  frames_.back().items.emplace_back(name, std::move(v));
}

Value Evaluator::NewNamespace(Dict attrs) {
  auto ns = std::make_shared<Namespace>();
  ns->attrs = std::move(attrs);
  namespaces_.push_back(ns);
  return Value{Value::Storage(std::move(ns))};
}

Evaluator::~Evaluator() {
  // Emptied, not just released: a namespace that holds itself (directly or through others) would
  // otherwise keep itself alive. Moved out first, as clearing may free other namespaces' values.
  for (auto& ns : namespaces_) {
    Dict attrs = std::move(ns->attrs);
    ns->attrs = Dict{};
  }
}

absl::StatusOr<std::string> Evaluator::Render(const Body& body) {
  auto flow = Exec(body);
  if (!flow.ok()) return flow.status();
  return std::move(out_);
}

absl::Status Evaluator::Append(std::string_view s) {
  if (static_cast<int64_t>(out_.size() + s.size()) > limits_.max_output_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("chat template output is over the limit of ", limits_.max_output_bytes, " bytes"));
  }
  out_.append(s);
  return Charge(static_cast<int64_t>(s.size()));
}

absl::StatusOr<std::string> Evaluator::Capture(const Body& body) {
  std::string saved = std::move(out_);
  out_.clear();
  auto flow = Exec(body);
  std::string captured = std::move(out_);
  out_ = std::move(saved);
  if (!flow.ok()) return flow.status();
  return captured;
}

absl::StatusOr<Evaluator::Flow> Evaluator::Exec(const Body& body) {
  for (const NodePtr& n : body) {
    ASSIGN_OR_RETURN(Flow f, ExecNode(*n));
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

absl::StatusOr<Evaluator::Flow> Evaluator::ExecNode(const Node& n) {
  if (depth_ >= limits_.max_depth) {
    return Locate(absl::ResourceExhaustedError(absl::StrCat("recursion deeper than ", limits_.max_depth)), n.line);
  }
  DepthGuard guard(&depth_);
  RETURN_IF_ERROR(Locate(Charge(64), n.line));
  switch (n.kind) {
    case Node::Kind::kText:
      RETURN_IF_ERROR(Locate(Append(n.text), n.line));
      return Flow::kNormal;
    case Node::Kind::kOutput: {
      ASSIGN_OR_RETURN(Value v, Eval(*n.expr));
      auto s = ToStr(v);
      if (!s.ok()) return Locate(s.status(), n.line);
      RETURN_IF_ERROR(Locate(Append(*s), n.line));
      return Flow::kNormal;
    }
    case Node::Kind::kIf:
      for (size_t i = 0; i < n.conds.size(); ++i) {
        ASSIGN_OR_RETURN(Value c, Eval(*n.conds[i]));
        if (Truthy(c)) return Exec(n.bodies[i]);
      }
      return Exec(n.else_body);
    case Node::Kind::kFor:
      return ExecFor(n);
    case Node::Kind::kSet:
    case Node::Kind::kSetBlock: {
      Value v;
      if (n.kind == Node::Kind::kSet) {
        ASSIGN_OR_RETURN(v, Eval(*n.expr));
      } else {
        ASSIGN_OR_RETURN(std::string s, Capture(n.body));
        v = Value::Str(std::move(s));
      }
      if (n.attr.empty()) {
        Assign(n.target, std::move(v));
        return Flow::kNormal;
      }
      Value target = Lookup(n.target);
      if (!target.IsNamespace()) {
        return Locate(TypeError(absl::StrCat("cannot assign attribute on non-namespace object '", n.target, "'")),
                      n.line);
      }
      Dict& attrs = std::get<std::shared_ptr<Namespace>>(target.v)->attrs;
      for (auto& [k, old] : attrs.items) {
        if (k == n.attr) {
          old = std::move(v);
          return Flow::kNormal;
        }
      }
      attrs.items.emplace_back(n.attr, std::move(v));
      return Flow::kNormal;
    }
    case Node::Kind::kMacro:
      Assign(n.macro->name, Value{Value::Storage(Callable{n.macro->name, n.macro.get()})});
      return Flow::kNormal;
    case Node::Kind::kBreak:
      return Flow::kBreak;
    case Node::Kind::kContinue:
      return Flow::kContinue;
    case Node::Kind::kScope:
      return Exec(n.body);
  }
  return Flow::kNormal;
}

absl::StatusOr<Evaluator::Flow> Evaluator::ExecFor(const Node& n) {
  ASSIGN_OR_RETURN(Value seq, Eval(*n.expr));
  auto items_or = Iterate(seq);
  if (!items_or.ok()) return Locate(items_or.status(), n.line);
  List items = std::move(*items_or);
  auto bind = [&](Dict* frame, const Value& item) -> absl::Status {
    if (n.targets.size() == 1) {
      frame->items.emplace_back(n.targets[0], item);
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(List parts, Iterate(item));
    if (parts.size() != n.targets.size() || item.IsUndefined()) {
      return TypeError(absl::StrCat("cannot unpack ", parts.size(), " values into ", n.targets.size(), " names"));
    }
    for (size_t i = 0; i < parts.size(); ++i) frame->items.emplace_back(n.targets[i], parts[i]);
    return absl::OkStatus();
  };
  if (n.filter) {  // `for x in xs if cond`: loop.length etc. count what passes
    List kept;
    for (Value& item : items) {
      frames_.emplace_back();
      absl::Status st = bind(&frames_.back(), item);
      absl::StatusOr<Value> keep = st.ok() ? Eval(*n.filter) : absl::StatusOr<Value>(st);
      frames_.pop_back();
      if (!keep.ok()) return Locate(keep.status(), n.line);
      if (Truthy(*keep)) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) return Exec(n.else_body);
  const int64_t len = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < len; ++i) {
    if (++iterations_ > limits_.max_loop_iterations) {
      return Locate(absl::ResourceExhaustedError(absl::StrCat("chat template ran more than ",
                                                              limits_.max_loop_iterations, " loop iterations")),
                    n.line);
    }
    Dict loop;
    loop.items = {{"index", Value::Int(i + 1)},
                  {"index0", Value::Int(i)},
                  {"revindex", Value::Int(len - i)},
                  {"revindex0", Value::Int(len - i - 1)},
                  {"first", Value::Bool(i == 0)},
                  {"last", Value::Bool(i == len - 1)},
                  {"length", Value::Int(len)},
                  {"depth", Value::Int(1)},
                  {"depth0", Value::Int(0)},
                  {"previtem", i > 0 ? items[i - 1] : Value::MakeUndefined("there is no previous item")},
                  {"nextitem", i + 1 < len ? items[i + 1] : Value::MakeUndefined("there is no next item")}};
    frames_.emplace_back();
    absl::Status st = bind(&frames_.back(), items[i]);
    if (!st.ok()) {
      frames_.pop_back();
      return Locate(st, n.line);
    }
    frames_.back().items.emplace_back("loop", Value::MakeDict(std::move(loop)));
    auto flow = Exec(n.body);
    frames_.pop_back();
    if (!flow.ok()) return flow.status();
    if (*flow == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

absl::StatusOr<Value> Evaluator::Eval(const Expr& e) {
  if (depth_ >= limits_.max_depth) {
    return Locate(absl::ResourceExhaustedError(absl::StrCat("recursion deeper than ", limits_.max_depth)), e.line);
  }
  DepthGuard guard(&depth_);
  RETURN_IF_ERROR(Locate(Charge(64), e.line));
  auto v = EvalInner(e);
  if (!v.ok()) return Locate(v.status(), e.line);
  // What a value costs to build, and the caps on strings and lists.
  if (v->IsString()) {
    if (static_cast<int64_t>(v->AsString().size()) > limits_.max_output_bytes) {
      return Locate(absl::ResourceExhaustedError(absl::StrCat("string over the limit of ", limits_.max_output_bytes,
                                                              " bytes")),
                    e.line);
    }
    RETURN_IF_ERROR(Locate(Charge(static_cast<int64_t>(v->AsString().size())), e.line));
  } else if (v->IsList()) {
    if (static_cast<int64_t>(v->AsList().size()) > limits_.max_list_items) {
      return Locate(absl::ResourceExhaustedError(absl::StrCat("list over the limit of ", limits_.max_list_items,
                                                              " items")),
                    e.line);
    }
    RETURN_IF_ERROR(Locate(Charge(static_cast<int64_t>(v->AsList().size())), e.line));
  }
  return v;
}

absl::Status Evaluator::EvalArgs(const Expr& e, size_t first, Args* args, Kwargs* kwargs) {
  for (size_t i = first; i < e.args.size(); ++i) {
    ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
    args->push_back(std::move(v));
  }
  for (const auto& [k, x] : e.kwargs) {
    ASSIGN_OR_RETURN(Value v, Eval(*x));
    kwargs->emplace_back(k, std::move(v));
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> Evaluator::EvalInner(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.literal;
    case Expr::Kind::kName:
      return Lookup(e.name);
    case Expr::Kind::kList: {
      List l;
      for (const ExprPtr& x : e.args) {
        ASSIGN_OR_RETURN(Value v, Eval(*x));
        l.push_back(std::move(v));
      }
      return Value::MakeList(std::move(l));
    }
    case Expr::Kind::kDict: {
      Dict d;
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        ASSIGN_OR_RETURN(Value k, Eval(*e.args[i]));
        ASSIGN_OR_RETURN(Value v, Eval(*e.args[i + 1]));
        if (!k.IsString()) return TypeError("dict keys must be strings in chat templates");
        bool replaced = false;
        for (auto& [dk, dv] : d.items) {
          if (dk == k.AsString()) {
            dv = v;
            replaced = true;
          }
        }
        if (!replaced) d.items.emplace_back(k.AsString(), std::move(v));
      }
      return Value::MakeDict(std::move(d));
    }
    case Expr::Kind::kAttr:
    case Expr::Kind::kItem: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
      Value key = Value::Str(e.name);
      if (e.kind == Expr::Kind::kItem) {
        ASSIGN_OR_RETURN(key, Eval(*e.args[1]));
      }
      if (obj.IsUndefined()) return TypeError(obj.UndefinedHint().empty() ? "value is undefined" : obj.UndefinedHint());
      ASSIGN_OR_RETURN(std::string shown, Repr(key));
      if (key.IsString() && (obj.IsDict() || obj.IsNamespace())) {
        const Dict& d = obj.IsDict() ? obj.AsDict() : std::get<std::shared_ptr<Namespace>>(obj.v)->attrs;
        if (const Value* v = d.Find(key.AsString())) return *v;
        return Value::MakeUndefined(absl::StrCat("'", TypeName(obj), " object' has no attribute ", shown));
      }
      if ((key.IsInt() || key.IsBool()) && (obj.IsList() || obj.IsString())) {
        if (obj.IsList()) {
          const int64_t i = NormIndex(AsInt(key), static_cast<int64_t>(obj.AsList().size()));
          if (i >= 0) return obj.AsList()[static_cast<size_t>(i)];
        } else {
          const auto cps = CodePoints(obj.AsString());
          const int64_t i = NormIndex(AsInt(key), static_cast<int64_t>(cps.size()));
          if (i >= 0) return Value::Str(std::string(cps[static_cast<size_t>(i)]));
        }
      }
      return Value::MakeUndefined(absl::StrCat("'", TypeName(obj), " object' has no attribute or item ", shown));
    }
    case Expr::Kind::kSlice: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
      Value parts[3] = {Value::MakeNone(), Value::MakeNone(), Value::MakeNone()};
      for (int i = 0; i < 3; ++i) {
        if (e.args[i + 1]) {
          ASSIGN_OR_RETURN(parts[i], Eval(*e.args[i + 1]));
        }
      }
      if (obj.IsUndefined()) return TypeError(obj.UndefinedHint());
      if (obj.IsList()) {
        const List& l = obj.AsList();
        ASSIGN_OR_RETURN(auto idx, SliceIndices(static_cast<int64_t>(l.size()), parts[0], parts[1], parts[2]));
        List out;
        for (int64_t i : idx) out.push_back(l[static_cast<size_t>(i)]);
        return Value::MakeList(std::move(out));
      }
      if (obj.IsString()) {
        const auto cps = CodePoints(obj.AsString());
        ASSIGN_OR_RETURN(auto idx, SliceIndices(static_cast<int64_t>(cps.size()), parts[0], parts[1], parts[2]));
        std::string out;
        for (int64_t i : idx) out += cps[static_cast<size_t>(i)];
        return Value::Str(std::move(out));
      }
      return TypeError(absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
    }
    case Expr::Kind::kCall:
      return EvalCall(e);
    case Expr::Kind::kFilter: {
      ASSIGN_OR_RETURN(Value x, Eval(*e.args[0]));
      Args args;
      Kwargs kwargs;
      RETURN_IF_ERROR(EvalArgs(e, 1, &args, &kwargs));
      return ApplyFilter(*this, e.name, x, args, kwargs);
    }
    case Expr::Kind::kTest: {
      ASSIGN_OR_RETURN(Value x, Eval(*e.args[0]));
      Args args;
      Kwargs kwargs;
      RETURN_IF_ERROR(EvalArgs(e, 1, &args, &kwargs));
      if (!kwargs.empty()) return TypeError("tests take no keyword arguments here");
      ASSIGN_OR_RETURN(bool r, ApplyTest(e.name, x, args));
      return Value::Bool(r != e.negated);
    }
    case Expr::Kind::kNeg:
    case Expr::Kind::kPos: {
      ASSIGN_OR_RETURN(Value x, Eval(*e.args[0]));
      if (!IsNumeric(x)) return TypeError(absl::StrCat("bad operand type for unary -: '", TypeName(x), "'"));
      if (e.kind == Expr::Kind::kPos) return x.IsBool() ? Value::Int(AsInt(x)) : x;
      if (x.IsFloat()) return Value::Float(-std::get<double>(x.v));
      if (AsInt(x) == std::numeric_limits<int64_t>::min()) return TypeError("integer overflow");
      return Value::Int(-AsInt(x));
    }
    case Expr::Kind::kNot: {
      ASSIGN_OR_RETURN(Value x, Eval(*e.args[0]));
      return Value::Bool(!Truthy(x));
    }
    case Expr::Kind::kAnd:
    case Expr::Kind::kOr: {
      ASSIGN_OR_RETURN(Value a, Eval(*e.args[0]));
      if (Truthy(a) == (e.kind == Expr::Kind::kOr)) return a;
      return Eval(*e.args[1]);
    }
    case Expr::Kind::kBinary: {
      ASSIGN_OR_RETURN(Value a, Eval(*e.args[0]));
      ASSIGN_OR_RETURN(Value b, Eval(*e.args[1]));
      return Binary(e.name, a, b);
    }
    case Expr::Kind::kCompare: {
      ASSIGN_OR_RETURN(Value left, Eval(*e.args[0]));
      for (size_t i = 0; i < e.ops.size(); ++i) {
        ASSIGN_OR_RETURN(Value right, Eval(*e.args[i + 1]));
        const std::string& op = e.ops[i];
        bool r = false;
        if (op == "==" || op == "!=") {
          ASSIGN_OR_RETURN(bool eq, Equals(left, right));
          r = eq == (op == "==");
        } else if (op == "in" || op == "not in") {
          if (right.IsString()) {
            if (!left.IsString()) return TypeError("'in <string>' requires string as left operand");
            r = right.AsString().find(left.AsString()) != std::string::npos;
          } else if (right.IsList() || right.IsDict() || right.IsUndefined()) {
            ASSIGN_OR_RETURN(List items, Iterate(right));
            for (const Value& x : items) {
              ASSIGN_OR_RETURN(bool eq, Equals(left, x));
              if (eq) {
                r = true;
                break;
              }
            }
          } else {
            return TypeError(absl::StrCat("argument of type '", TypeName(right), "' is not iterable"));
          }
          if (op == "not in") r = !r;
        } else {
          if (left.IsUndefined() || right.IsUndefined()) {
            return TypeError(left.IsUndefined() ? left.UndefinedHint() : right.UndefinedHint());
          }
          if (op == "<") {
            ASSIGN_OR_RETURN(r, Less(left, right));
          } else if (op == ">") {
            ASSIGN_OR_RETURN(r, Less(right, left));
          } else if (op == "<=") {
            ASSIGN_OR_RETURN(bool gt, Less(right, left));
            r = !gt;
          } else {
            ASSIGN_OR_RETURN(bool lt, Less(left, right));
            r = !lt;
          }
        }
        if (!r) return Value::Bool(false);
        left = std::move(right);
      }
      return Value::Bool(true);
    }
    case Expr::Kind::kCond: {
      ASSIGN_OR_RETURN(Value c, Eval(*e.args[1]));
      if (Truthy(c)) return Eval(*e.args[0]);
      if (e.args[2]) return Eval(*e.args[2]);
      return Value::MakeUndefined("the inline if had no else");
    }
  }
  return TypeError("unknown expression");
}

absl::StatusOr<Value> Evaluator::EvalCall(const Expr& e) {
  const Expr& callee = *e.args[0];
  Args args;
  Kwargs kwargs;
  if (callee.kind == Expr::Kind::kAttr) {  // obj.method(...)
    ASSIGN_OR_RETURN(Value obj, Eval(*callee.args[0]));
    if (obj.IsUndefined()) return TypeError(obj.UndefinedHint());
    RETURN_IF_ERROR(EvalArgs(e, 1, &args, &kwargs));
    auto r = CallMethod(*this, obj, callee.name, args, kwargs);
    if (r.status().code() != absl::StatusCode::kNotFound) return r;
    // Not a method: a callable stored under that name (a dict or namespace holding a macro).
    const Value* stored = nullptr;
    if (obj.IsDict()) stored = obj.AsDict().Find(callee.name);
    if (obj.IsNamespace()) stored = std::get<std::shared_ptr<Namespace>>(obj.v)->attrs.Find(callee.name);
    if (stored == nullptr || !stored->IsCallable()) {
      if (obj.IsList()) {  // what ImmutableSandboxedEnvironment says of append, pop, ...
        return TypeError(absl::StrCat("access to attribute '", callee.name, "' of 'list' object is unsafe"));
      }
      return TypeError(absl::StrCat("'", TypeName(obj), "' object has no attribute '", callee.name, "'"));
    }
    const Callable c = std::get<Callable>(stored->v);
    if (c.macro != nullptr) return CallMacro(*c.macro, args, kwargs);
    return CallGlobal(*this, c.name, args, kwargs);
  }
  ASSIGN_OR_RETURN(Value f, Eval(callee));
  if (f.IsUndefined()) return TypeError(f.UndefinedHint());
  if (!f.IsCallable()) return TypeError(absl::StrCat("'", TypeName(f), "' object is not callable"));
  RETURN_IF_ERROR(EvalArgs(e, 1, &args, &kwargs));
  const Callable& c = std::get<Callable>(f.v);
  if (c.macro != nullptr) return CallMacro(*c.macro, args, kwargs);
  return CallGlobal(*this, c.name, args, kwargs);
}

absl::StatusOr<Value> Evaluator::CallMacro(const MacroNode& m, const Args& args, const Kwargs& kwargs) {
  if (args.size() > m.params.size()) {
    return TypeError(absl::StrCat("macro '", m.name, "' takes not more than ", m.params.size(), " argument(s)"));
  }
  // The body sees the template's context and its arguments, not the caller's loop variables.
  std::vector<Dict> saved = std::move(frames_);
  frames_.clear();
  frames_.push_back(saved.front());
  frames_.emplace_back();
  absl::Status st;
  for (size_t i = 0; i < m.params.size() && st.ok(); ++i) {
    const std::string& p = m.params[i].first;
    Value v = Value::MakeUndefined(absl::StrCat("'", p, "' is undefined"));
    bool given = false;
    if (i < args.size()) {
      v = args[i];
      given = true;
    }
    for (const auto& [k, x] : kwargs) {
      if (k == p) {
        v = x;
        given = true;
      }
    }
    if (!given && m.params[i].second) {
      auto d = Eval(*m.params[i].second);
      if (!d.ok()) st = d.status();
      else v = std::move(*d);
    }
    frames_.back().items.emplace_back(p, std::move(v));
  }
  for (const auto& [k, x] : kwargs) {
    bool known = false;
    for (const auto& p : m.params) known = known || p.first == k;
    if (!known && st.ok()) st = TypeError(absl::StrCat("macro '", m.name, "' takes no keyword argument '", k, "'"));
  }
  absl::StatusOr<std::string> out = st.ok() ? Capture(m.body) : absl::StatusOr<std::string>(st);
  // The macro may have changed the template context's namespaces (shared), never its names.
  frames_ = std::move(saved);
  if (!out.ok()) return out.status();
  return Value::Str(std::move(*out));
}

absl::StatusOr<Value> Evaluator::Binary(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {
    ASSIGN_OR_RETURN(std::string x, ToStr(a));
    ASSIGN_OR_RETURN(std::string y, ToStr(b));
    if (static_cast<int64_t>(x.size() + y.size()) > limits_.max_output_bytes) {
      return absl::ResourceExhaustedError("string over the size limit");
    }
    return Value::Str(x + y);
  }
  if (a.IsUndefined() || b.IsUndefined()) return TypeError(a.IsUndefined() ? a.UndefinedHint() : b.UndefinedHint());
  if (op == "+") {
    if (a.IsString() && b.IsString()) {
      if (static_cast<int64_t>(a.AsString().size() + b.AsString().size()) > limits_.max_output_bytes) {
        return absl::ResourceExhaustedError("string over the size limit");
      }
      return Value::Str(a.AsString() + b.AsString());
    }
    if (a.IsList() && b.IsList()) {
      if (static_cast<int64_t>(a.AsList().size() + b.AsList().size()) > limits_.max_list_items) {
        return absl::ResourceExhaustedError("list over the size limit");
      }
      List l = a.AsList();
      l.insert(l.end(), b.AsList().begin(), b.AsList().end());
      return Value::MakeList(std::move(l));
    }
  }
  if (op == "*" && (((a.IsString() || a.IsList()) && (b.IsInt() || b.IsBool())) ||
                    ((b.IsString() || b.IsList()) && (a.IsInt() || a.IsBool())))) {
    const Value& seq = a.IsString() || a.IsList() ? a : b;
    const int64_t n = std::max<int64_t>(0, AsInt(a.IsString() || a.IsList() ? b : a));
    if (seq.IsString()) {
      const int64_t size = static_cast<int64_t>(seq.AsString().size());
      if (size > 0 && n > limits_.max_output_bytes / size) return absl::ResourceExhaustedError("string over the size limit");
      RETURN_IF_ERROR(Charge(size * n));
      std::string s;
      for (int64_t i = 0; i < n; ++i) s += seq.AsString();
      return Value::Str(std::move(s));
    }
    const int64_t size = static_cast<int64_t>(seq.AsList().size());
    if (size > 0 && n > limits_.max_list_items / size) return absl::ResourceExhaustedError("list over the size limit");
    List l;
    for (int64_t i = 0; i < n; ++i) {
      for (const Value& x : seq.AsList()) {
        if (x.IsString()) RETURN_IF_ERROR(Charge(static_cast<int64_t>(x.AsString().size())));
        l.push_back(x);
      }
    }
    return Value::MakeList(std::move(l));
  }
  if (!IsNumeric(a) || !IsNumeric(b)) return Unsupported(op, a, b);
  const bool ints = !a.IsFloat() && !b.IsFloat();
  const double x = AsDouble(a), y = AsDouble(b);
  if (op == "/") {
    if (y == 0) return TypeError("division by zero");
    return Value::Float(x / y);
  }
  if (ints) {
    const int64_t i = AsInt(a), j = AsInt(b);
    int64_t r = 0;
    if (op == "+") {
      if (__builtin_add_overflow(i, j, &r)) return TypeError("integer overflow");
    } else if (op == "-") {
      if (__builtin_sub_overflow(i, j, &r)) return TypeError("integer overflow");
    } else if (op == "*") {
      if (__builtin_mul_overflow(i, j, &r)) return TypeError("integer overflow");
    } else if (op == "//" || op == "%") {
      if (j == 0) return TypeError("integer division or modulo by zero");
      if (i == std::numeric_limits<int64_t>::min() && j == -1) return TypeError("integer overflow");
      int64_t q = i / j, m = i % j;
      if (m != 0 && ((m < 0) != (j < 0))) {  // Python floors
        --q;
        m += j;
      }
      r = op == "//" ? q : m;
    } else if (op == "**") {
      if (j < 0) return Value::Float(std::pow(x, y));
      r = 1;
      int64_t base = i;
      for (int64_t e = j; e > 0; e >>= 1) {
        if ((e & 1) && __builtin_mul_overflow(r, base, &r)) return TypeError("integer overflow");
        if (e > 1 && __builtin_mul_overflow(base, base, &base)) return TypeError("integer overflow");
      }
    } else {
      return Unsupported(op, a, b);
    }
    return Value::Int(r);
  }
  if (op == "+") return Value::Float(x + y);
  if (op == "-") return Value::Float(x - y);
  if (op == "*") return Value::Float(x * y);
  if (op == "**") return Value::Float(std::pow(x, y));
  if (op == "//" || op == "%") {
    if (y == 0) return TypeError("float division by zero");
    const double m = std::fmod(x, y);
    const double mod = (m != 0 && ((m < 0) != (y < 0))) ? m + y : m;
    if (op == "%") return Value::Float(mod);
    return Value::Float(std::floor((x - mod) / y + 0.5));
  }
  return Unsupported(op, a, b);
}

}  // namespace gla::chat
