// Renders a parsed chat template: jinja2's scoping (a loop iteration and a macro call each get
// their own scope; `set` elsewhere writes the enclosing one), Undefined, loop variables, and the
// globals Hugging Face adds. Every render is bounded in output, loop iterations, work and
// recursion, because the template comes from a checkpoint and the conversation from a client.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/http/chat_ast.h"
#include "server/http/chat_value.h"

namespace gla::chat {

struct RenderLimits {
  int64_t max_output_bytes = int64_t{4} << 20;  // also the largest string a template may build
  int64_t max_list_items = int64_t{1} << 20;
  int64_t max_loop_iterations = 1'000'000;      // over the whole render
  // Units of work: 64 per expression or statement evaluated plus one per byte of each string
  // or list built; about a second of work on a current core.
  int64_t max_work = int64_t{256} << 20;
  int max_depth = 256;                          // nested evaluation, macro calls included
};

using Args = std::vector<Value>;
using Kwargs = std::vector<std::pair<std::string, Value>>;

class Evaluator {
 public:
  // `context` holds the template's variables (messages, bos_token, ...).
  Evaluator(const RenderLimits& limits, Dict context);

  absl::StatusOr<std::string> Render(const Body& body);

  // For the built-ins: account for `units` of work; an error once the budget is spent.
  absl::Status Charge(int64_t units);
  const RenderLimits& limits() const { return limits_; }
  // raise_exception(msg): the error carries msg as it is, without a line.
  absl::Status Raise(std::string msg);
  // namespace(): a new namespace this evaluator owns. A namespace can hold itself (ns.x = ns): a
  // cycle of shared pointers, which ~Evaluator breaks by emptying every namespace it made, so a
  // hostile template cannot leak memory on every request.
  Value NewNamespace(Dict attrs);
  ~Evaluator();

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  struct DepthGuard;

  absl::StatusOr<Flow> Exec(const Body& body);
  absl::StatusOr<Flow> ExecNode(const Node& n);
  absl::StatusOr<Flow> ExecFor(const Node& n);
  absl::Status Append(std::string_view s);
  absl::StatusOr<std::string> Capture(const Body& body);

  absl::StatusOr<Value> Eval(const Expr& e);
  absl::StatusOr<Value> EvalInner(const Expr& e);
  absl::StatusOr<Value> EvalCall(const Expr& e);
  absl::Status EvalArgs(const Expr& e, size_t first, Args* args, Kwargs* kwargs);
  absl::StatusOr<Value> Binary(const std::string& op, const Value& a, const Value& b);
  absl::StatusOr<Value> CallMacro(const MacroNode& m, const Args& args, const Kwargs& kwargs);
  // Adds the line to an error raised below, once (the innermost line is the useful one).
  absl::Status Locate(absl::Status s, int line);

  Value Lookup(const std::string& name) const;
  void Assign(const std::string& name, Value v);

  RenderLimits limits_;
  std::vector<std::shared_ptr<Namespace>> namespaces_;  // every namespace() made here (see NewNamespace)
  std::vector<Dict> frames_;  // [0]: the template's context; then loop iterations and macro calls
  std::string out_;
  int64_t work_ = 0;
  int64_t iterations_ = 0;
  int depth_ = 0;
  bool raised_ = false;   // the error in flight came from raise_exception
  bool located_ = false;  // the error in flight names its line already
};

}  // namespace gla::chat
