// Compiled patterns shared by every grammar of the process (issue 21's compile time): a JSON
// string, a number, a string of at most 255 characters, a member's punctuation and many a
// property name recur across schemas and across requests; each is determinized once. Entries are
// immutable automata held by shared_ptr (a grammar keeps the ones it uses), least recently used
// dropped past a byte budget. Thread-safe (requests compile on several threads).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/status/statusor.h"
#include "engine/constraints/regex.h"

namespace gla::constraints {

class RegexCache {
 public:
  explicit RegexCache(size_t capacity_bytes = size_t{64} << 20) : capacity_(capacity_bytes) {}
  // The process's cache (grammars' terminals and fused stretches).
  static RegexCache& Shared();

  // Regex::Compile(pattern) with default limits, made once; errors are not kept.
  absl::StatusOr<std::shared_ptr<const Regex>> Compile(const std::string& pattern);
  // An automaton built another way (a fused stretch, grammar_fusion.h) under a key that names its
  // language: nullptr when not there.
  std::shared_ptr<const Regex> Find(const std::string& key);
  // Keeps `re` under `key` (the entry already there wins) and returns the one kept.
  std::shared_ptr<const Regex> Put(const std::string& key, std::shared_ptr<const Regex> re);

  // Drops every entry (grammars keep the automata they hold). For measurements of a cold start.
  void Clear();

  struct Stats {
    int64_t hits = 0, misses = 0;
    size_t entries = 0, bytes = 0;
  };
  Stats stats() const;

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::list<std::pair<std::string, std::shared_ptr<const Regex>>> lru_;  // most recent first
  std::unordered_map<std::string, decltype(lru_)::iterator> index_;
  size_t bytes_ = 0;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace gla::constraints
