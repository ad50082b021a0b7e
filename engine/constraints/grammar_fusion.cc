#include "engine/constraints/grammar_fusion.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/constraints/grammar.h"
#include "engine/constraints/regex.h"
#include "engine/constraints/regex_cache.h"
#include "engine/constraints/regex_composition.h"

namespace gla::constraints {

namespace {

class Fusion {
 public:
  Fusion(Grammar& g, std::vector<Grammar::Rule>& rules, std::vector<std::shared_ptr<const Regex>>& terminals,
         std::vector<std::string>& patterns, std::vector<uint64_t>& hashes, std::map<std::string, int>& index)
      : g_(g), rules_(rules), terminals_(terminals), patterns_(patterns), hashes_(hashes), index_(index),
        state_(rules.size(), kUnknown), regex_(rules.size()), nodes_(rules.size(), 0) {}

  // Top down from the root: a rule is rewritten only where the parse can still reach it (one that
  // is now only inside a fused terminal is left alone: fusing its own stretches would compile
  // automata nothing uses).
  void Run(int root) {
    for (size_t r = 0; r < rules_.size(); ++r) Regular(static_cast<int>(r), 0);
    std::vector<bool> reached(rules_.size(), false);
    std::vector<int> todo = {root};
    reached[root] = true;
    while (!todo.empty()) {
      const int r = todo.back();
      todo.pop_back();
      for (Grammar::Alternative& alt : rules_[r].alternatives) {
        FuseAlternative(alt);
        for (const Grammar::Symbol& s : alt)
          if (!s.terminal && !reached[s.index]) reached[s.index] = true, todo.push_back(s.index);
      }
    }
  }

 private:
  enum State : int8_t { kUnknown, kVisiting, kRegular, kNotRegular };

  // Whether rule r derives a regular language by itself: every alternative made of terminals and
  // regular rules, no cycle but the repeat tail `T ::= T x | ""` (x*). Its pattern goes to
  // regex_[r] ("" for a rule that derives only the empty text), the size of its composition to
  // nodes_[r].
  bool Regular(int r, int depth) {
    if (state_[r] == kRegular) return true;
    if (state_[r] != kUnknown || depth > 64) return false;  // a cycle (or too deep to be worth it)
    state_[r] = kVisiting;
    const std::vector<Grammar::Alternative>& alts = rules_[r].alternatives;
    std::string out;
    int64_t nodes = 1;
    bool ok = true;
    if (StarTail(r)) {
      std::string body;
      ++nodes;
      for (size_t k = 1; ok && k < alts[0].size(); ++k) ok = Append(alts[0][k], depth, &body, &nodes);
      if (!body.empty()) out = absl::StrCat("(?:", body, ")*");
    } else {
      std::vector<std::string> parts;
      bool empty = false;
      for (size_t a = 0; ok && a < alts.size(); ++a) {
        std::string seq;
        ++nodes;
        for (const Grammar::Symbol& s : alts[a]) ok = ok && Append(s, depth, &seq, &nodes);
        if (seq.empty()) empty = true;
        else parts.push_back(std::move(seq));
      }
      if (!parts.empty()) out = absl::StrCat("(?:", absl::StrJoin(parts, "|"), ")", empty ? "?" : "");
    }
    if (!ok || out.size() > GrammarFusion::kMaxFusedPatternBytes ||
        key_bytes_ + out.size() > GrammarFusion::kMaxFusedBytesPerGrammar) {
      state_[r] = kNotRegular;
      return false;
    }
    key_bytes_ += out.size();
    regex_[r] = std::move(out);
    nodes_[r] = nodes;
    state_[r] = kRegular;
    return true;
  }

  // s's pattern appended to *out and its composition's size added to *nodes; false when s is not
  // regular or the pattern grows too long.
  bool Append(const Grammar::Symbol& s, int depth, std::string* out, int64_t* nodes) {
    if (s.terminal) {
      absl::StrAppend(out, "(?:", patterns_[s.index], ")");
      *nodes += Weight(s.index);
    } else {
      if (!Regular(s.index, depth + 1)) return false;
      absl::StrAppend(out, regex_[s.index]);
      *nodes = std::min<int64_t>(*nodes + nodes_[s.index], int64_t{1} << 40);
    }
    return out->size() <= GrammarFusion::kMaxFusedPatternBytes;
  }

  bool Fusible(const Grammar::Symbol& s) const { return s.terminal || state_[s.index] == kRegular; }
  // What a symbol adds to a composition: its nodes and its terminals' automaton states (about the
  // states the fused automaton gets from it: a sequence's automaton is about the sum of its
  // parts'). Chunks are bounded by it, so that a composition rarely fails at the state limit
  // after it was built.
  int64_t Nodes(const Grammar::Symbol& s) const { return s.terminal ? Weight(s.index) : nodes_[s.index]; }
  int64_t Weight(int terminal) const { return 1 + terminals_[terminal]->num_states(); }

  // Each maximal stretch of fusible symbols, in chunks whose compositions stay within
  // kMaxFusedWeight, replaced by one terminal per chunk (a lone terminal stays as it is).
  void FuseAlternative(Grammar::Alternative& alt) {
    Grammar::Alternative out;
    bool changed = false;
    for (size_t i = 0; i < alt.size();) {
      if (!Fusible(alt[i])) {
        out.push_back(alt[i++]);
        continue;
      }
      size_t j = i + 1;
      for (int64_t nodes = Nodes(alt[i]); j < alt.size() && Fusible(alt[j]); ++j) {
        nodes += Nodes(alt[j]);
        if (nodes > GrammarFusion::kMaxFusedWeight) break;
      }
      changed |= FuseChunk(alt, i, j, out);
      i = j;
    }
    if (changed) alt = std::move(out);
  }

  // alt[i, j) as one terminal, or (when its automaton is too large) as two halves fused apart,
  // appended to *out; whether anything was fused.
  bool FuseChunk(const Grammar::Alternative& alt, size_t i, size_t j, Grammar::Alternative& out) {
    const bool lone_terminal = j == i + 1 && alt[i].terminal;
    const int fused = lone_terminal || Nodes(alt[i]) > GrammarFusion::kMaxFusedWeight ? -1 : FusedTerminal(alt, i, j);
    if (fused >= 0) {
      out.push_back({true, fused});
      return true;
    }
    if (j - i == 1) {
      out.push_back(alt[i]);
      return false;
    }
    const size_t half = i + (j - i) / 2;
    const bool left = FuseChunk(alt, i, half, out);
    const bool right = FuseChunk(alt, half, j, out);
    return left || right;
  }

  // The terminal for alt[i, j), made if new; -1 when the stretch stays as it is. Its pattern is
  // the stretch's written out (the key TerminalTokensCache shares it by); its automaton is composed
  // from the terminals' own (RegexComposition), never compiled from that text.
  int FusedTerminal(const Grammar::Alternative& alt, size_t i, size_t j) {
    std::string pattern;
    int64_t nodes = 0;
    for (size_t k = i; k < j; ++k)
      if (!Append(alt[k], 0, &pattern, &nodes)) return -1;
    if (pattern.empty()) return -1;
    auto it = index_.find(pattern);
    if (it != index_.end()) return it->second;
    if (static_cast<int>(terminals_.size()) >= g_.limits().max_terminals) return -1;
    // Keys and automata in proportion to the grammar: past the budget, stretches stay as written.
    if (key_bytes_ + pattern.size() > GrammarFusion::kMaxFusedBytesPerGrammar) return -1;
    key_bytes_ += pattern.size();
    // Made once per process for a stretch's text (RegexCache; the text names the language).
    std::shared_ptr<const Regex> re = RegexCache::Shared().Find(pattern);
    if (re == nullptr) {
      RegexComposition composition;
      std::vector<int> parts;
      for (size_t k = i; k < j; ++k) parts.push_back(Expand(alt[k], composition));
      RegexLimits limits;
      limits.max_dfa_states = GrammarFusion::kMaxFusedDfaStates;
      absl::StatusOr<Regex> built = composition.Build(composition.Sequence(std::move(parts)), limits);
      if (!built.ok()) return -1;  // too large: split, or left as it is
      re = RegexCache::Shared().Put(pattern, std::make_shared<const Regex>(*std::move(built)));
    }
    // A stretch that matches the empty text stays a sequence of optional parts.
    if (re->start() == Regex::kDead || re->Accepting(re->start())) return -1;
    terminals_.push_back(std::move(re));
    patterns_.push_back(pattern);
    hashes_.push_back(std::hash<std::string>()(pattern));
    const int index = static_cast<int>(terminals_.size()) - 1;
    index_.emplace(std::move(pattern), index);
    return index;
  }

  // s (regular) as nodes of c, fresh ones for every use: a composition is a tree. Its size was
  // counted by Regular (nodes_), so the chunk's bound holds.
  int Expand(const Grammar::Symbol& s, RegexComposition& c) {
    if (s.terminal) return c.Atom(terminals_[s.index].get());
    const std::vector<Grammar::Alternative>& alts = rules_[s.index].alternatives;
    auto sequence = [&](const Grammar::Alternative& alt, size_t from) {
      std::vector<int> parts;
      for (size_t k = from; k < alt.size(); ++k) parts.push_back(Expand(alt[k], c));
      return c.Sequence(std::move(parts));
    };
    if (StarTail(s.index)) return c.Star(sequence(alts[0], 1));
    std::vector<int> options;
    bool empty = false;
    for (const Grammar::Alternative& alt : alts) {
      if (alt.empty()) empty = true;
      else options.push_back(sequence(alt, 0));
    }
    return c.Alternatives(std::move(options), empty);
  }

  // T ::= T x | "" (how a repeat is written): x*.
  bool StarTail(int r) const {
    const std::vector<Grammar::Alternative>& alts = rules_[r].alternatives;
    return alts.size() == 2 && alts[1].empty() && !alts[0].empty() && !alts[0][0].terminal && alts[0][0].index == r;
  }

  Grammar& g_;
  std::vector<Grammar::Rule>& rules_;
  std::vector<std::shared_ptr<const Regex>>& terminals_;
  std::vector<std::string>& patterns_;
  std::vector<uint64_t>& hashes_;
  std::map<std::string, int>& index_;
  std::vector<State> state_;
  std::vector<std::string> regex_;
  std::vector<int64_t> nodes_;  // a regular rule's composition size (Nodes)
  size_t key_bytes_ = 0;        // the rules' patterns and the fused terminals' keys made so far
};

}  // namespace

void GrammarFusion::Fuse(Grammar& g, std::map<std::string, int>& terminal_index) {
  Fusion(g, g.rules_, g.terminals_, g.terminal_patterns_, g.terminal_hashes_, terminal_index).Run(g.root_);
}

}  // namespace gla::constraints
