// The prefix-state cache's tier between the engines of one server (glad --devices; engine_set.h):
// a base-model prefix state one engine prefilled is a hit on every other, as the store tier makes it
// one on every replica (prefix_cache.h). Each entry is an immutable host copy of the state after
// its tokens; an engine that hits copies it into an entry of its own cache (its pool's host buffer)
// and never touches another engine's buffers or device. Entries past the budget go least recently
// used first.
//
// Thread-safe: every engine's loop thread calls it; the copies are made outside the lock.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace gla {

class PeerPrefixStates {
 public:
  // Holds at most `max_entries` states.
  explicit PeerPrefixStates(int max_entries) : max_entries_(max_entries) {}

  // The state after `tokens`, under the prefix cache's key for them (its chained block hash).
  // An entry already there stays (it holds the same state).
  void Publish(uint64_t key, std::span<const int32_t> tokens, std::span<const float> state);

  struct Found {
    size_t blocks = 0;  // the prompt's first `blocks` block hashes' state
    std::shared_ptr<const std::vector<float>> state;
  };
  // The longest of the prompt's block prefixes held here (`hashes[i]` is the key of the first
  // i + 1 blocks of `block` tokens) whose tokens are the prompt's: a hash collision is a miss.
  std::optional<Found> FindLongest(const std::vector<uint64_t>& hashes, std::span<const int32_t> prompt, int block);

  int entries() const;

 private:
  struct Entry {
    std::vector<int32_t> tokens;
    std::shared_ptr<const std::vector<float>> state;
    std::list<uint64_t>::iterator lru;
  };
  const int max_entries_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> entries_;  // guarded by mu_
  std::list<uint64_t> lru_;                      // guarded by mu_; most recently used first
};

}  // namespace gla
