#include "engine/constraints/token_mask.h"

#include <utility>

namespace gla::constraints {

TokenTrie::TokenTrie(const std::vector<std::string>& token_bytes) : vocab_(static_cast<int>(token_bytes.size())) {
  nodes_.emplace_back();
  for (size_t t = 0; t < token_bytes.size(); ++t) {
    const std::string& bytes = token_bytes[t];
    if (bytes.empty()) continue;
    int at = 0;
    for (char ch : bytes) {
      const uint8_t b = static_cast<uint8_t>(ch);
      // Children are kept sorted by byte; find or insert.
      int prev = -1, c = nodes_[at].first_child;
      while (c >= 0 && nodes_[c].byte < b) prev = c, c = nodes_[c].next_sibling;
      if (c < 0 || nodes_[c].byte != b) {
        Node n;
        n.byte = b;
        n.next_sibling = c;
        nodes_.push_back(std::move(n));
        const int id = static_cast<int>(nodes_.size()) - 1;
        if (prev < 0) nodes_[at].first_child = id;
        else nodes_[prev].next_sibling = id;
        c = id;
      }
      at = c;
    }
    nodes_[at].tokens.push_back(static_cast<int32_t>(t));
  }
}

TokenMask TokenTrie::Allowed(const Regex& re, int state, int64_t* visited) const {
  TokenMask mask((vocab_ + 63) / 64, 0);
  if (state == Regex::kDead) return mask;
  // Depth-first over (trie node, automaton state); a dead state prunes the subtree.
  std::vector<std::pair<int, int>> stack;
  for (int c = nodes_[0].first_child; c >= 0; c = nodes_[c].next_sibling) stack.emplace_back(c, state);
  int64_t walked = 0;
  while (!stack.empty()) {
    const auto [node, from] = stack.back();
    stack.pop_back();
    ++walked;
    const int s = re.Next(from, nodes_[node].byte);
    if (s == Regex::kDead) continue;
    for (int32_t t : nodes_[node].tokens) mask[t >> 6] |= uint64_t{1} << (t & 63);
    for (int c = nodes_[node].first_child; c >= 0; c = nodes_[c].next_sibling) stack.emplace_back(c, s);
  }
  if (visited != nullptr) *visited = walked;
  return mask;
}

}  // namespace gla::constraints
