// The prefix-state cache (issue 8): recurrent states after whole blocks of frequently used prompt
// prefixes (system prompts, few-shot headers). A request whose prompt starts with a cached prefix
// starts from a copy of that state and prefills only the rest.
//
// Keys: a chained hash of the prompt's blocks of `block_tokens` tokens and the LoRA adapter; an
// entry also keeps its tokens, so a hash collision is a miss, never a wrong state. Which prefixes
// are kept: every prompt counts the block prefixes it passes through; a prefix becomes worth a
// state once a second prompt has passed through it ("frequently used" = seen twice), and that
// prompt's prefill stops at the longest such boundary for a snapshot. So a shared 1,000-token
// system prompt is cached by the second request that carries it and hit from the third on.
// Entries are evicted least recently used first past `budget_bytes`; their buffers are reused.
//
// Shared tier (ShareThrough, with --state_store): an entry made here is also written to the store
// (base-model prefixes only: an adapter's name does not say it is the same adapter on another
// replica), and a prompt that finds nothing here asks the store for its longest cached prefix in one
// call: a prefix prefilled on any replica is a hit on every other. Store entries carry their tokens
// and a checksum (a collision or a corrupt entry is a miss) and expire after an hour unused. A store
// that fails makes the lookup a miss, never a failed request.
//
// Peer tier (SharePeers, with glad --devices and no store): the same for the engines of one server,
// through an in-process tier of host copies (peer_prefix_states.h).
//
// Loop-thread only (the scheduler's).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/weight_format.h"
#include "engine/sessions/peer_prefix_states.h"
#include "engine/sessions/redis_client.h"
#include "engine/state_pool.h"
#include "models/lora_adapter.h"

namespace gla {

struct PrefixCacheStats {
  uint64_t hits = 0, misses = 0, saved_tokens = 0, inserted = 0, evicted = 0;
  // The shared tier: lookups that missed here and hit / missed in the store, entries written to
  // it, store calls that failed (each a miss). `hits` counts hits of either tier.
  uint64_t store_hits = 0, store_misses = 0, store_writes = 0, store_errors = 0;
  // The peer tier (the other engines of this server): lookups that missed here and hit / missed
  // there, entries published to it.
  uint64_t peer_hits = 0, peer_misses = 0, peer_publishes = 0;
  int entries = 0;
  int64_t bytes = 0;
  // Summed with another cache's (engine_set.h): every field.
  PrefixCacheStats& operator+=(const PrefixCacheStats& o) {
    hits += o.hits, misses += o.misses, saved_tokens += o.saved_tokens, inserted += o.inserted, evicted += o.evicted;
    store_hits += o.store_hits, store_misses += o.store_misses, store_writes += o.store_writes;
    store_errors += o.store_errors;
    peer_hits += o.peer_hits, peer_misses += o.peer_misses, peer_publishes += o.peer_publishes;
    entries += o.entries;
    bytes += o.bytes;
    return *this;
  }
};

class PrefixCache {
 public:
  PrefixCache(StatePool& pool, int block_tokens, int64_t budget_bytes);
  bool enabled() const { return max_entries_ > 0; }
  // Shares base-model entries through `store` (null: not shared) for the model `fingerprint` run
  // with `weights` on `backend` (Backend::name(): "cpu", "cuda"). Replicas whose numerics differ keep
  // their entries apart: an FP8 or INT8 replica's states are not a bf16 one's, and a GPU's (bf16
  // activations) are not the CPU's (fp32).
  void ShareThrough(std::shared_ptr<RedisClient> store, uint64_t fingerprint, WeightFormat weights,
                    const std::string& backend);
  // Shares base-model entries with the other engines of this server (null: not shared).
  void SharePeers(std::shared_ptr<PeerPrefixStates> peers) { peers_ = std::move(peers); }
  int block_tokens() const { return block_; }

  struct Match {
    int tokens = 0;                    // prompt tokens the state covers
    std::shared_ptr<HostState> state;  // load it into the request's slot
  };
  // The longest cached prefix of `prompt` (whole blocks, shorter than the prompt: the last token
  // must go through the model to give logits). Counts a hit or a miss; also counts the prompt's
  // block prefixes as seen. *snapshot: the longest boundary past the match worth saving (0: none).
  std::optional<Match> Lookup(std::span<const int32_t> prompt, const LoraAdapter* adapter, int* snapshot);
  // Saves the slot's state as the state after `prefix` (a whole number of blocks).
  absl::Status Insert(std::span<const int32_t> prefix, std::shared_ptr<const LoraAdapter> adapter, int slot);

  PrefixCacheStats stats() const;

 private:
  struct Entry {
    std::vector<int32_t> tokens;
    std::shared_ptr<const LoraAdapter> adapter;  // kept alive: its pointer is part of the key
    std::shared_ptr<HostState> state;
    std::list<uint64_t>::iterator lru;
  };
  // Hashes of prompt[0:block*(i+1)] for every whole block shorter than the prompt.
  std::vector<uint64_t> BlockHashes(std::span<const int32_t> prompt, const LoraAdapter* adapter) const;
  // The store: the longest of the prompt's block prefixes it holds, made a local entry.
  std::optional<Match> LookupStore(std::span<const int32_t> prompt, const std::vector<uint64_t>& hashes);
  // The peer tier: the same, from another engine's published copy.
  std::optional<Match> LookupPeers(std::span<const int32_t> prompt, const std::vector<uint64_t>& hashes);
  // The store's key for the prefix whose (adapter-less) chained hash is `hash`.
  std::string StoreKey(uint64_t hash) const;
  // Makes room and adds a local entry for `prefix` holding `state`.
  void AddEntry(uint64_t key, std::span<const int32_t> prefix, std::shared_ptr<const LoraAdapter> adapter,
                std::shared_ptr<HostState> state);
  // A host buffer for a new entry: one evicted (least recently used first) if nobody holds it.
  absl::StatusOr<std::shared_ptr<HostState>> MakeRoom();

  StatePool& pool_;
  const int block_;
  const int max_entries_;
  std::unordered_map<uint64_t, Entry> entries_;
  std::list<uint64_t> lru_;  // most recently used first
  std::unordered_map<uint64_t, uint32_t> seen_;
  PrefixCacheStats counters_;
  std::shared_ptr<RedisClient> store_;
  std::shared_ptr<PeerPrefixStates> peers_;
  uint64_t fingerprint_ = 0;
  WeightFormat weights_ = WeightFormat::kNative;
  std::string backend_ = "cpu";
  std::string scratch_suffix_;  // names this process's scratch keys in the store
};

}  // namespace gla
