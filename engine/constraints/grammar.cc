#include "engine/constraints/grammar.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/constraints/grammar_fusion.h"
#include "engine/constraints/regex_cache.h"

namespace gla::constraints {

class GrammarBuilder {
 public:
  GrammarBuilder(std::string_view text, const GrammarLimits& limits) : t_(text), limits_(limits) {}

  absl::StatusOr<Grammar> Build() {
    if (t_.size() > limits_.max_grammar_bytes)
      return absl::ResourceExhaustedError(
          absl::StrCat("grammar: ", t_.size(), " bytes, over the limit of ", limits_.max_grammar_bytes));
    g_.limits_ = limits_;
    for (;;) {
      SkipSpace(/*newlines=*/true);
      if (pos_ >= t_.size()) break;
      const std::string name = Name();
      if (name.empty()) return Error("a rule name");
      SkipSpace(false);
      if (t_.substr(pos_, 3) != "::=") return Error(absl::StrCat("'::=' after '", name, "'"));
      pos_ += 3;
      absl::StatusOr<int> id = RuleId(name);
      if (!id.ok()) return id.status();
      if (defined_[*id]) return absl::InvalidArgumentError(absl::StrCat("grammar: rule '", name, "' is defined twice"));
      absl::StatusOr<std::vector<Grammar::Alternative>> alts = Alternatives(/*nested=*/false);
      if (!alts.ok()) return alts.status();
      g_.rules_[*id].alternatives = *std::move(alts);
      defined_[*id] = true;
    }
    for (size_t r = 0; r < g_.rules_.size(); ++r)
      if (!defined_[r])
        return absl::InvalidArgumentError(absl::StrCat("grammar: rule '", g_.rules_[r].name, "' is used but not defined"));
    auto root = ids_.find("root");
    if (root == ids_.end()) return absl::InvalidArgumentError("grammar: no 'root' rule (the start rule)");
    g_.root_ = root->second;
    if (limits_.fuse_regular_stretches) GrammarFusion::Fuse(g_, terminals_);
    Nullable();
    return std::move(g_);
  }

 private:
  absl::Status Error(absl::string_view wanted) const {
    return absl::InvalidArgumentError(absl::StrCat("grammar: expected ", wanted, " at offset ", pos_));
  }

  void SkipSpace(bool newlines) {
    while (pos_ < t_.size()) {
      const char c = t_[pos_];
      if (c == '#') {
        while (pos_ < t_.size() && t_[pos_] != '\n') ++pos_;
      } else if (c == ' ' || c == '\t' || c == '\r' || (newlines && c == '\n')) {
        ++pos_;
      } else if (c == '\n' && pos_ + 1 < t_.size()) {
        // A rule goes on past a newline when the next line starts with '|'.
        size_t k = pos_ + 1;
        while (k < t_.size() && (t_[k] == ' ' || t_[k] == '\t' || t_[k] == '\r')) ++k;
        if (k < t_.size() && t_[k] == '|') pos_ = k;
        else return;
      } else {
        return;
      }
    }
  }

  static bool NameChar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  }
  std::string Name() {
    const size_t start = pos_;
    while (pos_ < t_.size() && NameChar(t_[pos_])) ++pos_;
    return std::string(t_.substr(start, pos_ - start));
  }

  absl::StatusOr<int> NewRule(std::string name) {
    if (static_cast<int>(g_.rules_.size()) >= limits_.max_rules)
      return absl::ResourceExhaustedError(absl::StrCat("grammar: more than ", limits_.max_rules, " rules"));
    g_.rules_.push_back({std::move(name), {}});
    defined_.push_back(false);
    return static_cast<int>(g_.rules_.size()) - 1;
  }
  absl::StatusOr<int> RuleId(const std::string& name) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    absl::StatusOr<int> id = NewRule(name);
    if (id.ok()) ids_[name] = *id;
    return id;
  }
  // A rule of its own for a group or a repeat (defined at once).
  absl::StatusOr<int> Anonymous(std::vector<Grammar::Alternative> alts) {
    absl::StatusOr<int> id = NewRule(absl::StrCat("(", g_.rules_.size(), ")"));
    if (!id.ok()) return id;
    g_.rules_[*id].alternatives = std::move(alts);
    defined_[*id] = true;
    return id;
  }

  absl::StatusOr<Grammar::Symbol> Terminal(const std::string& pattern) {
    auto it = terminals_.find(pattern);
    if (it != terminals_.end()) return Grammar::Symbol{true, it->second};
    if (static_cast<int>(g_.terminals_.size()) >= limits_.max_terminals)
      return absl::ResourceExhaustedError(absl::StrCat("grammar: more than ", limits_.max_terminals, " terminals"));
    absl::StatusOr<std::shared_ptr<const Regex>> re = RegexCache::Shared().Compile(pattern);
    if (!re.ok())
      return absl::Status(re.status().code(), absl::StrCat("grammar at offset ", pos_, ": ", re.status().message()));
    g_.terminals_.push_back(*std::move(re));
    g_.terminal_patterns_.push_back(pattern);
    g_.terminal_hashes_.push_back(std::hash<std::string>()(pattern));
    const int index = static_cast<int>(g_.terminals_.size()) - 1;
    terminals_[pattern] = index;
    return Grammar::Symbol{true, index};
  }

  // A string literal's code points as a regex (each one \u{...}: no character is special).
  absl::StatusOr<std::string> Literal() {
    ++pos_;  // '"'
    std::string pattern;
    for (;;) {
      if (pos_ >= t_.size() || t_[pos_] == '\n') return Error("the end of a string literal");
      char c = t_[pos_++];
      if (c == '"') break;
      uint32_t cp = static_cast<uint8_t>(c);
      if (c == '\\') {
        if (pos_ >= t_.size()) return Error("an escape");
        const char e = t_[pos_++];
        int hex = 0;
        switch (e) {
          case 'n': cp = '\n'; break;
          case 'r': cp = '\r'; break;
          case 't': cp = '\t'; break;
          case '\\': case '"': case '[': case ']': cp = static_cast<uint8_t>(e); break;
          case 'x': hex = 2; break;
          case 'u': hex = 4; break;
          case 'U': hex = 8; break;
          default: return Error("a known escape (\\n \\r \\t \\\\ \\\" \\xHH \\uHHHH)");
        }
        if (hex > 0) {
          cp = 0;
          for (int i = 0; i < hex; ++i, ++pos_) {
            if (pos_ >= t_.size() || !std::isxdigit(static_cast<unsigned char>(t_[pos_]))) return Error("hex digits");
            const char h = t_[pos_];
            cp = cp * 16 + static_cast<uint32_t>(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
          }
        }
      } else if (static_cast<uint8_t>(c) >= 0x80) {  // a UTF-8 sequence: copied through as is
        pattern += c;
        while (pos_ < t_.size() && (static_cast<uint8_t>(t_[pos_]) & 0xC0) == 0x80) pattern += t_[pos_++];
        continue;
      }
      absl::StrAppendFormat(&pattern, "\\u{%x}", cp);
    }
    return pattern;
  }

  // [...] copied through to the regex dialect's class.
  // /regex/: a whole regular expression as one terminal (our extension; the regex dialect of
  // regex.h, "\/" for a slash). One automaton: the bytes inside it are single steps of the parse,
  // where the same language as rules would complete and predict items at every byte.
  absl::StatusOr<std::string> RegexTerminal() {
    const size_t start = ++pos_;
    for (; pos_ < t_.size() && t_[pos_] != '/'; ++pos_) {
      if (t_[pos_] == '\n') return Error("'/' closing the regular expression");
      if (t_[pos_] == '\\' && pos_ + 1 < t_.size()) ++pos_;
    }
    if (pos_ >= t_.size()) return Error("'/' closing the regular expression");
    std::string re;
    for (size_t i = start; i < pos_; ++i) {  // "\/" stands for "/"; every other escape is the regex's
      if (t_[i] == '\\' && i + 1 < pos_ && t_[i + 1] == '/') continue;
      re.push_back(t_[i]);
    }
    ++pos_;
    if (re.empty()) return Error("a regular expression between '/' and '/'");
    return re;
  }

  absl::StatusOr<std::string> Class() {
    const size_t start = pos_++;
    if (pos_ < t_.size() && t_[pos_] == '^') ++pos_;
    bool first = true;
    for (;;) {
      if (pos_ >= t_.size()) return Error("the end of a character class");
      const char c = t_[pos_++];
      if (c == '\\') {
        ++pos_;
      } else if (c == ']' && !first) {
        break;
      }
      first = false;
    }
    return std::string(t_.substr(start, pos_ - start));
  }

  absl::StatusOr<std::vector<Grammar::Alternative>> Alternatives(bool nested) {
    std::vector<Grammar::Alternative> alts;
    for (;;) {
      absl::StatusOr<Grammar::Alternative> seq = Sequence(nested);
      if (!seq.ok()) return seq.status();
      alts.push_back(*std::move(seq));
      SkipSpace(nested);
      if (pos_ < t_.size() && t_[pos_] == '|') {
        ++pos_;
        continue;
      }
      return alts;
    }
  }

  absl::StatusOr<Grammar::Alternative> Sequence(bool nested) {
    Grammar::Alternative seq;
    for (;;) {
      SkipSpace(nested);
      if (pos_ >= t_.size() || t_[pos_] == '|' || t_[pos_] == ')' || t_[pos_] == '\n') return seq;
      if (seq.size() > 100000) return absl::ResourceExhaustedError("grammar: a sequence of over 100,000 elements");
      const char c = t_[pos_];
      std::optional<Grammar::Symbol> element;
      if (c == '"') {
        absl::StatusOr<std::string> lit = Literal();
        if (!lit.ok()) return lit.status();
        if (!lit->empty()) {
          absl::StatusOr<Grammar::Symbol> s = Terminal(*lit);
          if (!s.ok()) return s.status();
          element = *s;
        } else {
          absl::StatusOr<int> eps = Anonymous({{}});  // "" : the empty string
          if (!eps.ok()) return eps.status();
          element = Grammar::Symbol{false, *eps};
        }
      } else if (c == '[') {
        absl::StatusOr<std::string> cls = Class();
        if (!cls.ok()) return cls.status();
        absl::StatusOr<Grammar::Symbol> s = Terminal(*cls);
        if (!s.ok()) return s.status();
        element = *s;
      } else if (c == '/') {
        const size_t at = pos_;
        absl::StatusOr<std::string> re = RegexTerminal();
        if (!re.ok()) return re.status();
        absl::StatusOr<Grammar::Symbol> s = Terminal(*re);
        if (!s.ok()) return s.status();
        const Regex& t = g_.terminal(s->index);
        if (t.start() != Regex::kDead && t.Accepting(t.start()))
          return absl::InvalidArgumentError(absl::StrCat("grammar: the regular expression at offset ", at,
                                                         " matches the empty text (make it optional with ?)"));
        element = *s;
      } else if (c == '.') {
        ++pos_;
        absl::StatusOr<Grammar::Symbol> s = Terminal("[\\s\\S]");
        if (!s.ok()) return s.status();
        element = *s;
      } else if (c == '(') {
        ++pos_;
        if (++depth_ > 100) return absl::ResourceExhaustedError("grammar: groups nested more than 100 deep");
        absl::StatusOr<std::vector<Grammar::Alternative>> inner = Alternatives(/*nested=*/true);
        --depth_;
        if (!inner.ok()) return inner.status();
        SkipSpace(true);
        if (pos_ >= t_.size() || t_[pos_] != ')') return Error("')'");
        ++pos_;
        absl::StatusOr<int> g = Anonymous(*std::move(inner));
        if (!g.ok()) return g.status();
        element = Grammar::Symbol{false, *g};
      } else if (NameChar(c)) {
        const size_t at = pos_;
        const std::string name = Name();
        // "name ::=" starts the next rule: this sequence (a rule's last line) has ended.
        size_t k = pos_;
        while (k < t_.size() && (t_[k] == ' ' || t_[k] == '\t')) ++k;
        if (!nested && t_.substr(k, 3) == "::=") {
          pos_ = at;
          return seq;
        }
        absl::StatusOr<int> id = RuleId(name);
        if (!id.ok()) return id.status();
        element = Grammar::Symbol{false, *id};
      } else {
        return Error("an element (\"...\", [...], /.../, a rule name, '(' or '.')");
      }
      absl::StatusOr<Grammar::Symbol> repeated = Repeat(*element);
      if (!repeated.ok()) return repeated.status();
      seq.push_back(*repeated);
    }
  }

  // A postfix repeat of x, as rules of their own (left-recursive: an Earley parser's best case).
  absl::StatusOr<Grammar::Symbol> Repeat(Grammar::Symbol x) {
    if (pos_ >= t_.size()) return x;
    const char c = t_[pos_];
    int min = 0, max = 0;
    if (c == '*') min = 0, max = -1;
    else if (c == '+') min = 1, max = -1;
    else if (c == '?') min = 0, max = 1;
    else if (c == '{') {
      size_t k = pos_ + 1;
      auto number = [&](int* v) {
        const size_t s = k;
        int64_t n = 0;
        while (k < t_.size() && t_[k] >= '0' && t_[k] <= '9') n = std::min<int64_t>(n * 10 + (t_[k++] - '0'), 1 << 30);
        *v = static_cast<int>(n);
        return k > s;
      };
      if (!number(&min)) return Error("a repeat count");
      max = min;
      if (k < t_.size() && t_[k] == ',') {
        ++k;
        if (!number(&max)) max = -1;
      }
      if (k >= t_.size() || t_[k] != '}') return Error("'}'");
      pos_ = k;
      if (min > limits_.max_repeat || max > limits_.max_repeat)
        return absl::ResourceExhaustedError(absl::StrCat("grammar: a repeat count over ", limits_.max_repeat));
      if (max >= 0 && max < min) return Error("a repeat range in order");
    } else {
      return x;
    }
    ++pos_;
    // The unbounded tail: T ::= T x | ""; the bounded one: O_k ::= x O_{k-1} | "".
    Grammar::Alternative body(static_cast<size_t>(min), x);
    if (max < 0) {
      absl::StatusOr<int> tail = NewRule(absl::StrCat("(", g_.rules_.size(), ")"));
      if (!tail.ok()) return tail.status();
      g_.rules_[*tail].alternatives = {{Grammar::Symbol{false, *tail}, x}, {}};
      defined_[*tail] = true;
      body.push_back({false, *tail});
    } else if (max > min) {
      absl::StatusOr<int> opt = Anonymous({{x}, {}});
      if (!opt.ok()) return opt.status();
      for (int k = min + 1; k < max; ++k) {
        opt = Anonymous({{x, Grammar::Symbol{false, *opt}}, {}});
        if (!opt.ok()) return opt.status();
      }
      body.push_back({false, *opt});
    }
    absl::StatusOr<int> r = Anonymous({std::move(body)});
    if (!r.ok()) return r.status();
    return Grammar::Symbol{false, *r};
  }

  void Nullable() {
    std::vector<bool>& n = g_.nullable_;
    n.assign(g_.rules_.size(), false);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < g_.rules_.size(); ++r) {
        if (n[r]) continue;
        for (const Grammar::Alternative& alt : g_.rules_[r].alternatives) {
          bool all = true;
          for (const Grammar::Symbol& s : alt)
            all = all && (s.terminal ? g_.terminal(s.index).start() != Regex::kDead &&
                                           g_.terminal(s.index).Accepting(g_.terminal(s.index).start())
                                     : n[s.index]);
          if (all) {
            n[r] = changed = true;
            break;
          }
        }
      }
    }
  }

  std::string_view t_;
  const GrammarLimits& limits_;
  size_t pos_ = 0;
  int depth_ = 0;
  Grammar g_;
  std::map<std::string, int> ids_, terminals_;
  std::vector<bool> defined_;
};

absl::StatusOr<Grammar> Grammar::Parse(std::string_view text, const GrammarLimits& limits) {
  return GrammarBuilder(text, limits).Build();
}

// ---- The Earley matcher

namespace {
size_t HashItem(int rule, int alt, int dot, int origin, int term_state) {
  uint64_t h = static_cast<uint32_t>(rule);
  for (int v : {alt, dot, origin, term_state}) h = (h ^ static_cast<uint32_t>(v)) * 0x9E3779B97F4A7C15ull;
  return static_cast<size_t>(h ^ (h >> 29));
}
}  // namespace

GrammarMatcher::GrammarMatcher(const Grammar& g) : g_(g) {
  Set first;
  for (size_t a = 0; a < g_.rules()[g_.root()].alternatives.size(); ++a) {
    const Grammar::Alternative& alt = g_.rules()[g_.root()].alternatives[a];
    const int ts = !alt.empty() && alt[0].terminal ? g_.terminal(alt[0].index).start() : -1;
    if (!alt.empty() && alt[0].terminal && ts == Regex::kDead) continue;
    first.push_back({g_.root(), static_cast<int>(a), 0, 0, ts});
  }
  sets_.push_back(std::move(first));
  top_ = 1;
  Close(0, sets_[0]);
}

void GrammarMatcher::BeginDedup(const Set& set) {
  // Room for the set already there at under half load (the constructor's first set holds every
  // alternative of root: a table too small for it would leave the probe below no empty slot).
  if (table_.size() < 64 || table_.size() < (set.size() + 1) * 2) {  // rare: the table only grows
    size_t need = 64;
    while (need < (set.size() + 1) * 2) need *= 2;
    table_.assign(need, 0), stamp_.assign(need, 0), generation_ = 0;
  }
  if (++generation_ == 0) {  // wrapped: every stamp is stale again
    std::fill(stamp_.begin(), stamp_.end(), 0u);
    generation_ = 1;
  }
  for (size_t i = 0; i < set.size(); ++i) {  // the items already in the set
    const Item& it = set[i];
    size_t h = HashItem(it.rule, it.alt, it.dot, it.origin, it.term_state) & (table_.size() - 1);
    while (stamp_[h] == generation_) h = (h + 1) & (table_.size() - 1);
    stamp_[h] = generation_;
    table_[h] = static_cast<uint32_t>(i + 1);
  }
}

bool GrammarMatcher::Insert(Set& set, const Item& item, bool always) {
  if ((set.size() + 1) * 2 > table_.size()) {  // keep the load under a half: grow and re-index
    table_.assign(table_.size() * 2, 0);
    stamp_.assign(table_.size(), 0);
    --generation_;  // BeginDedup steps it forward again
    BeginDedup(set);
  }
  size_t h = HashItem(item.rule, item.alt, item.dot, item.origin, item.term_state) & (table_.size() - 1);
  for (; stamp_[h] == generation_; h = (h + 1) & (table_.size() - 1))
    if (set[table_[h] - 1] == item) return false;
  if (!always && static_cast<int>(set.size()) >= g_.limits().max_items_per_set) return false;
  stamp_[h] = generation_;
  set.push_back(item);
  table_[h] = static_cast<uint32_t>(set.size());
  return true;
}

void GrammarMatcher::Close(int pos, Set& set) {
  BeginDedup(set);
  auto add = [&](int rule, int alt, int dot, int origin) {
    const Grammar::Alternative& a = g_.rules()[rule].alternatives[alt];
    int ts = -1;
    if (dot < static_cast<int>(a.size()) && a[dot].terminal) {
      ts = g_.terminal(a[dot].index).start();
      if (ts == Regex::kDead) return;  // a terminal that matches nothing
    }
    Insert(set, {rule, alt, dot, origin, ts});
  };
  for (size_t i = 0; i < set.size(); ++i) {
    const Item it = set[i];
    const Grammar::Alternative& alt = g_.rules()[it.rule].alternatives[it.alt];
    if (it.dot == static_cast<int>(alt.size())) {  // complete: advance who waited for this rule
      const Set& from = it.origin == pos ? set : sets_[it.origin];
      for (size_t j = 0; j < from.size(); ++j) {
        const Item w = from[j];
        const Grammar::Alternative& wa = g_.rules()[w.rule].alternatives[w.alt];
        if (w.dot < static_cast<int>(wa.size()) && !wa[w.dot].terminal && wa[w.dot].index == it.rule)
          add(w.rule, w.alt, w.dot + 1, w.origin);
      }
      continue;
    }
    const Grammar::Symbol s = alt[it.dot];
    if (s.terminal) continue;  // the next byte decides
    for (size_t a = 0; a < g_.rules()[s.index].alternatives.size(); ++a) add(s.index, static_cast<int>(a), 0, pos);
    if (g_.nullable()[s.index]) add(it.rule, it.alt, it.dot + 1, it.origin);  // Aycock-Horspool
  }
}

bool GrammarMatcher::Advance(uint8_t byte) {
  const int pos = top_;
  if (static_cast<int>(sets_.size()) <= pos) sets_.emplace_back();  // before any reference into sets_
  Set& next = sets_[pos];
  next.clear();
  BeginDedup(next);
  // First every terminal that goes on through the byte (kept whatever the item limit: there are
  // never more of them than items in the set before), then the ones that may end here.
  for (const Item& it : sets_[pos - 1]) {
    if (it.term_state < 0) continue;
    const Regex& t = g_.terminal(g_.rules()[it.rule].alternatives[it.alt][it.dot].index);
    const int s = t.Next(it.term_state, byte);
    if (s != Regex::kDead) Insert(next, {it.rule, it.alt, it.dot, it.origin, s}, /*always=*/true);
  }
  for (const Item& it : sets_[pos - 1]) {
    if (it.term_state < 0) continue;
    const Grammar::Alternative& alt = g_.rules()[it.rule].alternatives[it.alt];
    const Regex& t = g_.terminal(alt[it.dot].index);
    const int s = t.Next(it.term_state, byte);
    if (s == Regex::kDead || !t.Accepting(s)) continue;
    int ts = -1;
    if (it.dot + 1 < static_cast<int>(alt.size()) && alt[it.dot + 1].terminal) {
      ts = g_.terminal(alt[it.dot + 1].index).start();
      if (ts == Regex::kDead) continue;
    }
    Insert(next, {it.rule, it.alt, it.dot + 1, it.origin, ts});
  }
  if (next.empty()) return false;
  top_ = pos + 1;
  Close(pos, next);
  return true;
}

void GrammarMatcher::Rollback(int n) { top_ = std::max(1, top_ - std::max(n, 0)); }

bool GrammarMatcher::CanEnd() const {
  for (const Item& it : sets_[top_ - 1])
    if (it.rule == g_.root() && it.origin == 0 &&
        it.dot == static_cast<int>(g_.rules()[it.rule].alternatives[it.alt].size()))
      return true;
  return false;
}

TokenMask GrammarMatcher::AllowedByWalk(const TokenTrie& trie, int64_t* visited) {
  return trie.Walk([this](uint8_t b) { return Advance(b); }, [this](int n) { Rollback(n); }, visited);
}

void GrammarMatcher::WaitingTerminals(std::vector<std::pair<int, int>>* out) const {
  out->clear();
  for (const Item& it : sets_[top_ - 1]) {
    if (it.term_state < 0) continue;
    const std::pair<int, int> ts(g_.rules()[it.rule].alternatives[it.alt][it.dot].index, it.term_state);
    if (std::find(out->begin(), out->end(), ts) == out->end()) out->push_back(ts);
  }
}

TokenMask GrammarMatcher::Allowed(const TokenTrie& trie, TerminalTokensCache& cache, int64_t* visited) {
  // Every byte the parse takes next is taken by a terminal it waits at (terminal t in automaton
  // state s). A token whose bytes all keep t going is taken (the item carrying t survives every
  // byte, whatever the item limit); any other token the parse takes ends t somewhere along it and
  // goes on past where t's automaton dies, so it lies under one of t's crossing nodes. Both depend
  // on (t, s) alone, so they come from the cache, and the parser walks only the crossing paths:
  // the same mask as walking the whole trie (AllowedByWalk), at a fraction of the parser steps.
  TokenMask mask((trie.vocab_size() + 63) / 64, 0);
  WaitingTerminals(&waiting_);
  terminal_tokens_.clear();
  for (const auto& [t, s] : waiting_)
    terminal_tokens_.push_back(cache.Get(trie, g_.terminal_patterns()[t], g_.terminal_hashes()[t], g_.terminal(t), s));
  for (const auto& tt : terminal_tokens_) tt->AddInside(mask);
  // The union of the crossing paths, in preorder (duplicates: walk the whole subtree if either says so).
  const std::vector<TrieWalkNode>* nodes = &walk_nodes_;
  if (terminal_tokens_.size() == 1) {
    nodes = &terminal_tokens_[0]->crossing;
  } else {
    walk_nodes_.clear();
    for (const auto& tt : terminal_tokens_) {
      merged_.clear();
      std::merge(walk_nodes_.begin(), walk_nodes_.end(), tt->crossing.begin(), tt->crossing.end(),
                 std::back_inserter(merged_),
                 [](const TrieWalkNode& a, const TrieWalkNode& b) { return a.node < b.node; });
      walk_nodes_.clear();
      for (const TrieWalkNode& w : merged_) {
        if (!walk_nodes_.empty() && walk_nodes_.back().node == w.node) walk_nodes_.back().whole |= w.whole;
        else walk_nodes_.push_back(w);
      }
    }
  }
  int64_t walked = 0;
  trie.WalkNodes(*nodes, [this](uint8_t b) { return Advance(b); }, [this](int n) { Rollback(n); }, mask, &walked);
  if (visited != nullptr) *visited = walked;
  return mask;
}

}  // namespace gla::constraints
