// The filters, tests, methods and global functions a chat template may call, as jinja2's
// ImmutableSandboxedEnvironment and transformers define them (tojson is transformers' json.dumps).
// String operations count Unicode code points, as Python does; case mapping and whitespace are
// ASCII only.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/http/chat_eval.h"
#include "server/http/chat_value.h"

namespace gla::chat {

// A string's code points (an invalid byte counts as one).
std::vector<std::string_view> CodePoints(std::string_view s);
// What `for x in v` walks: a list's items, a dict's keys, a string's characters; Undefined is empty.
absl::StatusOr<List> Iterate(const Value& v);

absl::StatusOr<Value> ApplyFilter(Evaluator& ev, std::string_view name, const Value& x, const Args& args,
                                  const Kwargs& kwargs);
absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& x, const Args& args);
// obj.name(args): str and dict methods. NOT_FOUND when `obj` has no such method.
absl::StatusOr<Value> CallMethod(Evaluator& ev, const Value& obj, std::string_view name, const Args& args,
                                 const Kwargs& kwargs);
// range, namespace, dict, raise_exception, strftime_now.
absl::StatusOr<Value> CallGlobal(Evaluator& ev, std::string_view name, const Args& args, const Kwargs& kwargs);
inline constexpr const char* kGlobalNames[] = {"range", "namespace", "dict", "raise_exception", "strftime_now"};

}  // namespace gla::chat
