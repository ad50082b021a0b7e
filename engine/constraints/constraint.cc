#include "engine/constraints/constraint.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/constraints/json_schema.h"

namespace gla::constraints {

ConstraintVocabulary::ConstraintVocabulary(TokenBytes tokens)
    : tokens_(std::move(tokens)), trie_(tokens_.bytes), start_trie_(tokens_.at_start) {}

TokenMask Matcher::Allowed(const ConstraintVocabulary& vocab, bool at_start) {
  TokenMask mask = Walk(vocab, at_start);
  if (at_start && invisible_taken_ == 0)
    for (int32_t t : vocab.invisible_at_start()) mask[t >> 6] |= uint64_t{1} << (t & 63);
  return mask;
}

class RegexMatcher : public Matcher {
 public:
  explicit RegexMatcher(const Constraint& c) : c_(c), re_(*c.regex_), state_(re_.start()) {}
  bool Take(std::string_view bytes) override {
    int s = state_;
    for (char ch : bytes) {
      if (s == Regex::kDead) return false;
      s = re_.Next(s, static_cast<uint8_t>(ch));
    }
    if (s == Regex::kDead) return false;
    state_ = s;
    return true;
  }
  bool CanEnd() const override { return state_ != Regex::kDead && re_.Accepting(state_); }
  bool Continues() override {
    for (int b = 0; b < 256 && state_ != Regex::kDead; ++b)
      if (re_.Next(state_, static_cast<uint8_t>(b)) != Regex::kDead) return true;
    return false;
  }
  TokenMask Walk(const ConstraintVocabulary& vocab, bool at_start) override {
    std::lock_guard<std::mutex> lock(c_.masks_mu_);
    if (c_.masks_vocab_ != &vocab) {  // another tokenizer (tests): start over
      c_.masks_.clear();
      c_.masks_vocab_ = &vocab;
    }
    auto& m = c_.masks_[int64_t{state_} * 2 + (at_start ? 1 : 0)];
    if (m == nullptr) m = std::make_shared<const TokenMask>(vocab.trie(at_start).Allowed(re_, state_));
    return *m;
  }
  std::unique_ptr<Matcher> Clone() const override { return std::make_unique<RegexMatcher>(*this); }

 private:
  const Constraint& c_;
  const Regex& re_;
  int state_;
};

namespace {

class GrammarConstraintMatcher : public Matcher {
 public:
  explicit GrammarConstraintMatcher(const Grammar& g) : m_(g) {}
  bool Take(std::string_view bytes) override {
    int taken = 0;
    for (char ch : bytes) {
      if (!m_.Advance(static_cast<uint8_t>(ch))) {
        m_.Rollback(taken);
        return false;
      }
      ++taken;
    }
    return true;
  }
  bool CanEnd() const override { return m_.CanEnd(); }
  bool Continues() override {
    // Printable ASCII first: where the text may go on, one of them nearly always does, so the
    // check (once per constrained sequence per step, on the scheduler thread) stops after a few.
    for (int i = 0; i < 256; ++i) {
      const uint8_t b = static_cast<uint8_t>((i + 0x20) & 0xff);
      if (m_.Advance(b)) {
        m_.Rollback(1);
        return true;
      }
    }
    return false;
  }
  TokenMask Walk(const ConstraintVocabulary& vocab, bool at_start) override {
    return m_.Allowed(vocab.trie(at_start));
  }
  std::unique_ptr<Matcher> Clone() const override { return std::make_unique<GrammarConstraintMatcher>(*this); }

 private:
  GrammarMatcher m_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const Constraint>> Constraint::Compile(Kind kind, std::string_view text) {
  std::shared_ptr<Constraint> c(new Constraint());
  c->kind_ = kind;
  switch (kind) {
    case Kind::kRegex: {
      auto re = Regex::Compile(text);
      if (!re.ok()) return re.status();
      if (re->start() == Regex::kDead) return absl::InvalidArgumentError("the pattern matches no text");
      c->regex_ = std::move(*re);
      break;
    }
    case Kind::kGrammar: {
      auto g = Grammar::Parse(text);
      if (!g.ok()) return g.status();
      c->grammar_ = std::move(*g);
      break;
    }
    case Kind::kJsonSchema:
    case Kind::kJsonObject: {
      auto gbnf = JsonSchemaToGbnf(kind == Kind::kJsonObject ? std::string_view(R"({"type": "object"})") : text);
      if (!gbnf.ok()) return gbnf.status();
      auto g = Grammar::Parse(*gbnf);
      if (!g.ok() && g.status().code() == absl::StatusCode::kResourceExhausted)
        return absl::ResourceExhaustedError(absl::StrCat("the schema is too large: ", g.status().message()));
      if (!g.ok()) return absl::InternalError(absl::StrCat("the schema's grammar did not parse: ", g.status().message()));
      c->grammar_ = std::move(*g);
      break;
    }
  }
  // A constraint whose whole language is the empty text would end every output before it began.
  std::unique_ptr<Matcher> m = c->Start();
  bool goes_on = false;
  for (int b = 0; b < 256 && !goes_on; ++b) goes_on = m->Clone()->Advance(std::string(1, static_cast<char>(b)));
  if (!goes_on) return absl::InvalidArgumentError("the constraint allows only the empty text");
  return std::shared_ptr<const Constraint>(std::move(c));
}

std::unique_ptr<Matcher> Constraint::Start() const {
  if (regex_) return std::make_unique<RegexMatcher>(*this);
  return std::make_unique<GrammarConstraintMatcher>(*grammar_);
}

absl::StatusOr<std::shared_ptr<const Constraint>> ConstraintCache::Get(Constraint::Kind kind, std::string_view text) {
  Key key(static_cast<int>(kind), std::string(text));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = index_.find(key); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      ++hits_;
      return it->second->second;
    }
  }
  // Compiled outside the lock (a large schema takes milliseconds); a failure is not cached.
  auto compiled = Constraint::Compile(kind, text);
  if (!compiled.ok()) return compiled.status();
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = index_.find(key); it != index_.end()) return it->second->second;  // compiled meanwhile
  lru_.emplace_front(key, *compiled);
  index_[std::move(key)] = lru_.begin();
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return *compiled;
}

size_t ConstraintCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

int64_t ConstraintCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}

}  // namespace gla::constraints
