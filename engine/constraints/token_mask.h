// Which tokens may come next under a byte-level constraint (issue 21): the vocabulary as a trie of
// the bytes each token stands for, walked together with the constraint's automaton, so that a
// whole subtree is skipped as soon as its prefix is a dead end. A mask is a bitset over token ids.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/constraints/regex.h"

namespace gla::constraints {

// One bit per token id (bit t of word t / 64).
using TokenMask = std::vector<uint64_t>;

inline bool Allowed(const TokenMask& m, int32_t t) { return (m[t >> 6] >> (t & 63)) & 1; }

class TokenTrie {
 public:
  // token_bytes[t]: the bytes token t adds to the text; an empty entry (control tokens) is never
  // allowed by a mask.
  explicit TokenTrie(const std::vector<std::string>& token_bytes);

  int vocab_size() const { return vocab_; }
  // The tokens whose bytes, read from `state`, keep `re` alive (some completion still matches).
  // *visited (optional): trie nodes walked, for measurements.
  TokenMask Allowed(const Regex& re, int state, int64_t* visited = nullptr) const;
  // The same walk for any matcher: down(byte) says whether the text may go on with that byte (and
  // takes it), up() gives the last byte taken back; every token whose bytes were all taken is
  // allowed. Depth first: a refused byte skips the subtree.
  template <class Down, class Up>
  TokenMask Walk(Down&& down, Up&& up, int64_t* visited = nullptr) const {
    TokenMask mask((vocab_ + 63) / 64, 0);
    int64_t walked = 0;
    std::vector<std::pair<int, bool>> stack;  // (node, leaving: give its byte back)
    for (int c = nodes_[0].first_child; c >= 0; c = nodes_[c].next_sibling) stack.emplace_back(c, false);
    while (!stack.empty()) {
      const auto [node, leaving] = stack.back();
      stack.pop_back();
      if (leaving) {
        up();
        continue;
      }
      ++walked;
      if (!down(nodes_[node].byte)) continue;
      for (int32_t t : nodes_[node].tokens) mask[t >> 6] |= uint64_t{1} << (t & 63);
      stack.emplace_back(node, true);
      for (int c = nodes_[node].first_child; c >= 0; c = nodes_[c].next_sibling) stack.emplace_back(c, false);
    }
    if (visited != nullptr) *visited = walked;
    return mask;
  }

 private:
  struct Node {
    int first_child = -1, next_sibling = -1;  // children in byte order
    uint8_t byte = 0;
    std::vector<int32_t> tokens;  // the tokens whose bytes end here
  };
  int vocab_ = 0;
  std::vector<Node> nodes_;  // [0]: the root
};

// A regex's masks, made once per automaton state on first use: for a pattern constraint the mask
// depends on the state alone, so after warm-up a token step costs one lookup (a few states carry
// most of the traffic). Not thread-safe; one per request.
class RegexMasks {
 public:
  RegexMasks(const Regex& re, const TokenTrie& trie) : re_(re), trie_(trie), masks_(re.num_states()) {}
  const TokenMask& For(int state) {
    if (masks_[state].empty()) masks_[state] = trie_.Allowed(re_, state);
    return masks_[state];
  }

 private:
  const Regex& re_;
  const TokenTrie& trie_;
  std::vector<TokenMask> masks_;  // empty: not made yet (a made mask has (vocab + 63) / 64 words)
};

}  // namespace gla::constraints
