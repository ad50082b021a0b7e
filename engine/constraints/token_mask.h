// Which tokens may come next under a byte-level constraint (issue 21): the vocabulary as a trie of
// the bytes each token stands for, walked together with the constraint's automaton, so that a
// whole subtree is skipped as soon as its prefix is a dead end. A mask is a bitset over token ids.
#pragma once

#include <array>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/constraints/regex.h"

namespace gla::constraints {

// One bit per token id (bit t of word t / 64).
using TokenMask = std::vector<uint64_t>;

inline bool Allowed(const TokenMask& m, int32_t t) { return (m[t >> 6] >> (t & 63)) & 1; }

// A trie node a walk must visit; `whole`: and every node below it.
struct TrieWalkNode {
  int32_t node = 0;
  bool whole = false;
  bool operator==(const TrieWalkNode& o) const { return node == o.node && whole == o.whole; }
};

// What one terminal automaton, waiting in one state, says about every token (TokenTrie::Terminal).
// Wherever a parse waits at that terminal in that state, the `inside` tokens are allowed whatever
// else the parse holds (their bytes keep the terminal going); a token the parse takes otherwise
// must end the terminal on the way, so it lies under a node in `crossing` (the subtrees below the
// nodes where the terminal could end and the automaton then dies), which a parser walks.
struct TerminalTokens {
  // Tokens whose bytes all keep the automaton alive: a bitset of vocab words, or (when fewer tokens
  // than words) their ids.
  std::vector<uint64_t> inside_bits;
  std::vector<int32_t> inside_ids;
  // In preorder, closed under ancestors: the paths down to the nodes whose automaton state died
  // after the terminal could have ended (`whole`: the parser walks all of its subtree).
  std::vector<TrieWalkNode> crossing;

  void AddInside(TokenMask& mask) const;
  size_t bytes() const;
};

class TokenTrie {
 public:
  // token_bytes[t]: the bytes token t adds to the text; an empty entry (control tokens) is never
  // allowed by a mask.
  explicit TokenTrie(const std::vector<std::string>& token_bytes);

  int vocab_size() const { return vocab_; }
  int num_nodes() const { return static_cast<int>(byte_.size()); }
  // Different for every trie built (a copy keeps it: the same nodes): what caches key on, where an
  // address could be reused by the next trie.
  uint64_t id() const { return id_; }
  // The tokens whose bytes, read from `state`, keep `re` alive (some completion still matches).
  // *visited (optional): trie nodes walked, for measurements.
  TokenMask Allowed(const Regex& re, int state, int64_t* visited = nullptr) const;
  // The terminal `re` waiting in `state`, for every token (see TerminalTokens).
  TerminalTokens Terminal(const Regex& re, int state) const;

  // The same walk for any matcher: down(byte) says whether the text may go on with that byte (and
  // takes it), up(n) gives the last n bytes taken back; every token whose bytes were all taken is
  // allowed. Depth first: a refused byte skips the subtree.
  template <class Down, class Up>
  TokenMask Walk(Down&& down, Up&& up, int64_t* visited = nullptr) const {
    TokenMask mask((vocab_ + 63) / 64, 0);
    int64_t walked = 0;
    WalkRange(1, num_nodes(), 0, down, up, mask, walked);
    if (visited != nullptr) *visited = walked;
    return mask;
  }
  // The walk over only these nodes (preorder, closed under ancestors), adding what it allows to
  // *mask: the parser's share of a mask whose terminals' inside tokens came from a cache.
  template <class Down, class Up>
  void WalkNodes(const std::vector<TrieWalkNode>& nodes, Down&& down, Up&& up, TokenMask& mask,
                 int64_t* walked) const {
    int taken = 0;       // depth of the node whose byte was taken last
    int skip_until = 0;  // nodes below a refused or wholly walked node are done
    for (const TrieWalkNode& w : nodes) {
      if (w.node < skip_until) continue;
      const int d = depth_[w.node];
      if (taken >= d) up(taken - d + 1), taken = d - 1;  // back to the parent (taken: an ancestor)
      ++*walked;
      if (!down(byte_[w.node])) {
        skip_until = end_[w.node];
        continue;
      }
      taken = d;
      AddTokens(w.node, mask);
      if (w.whole) {
        WalkRange(w.node + 1, end_[w.node], d, down, up, mask, *walked);
        skip_until = end_[w.node];
      }
    }
    if (taken > 0) up(taken);
  }

 private:
  // Nodes [begin, end) of one subtree's preorder, below a node of depth `base` whose byte is taken.
  template <class Down, class Up>
  void WalkRange(int begin, int end, int base, Down& down, Up& up, TokenMask& mask, int64_t& walked) const {
    int taken = base;
    for (int n = begin; n < end;) {
      const int d = depth_[n];
      if (taken >= d) up(taken - d + 1), taken = d - 1;
      ++walked;
      if (!down(byte_[n])) {
        n = end_[n];
        continue;
      }
      taken = d;
      AddTokens(n, mask);
      ++n;
    }
    if (taken > base) up(taken - base);
  }
  void AddTokens(int node, TokenMask& mask) const {
    for (int32_t i = token_begin_[node]; i < token_begin_[node + 1]; ++i)
      mask[tokens_[i] >> 6] |= uint64_t{1} << (tokens_[i] & 63);
  }
  // Whether every byte below `node` is in `bytes` (a 256-bit set), and the node has children.
  bool BelowWithin(int node, const std::array<uint64_t, 4>& bytes) const {
    const std::array<uint64_t, 4>& b = below_[node];
    return end_[node] > node + 1 &&
           ((b[0] & ~bytes[0]) | (b[1] & ~bytes[1]) | (b[2] & ~bytes[2]) | (b[3] & ~bytes[3])) == 0;
  }
  // The tokens of the nodes strictly below `node` (a subtree's tokens are contiguous in preorder).
  void AddTokensBelow(int node, TokenMask& mask) const {
    for (int32_t i = token_begin_[node + 1]; i < token_begin_[end_[node]]; ++i)
      mask[tokens_[i] >> 6] |= uint64_t{1} << (tokens_[i] & 63);
  }

  int vocab_ = 0;
  int max_depth_ = 0;  // the longest token's bytes
  uint64_t id_ = 0;
  // Nodes numbered in preorder, children in byte order; [0] is the root (the empty text). Node n's
  // subtree is [n, end_[n]), its first child (if any) n + 1, the next sibling of a child c end_[c]:
  // a walk is a loop over an array, and skipping a subtree is one jump.
  std::vector<uint8_t> byte_;
  std::vector<int32_t> depth_, end_, parent_;
  std::vector<int32_t> token_begin_;  // [nodes + 1]: node n's tokens are tokens_[token_begin_[n] ..)
  // The bytes strictly below each node (256 bits). A walk in an automaton state that every one of
  // them keeps (a JSON string's body: any character but a quote, a backslash or a control) takes
  // the whole subtree at once instead of a step per node: most of a vocabulary, inside a string.
  std::vector<std::array<uint64_t, 4>> below_;
  std::vector<int32_t> tokens_;
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

// TerminalTokens by (trie, terminal pattern, automaton state), made on first use and shared by every
// matcher of every grammar (a JSON string or number is the same terminal in every schema), least
// recently used dropped past a byte budget. Thread-safe: masks of several sequences are made on
// several threads; an entry is immutable once made (made outside the lock: two threads may make
// the same one, the first kept).
class TerminalTokensCache {
 public:
  explicit TerminalTokensCache(size_t capacity_bytes = size_t{256} << 20) : capacity_(capacity_bytes) {}
  // The process's cache (GrammarMatcher::Allowed's default).
  static TerminalTokensCache& Shared();

  // `re` must be Regex::Compile(pattern); pattern_hash: std::hash of it (callers keep it).
  std::shared_ptr<const TerminalTokens> Get(const TokenTrie& trie, const std::string& pattern, uint64_t pattern_hash,
                                            const Regex& re, int state);
  struct Stats {
    int64_t hits = 0, misses = 0;
    size_t entries = 0, bytes = 0;
  };
  Stats stats() const;

 private:
  struct Key {
    uint64_t trie, pattern_hash;
    int state;
    bool operator==(const Key& o) const { return trie == o.trie && pattern_hash == o.pattern_hash && state == o.state; }
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };
  struct Entry {
    Key key;
    // Compared on a hit: a hash collision must not hand out another's tokens. Interned in
    // patterns_ (a fused terminal's pattern runs to kilobytes and has an entry per state).
    const std::string* pattern;
    std::shared_ptr<const TerminalTokens> tokens;
  };
  const size_t capacity_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recent first
  std::unordered_multimap<Key, std::list<Entry>::iterator, KeyHash> index_;
  std::unordered_map<std::string, int> patterns_;  // the entries' patterns, each with its entry count
  size_t bytes_ = 0;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace gla::constraints
