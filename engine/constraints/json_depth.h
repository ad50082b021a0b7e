// How deep a parsed JSON value nests, found without recursion: nlohmann parses iteratively, but
// dump() and most walks recurse, so a schema from the network ([[[[...]]]] a million deep fits in a
// request body) is measured before anything recurses over it.
#pragma once

#include <utility>
#include <vector>

namespace gla::constraints {

// Whether `v` nests at most `max_depth` arrays/objects deep (a scalar is depth 0).
template <class Json>
bool NestedWithin(const Json& v, int max_depth) {
  std::vector<std::pair<const Json*, int>> stack = {{&v, 0}};
  while (!stack.empty()) {
    const auto [j, depth] = stack.back();
    stack.pop_back();
    if (!j->is_structured()) continue;
    if (depth + 1 > max_depth) return false;
    for (const auto& child : *j) stack.emplace_back(&child, depth + 1);
  }
  return true;
}

}  // namespace gla::constraints
