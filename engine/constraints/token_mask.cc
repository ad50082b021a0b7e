#include "engine/constraints/token_mask.h"

#include <algorithm>
#include <atomic>
#include <utility>

namespace gla::constraints {

namespace {

std::atomic<uint64_t> next_trie_id{1};

// The trie as it is built: children linked in byte order (flattened to preorder afterwards).
struct BuildNode {
  int first_child = -1, next_sibling = -1;
  uint8_t byte = 0;
  std::vector<int32_t> tokens;
};

std::vector<BuildNode> BuildLinked(const std::vector<std::string>& token_bytes) {
  std::vector<BuildNode> nodes(1);
  for (size_t t = 0; t < token_bytes.size(); ++t) {
    const std::string& bytes = token_bytes[t];
    if (bytes.empty()) continue;
    int at = 0;
    for (char ch : bytes) {
      const uint8_t b = static_cast<uint8_t>(ch);
      // Children are kept sorted by byte; find or insert.
      int prev = -1, c = nodes[at].first_child;
      while (c >= 0 && nodes[c].byte < b) prev = c, c = nodes[c].next_sibling;
      if (c < 0 || nodes[c].byte != b) {
        BuildNode n;
        n.byte = b;
        n.next_sibling = c;
        nodes.push_back(std::move(n));
        const int id = static_cast<int>(nodes.size()) - 1;
        if (prev < 0) nodes[at].first_child = id;
        else nodes[prev].next_sibling = id;
        c = id;
      }
      at = c;
    }
    nodes[at].tokens.push_back(static_cast<int32_t>(t));
  }
  return nodes;
}

}  // namespace

TokenTrie::TokenTrie(const std::vector<std::string>& token_bytes)
    : vocab_(static_cast<int>(token_bytes.size())), id_(next_trie_id.fetch_add(1)) {
  const std::vector<BuildNode> linked = BuildLinked(token_bytes);
  const size_t n = linked.size();
  byte_.reserve(n), depth_.reserve(n), end_.reserve(n), parent_.reserve(n), token_begin_.reserve(n + 1);
  // Preorder by an explicit stack (a token may be long: no recursion). A node's end is known when
  // the walk leaves it: a (linked id, preorder id) frame per level.
  std::vector<std::pair<int, int>> path;  // (linked id, preorder id) of the nodes above the next one
  auto enter = [&](int linked_id, int depth, int parent) {
    const int id = static_cast<int>(byte_.size());
    byte_.push_back(linked[linked_id].byte);
    depth_.push_back(depth);
    end_.push_back(0);
    parent_.push_back(parent);
    token_begin_.push_back(static_cast<int32_t>(tokens_.size()));
    tokens_.insert(tokens_.end(), linked[linked_id].tokens.begin(), linked[linked_id].tokens.end());
    path.emplace_back(linked_id, id);
  };
  enter(0, 0, -1);
  int next = linked[0].first_child;
  while (!path.empty()) {
    if (next >= 0) {  // go down to the next child
      enter(next, static_cast<int>(path.size()), path.back().second);
      next = linked[path.back().first].first_child;
      continue;
    }
    // No child left: close this node and go on with its next sibling.
    const auto [linked_id, id] = path.back();
    path.pop_back();
    end_[id] = static_cast<int32_t>(byte_.size());
    next = linked[linked_id].next_sibling;
    if (path.empty()) next = -1;  // the root has no siblings
  }
  token_begin_.push_back(static_cast<int32_t>(tokens_.size()));
  for (int32_t d : depth_) max_depth_ = std::max(max_depth_, static_cast<int>(d));
  below_.assign(n, {0, 0, 0, 0});
  for (size_t c = n; c-- > 1;) {  // children come after their parent in preorder
    std::array<uint64_t, 4>& up = below_[parent_[c]];
    for (int w = 0; w < 4; ++w) up[w] |= below_[c][w];
    up[byte_[c] >> 6] |= uint64_t{1} << (byte_[c] & 63);
  }
}

TokenMask TokenTrie::Allowed(const Regex& re, int state, int64_t* visited) const {
  TokenMask mask((vocab_ + 63) / 64, 0);
  if (state == Regex::kDead) return mask;
  // Preorder over the nodes with the automaton state of each depth on the path; a dead state
  // skips the subtree.
  std::vector<int> states(max_depth_ + 1, state);
  int64_t walked = 0;
  for (int n = 1; n < num_nodes();) {
    const int d = depth_[n];
    ++walked;
    const int s = re.Next(states[d - 1], byte_[n]);
    if (s == Regex::kDead) {
      n = end_[n];
      continue;
    }
    states[d] = s;
    AddTokens(n, mask);
    const std::array<uint64_t, 4>* keep = re.SelfLoops(s);
    if (keep != nullptr && BelowWithin(n, *keep)) {  // the automaton stays in s all the way down
      AddTokensBelow(n, mask);
      n = end_[n];
      continue;
    }
    ++n;
  }
  if (visited != nullptr) *visited = walked;
  return mask;
}

TerminalTokens TokenTrie::Terminal(const Regex& re, int state) const {
  TerminalTokens out;
  TokenMask inside((vocab_ + 63) / 64, 0);
  if (state != Regex::kDead) {
    // Per depth on the path: the node, the automaton state, and whether the terminal could have
    // ended at some node of the path so far (then a byte it refuses may still be taken by what
    // follows: the node is a crossing, walked whole by the parser, and the path down to it is
    // written out first, in preorder: `written` is how deep the current path is already out).
    // O(nodes visited): a terminal that dies after a few bytes costs a few steps, not the trie.
    std::vector<int32_t> path(max_depth_ + 1, 0), states(max_depth_ + 1, state);
    std::vector<uint8_t> could_end(max_depth_ + 1, 0);
    int written = 0;
    const int nodes = num_nodes();
    for (int n = 1; n < nodes;) {
      const int d = depth_[n];
      written = std::min(written, d - 1);
      const int s = re.Next(states[d - 1], byte_[n]);
      if (s == Regex::kDead) {
        if (could_end[d - 1]) {
          for (int k = written + 1; k < d; ++k) out.crossing.push_back({path[k], false});
          written = d - 1;
          out.crossing.push_back({n, true});
        }
        n = end_[n];
        continue;
      }
      path[d] = n;
      states[d] = s;
      could_end[d] = could_end[d - 1] | static_cast<uint8_t>(re.Accepting(s));
      AddTokens(n, inside);
      const std::array<uint64_t, 4>* keep = re.SelfLoops(s);
      if (keep != nullptr && BelowWithin(n, *keep)) {  // stays in s below: all inside, nothing crosses
        AddTokensBelow(n, inside);
        n = end_[n];
        continue;
      }
      ++n;
    }
  }
  size_t count = 0;
  for (uint64_t w : inside) count += static_cast<size_t>(__builtin_popcountll(w));
  if (count <= inside.size()) {  // sparse: the ids take less room and less time to add
    for (size_t w = 0; w < inside.size(); ++w)
      for (uint64_t bits = inside[w]; bits != 0; bits &= bits - 1)
        out.inside_ids.push_back(static_cast<int32_t>(w * 64 + __builtin_ctzll(bits)));
  } else {
    out.inside_bits = std::move(inside);
  }
  return out;
}

void TerminalTokens::AddInside(TokenMask& mask) const {
  for (size_t w = 0; w < inside_bits.size(); ++w) mask[w] |= inside_bits[w];
  for (int32_t t : inside_ids) mask[t >> 6] |= uint64_t{1} << (t & 63);
}

size_t TerminalTokens::bytes() const {
  return sizeof(*this) + inside_bits.size() * sizeof(uint64_t) + inside_ids.size() * sizeof(int32_t) +
         crossing.size() * sizeof(TrieWalkNode);
}

// ---- TerminalTokensCache

TerminalTokensCache& TerminalTokensCache::Shared() {
  static TerminalTokensCache* cache = new TerminalTokensCache();  // never destroyed: threads may outlive main
  return *cache;
}

size_t TerminalTokensCache::KeyHash::operator()(const Key& k) const {
  uint64_t h = k.trie * 0x9E3779B97F4A7C15ull;
  h = (h ^ k.pattern_hash) * 0x9E3779B97F4A7C15ull;
  h = (h ^ static_cast<uint32_t>(k.state)) * 0x9E3779B97F4A7C15ull;
  return static_cast<size_t>(h ^ (h >> 29));
}

std::shared_ptr<const TerminalTokens> TerminalTokensCache::Get(const TokenTrie& trie, const std::string& pattern,
                                                               uint64_t pattern_hash, const Regex& re, int state) {
  const Key key{trie.id(), pattern_hash, state};
  auto find = [&]() -> std::shared_ptr<const TerminalTokens> {
    auto [first, last] = index_.equal_range(key);
    for (auto it = first; it != last; ++it)
      if (*it->second->pattern == pattern) {
        lru_.splice(lru_.begin(), lru_, it->second);
        return it->second->tokens;
      }
    return nullptr;
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto found = find()) {
      ++hits_;
      return found;
    }
    ++misses_;
  }
  // Made outside the lock: a walk of the whole trie, which other threads' lookups need not wait for.
  auto made = std::make_shared<const TerminalTokens>(trie.Terminal(re, state));
  std::lock_guard<std::mutex> lock(mu_);
  if (auto found = find()) return found;  // made meanwhile by another thread
  auto [interned, added] = patterns_.try_emplace(pattern, 0);
  ++interned->second;
  if (added) bytes_ += pattern.size();
  lru_.push_front({key, &interned->first, made});
  index_.emplace(key, lru_.begin());
  bytes_ += made->bytes();
  while (bytes_ > capacity_ && lru_.size() > 1) {  // the newest stays, whatever its size
    const Entry& old = lru_.back();
    auto [first, last] = index_.equal_range(old.key);
    for (auto it = first; it != last; ++it)
      if (it->second == std::prev(lru_.end())) {
        index_.erase(it);
        break;
      }
    bytes_ -= old.tokens->bytes();
    if (auto p = patterns_.find(*old.pattern); --p->second == 0) {
      bytes_ -= p->first.size();
      patterns_.erase(p);
    }
    lru_.pop_back();
  }
  return made;
}

TerminalTokensCache::Stats TerminalTokensCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {hits_, misses_, lru_.size(), bytes_};
}

}  // namespace gla::constraints
