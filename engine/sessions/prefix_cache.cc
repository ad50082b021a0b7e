#include "engine/sessions/prefix_cache.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/fingerprint.h"

namespace gla {

namespace {
constexpr size_t kMaxSeen = 1 << 16;  // sightings remembered (8+4 bytes each); forgotten wholesale past it

// A prefix entry in the store: "GLAPFX1\0" | u32 tokens n | n x i32 tokens | i64 state words |
// the state's words (in the pool's dtype; the key names it) | u64 Hash64 of everything before it.
constexpr char kMagic[8] = {'G', 'L', 'A', 'P', 'F', 'X', '1', '\0'};
constexpr int64_t kStoreTtlMs = 3600 * 1000;  // an entry nobody used for an hour goes
// KEYS: the prompt's block prefixes, longest first. The index of the first that is there (its
// expiry renewed), or 0. (Its value is read after, in ranges: RedisClient::GetInRanges.)
constexpr char kLongest[] =
    "for i, k in ipairs(KEYS) do if redis.call('PEXPIRE', k, ARGV[1]) == 1 then return i end end return 0";
// KEYS entry, scratch; ARGV expiry ms. The scratch key (written in ranges) becomes the entry unless
// one is there already (the first copy stays). 1 = written.
constexpr char kPlace[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DEL', KEYS[2]) return 0 end "
    "redis.call('RENAME', KEYS[2], KEYS[1]) redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1";

std::string EncodeEntry(std::span<const int32_t> tokens, std::span<const float> state) {
  std::string out(kMagic, sizeof(kMagic));
  const uint32_t n = static_cast<uint32_t>(tokens.size());
  const int64_t floats = static_cast<int64_t>(state.size());
  out.append(reinterpret_cast<const char*>(&n), sizeof(n));
  out.append(reinterpret_cast<const char*>(tokens.data()), tokens.size_bytes());
  out.append(reinterpret_cast<const char*>(&floats), sizeof(floats));
  out.append(reinterpret_cast<const char*>(state.data()), state.size_bytes());
  const uint64_t h = Hash64({reinterpret_cast<const uint8_t*>(out.data()), out.size()});
  out.append(reinterpret_cast<const char*>(&h), sizeof(h));
  return out;
}

// Whether `value` is an entry for exactly `tokens` with a state of `state.size()` floats (copied
// there) and an intact checksum.
bool DecodeEntry(std::string_view value, std::span<const int32_t> tokens, std::span<float> state) {
  const size_t want = sizeof(kMagic) + 4 + tokens.size_bytes() + 8 + state.size_bytes() + 8;
  if (value.size() != want || std::memcmp(value.data(), kMagic, sizeof(kMagic)) != 0) return false;
  const char* p = value.data() + sizeof(kMagic);
  uint32_t n = 0;
  int64_t floats = 0;
  std::memcpy(&n, p, sizeof(n));
  if (n != tokens.size() || std::memcmp(p + 4, tokens.data(), tokens.size_bytes()) != 0) return false;
  p += 4 + tokens.size_bytes();
  std::memcpy(&floats, p, sizeof(floats));
  if (floats != static_cast<int64_t>(state.size())) return false;
  uint64_t stored = 0;
  std::memcpy(&stored, value.data() + value.size() - 8, sizeof(stored));
  if (Hash64({reinterpret_cast<const uint8_t*>(value.data()), value.size() - 8}) != stored) return false;
  std::memcpy(state.data(), p + 8, state.size_bytes());
  return true;
}
}  // namespace

void PrefixCache::ShareThrough(std::shared_ptr<RedisClient> store, uint64_t fingerprint, WeightFormat weights,
                               const std::string& backend) {
  store_ = std::move(store);
  fingerprint_ = fingerprint;
  weights_ = weights;
  backend_ = backend;
  std::random_device rd;
  scratch_suffix_ = absl::StrFormat("%08x%08x", rd(), rd());  // this process's scratch keys
}

std::string PrefixCache::StoreKey(uint64_t hash) const {
  // bf16 pools' entries apart from f32 ones (an entry holds what the pool holds), and those of
  // replicas running quantized weights, or on another kind of backend, apart from each other's and
  // the native CPU ones' (the states differ: a hit must give what this replica would compute).
  return absl::StrFormat("gla:%016x:p%s%s%s:%d:%016x", fingerprint_, backend_ == "cpu" ? "" : "-" + backend_,
                         pool_.state_dtype() == StateDType::kBF16 ? "-bf16" : "",
                         weights_ == WeightFormat::kNative ? "" : absl::StrCat("-", WeightFormatName(weights_)), block_,
                         hash);
}

PrefixCache::PrefixCache(StatePool& pool, int block_tokens, int64_t budget_bytes)
    : pool_(pool), block_(std::max(block_tokens, 1)),
      max_entries_(static_cast<int>(std::min<int64_t>(budget_bytes / std::max<int64_t>(pool.state_bytes(), 1), 1 << 20))) {}

std::vector<uint64_t> PrefixCache::BlockHashes(std::span<const int32_t> prompt, const LoraAdapter* adapter) const {
  std::vector<uint64_t> out;
  const uintptr_t a = reinterpret_cast<uintptr_t>(adapter);
  uint64_t h = Hash64({reinterpret_cast<const uint8_t*>(&a), sizeof(a)}, 0x70726566);
  for (size_t end = block_; end < prompt.size(); end += block_) {
    const auto block = prompt.subspan(end - block_, block_);
    h = Hash64({reinterpret_cast<const uint8_t*>(block.data()), block.size_bytes()}, h);
    out.push_back(h);
  }
  return out;
}

std::optional<PrefixCache::Match> PrefixCache::Lookup(std::span<const int32_t> prompt, const LoraAdapter* adapter,
                                                      int* snapshot) {
  *snapshot = 0;
  if (!enabled()) return std::nullopt;
  const std::vector<uint64_t> hashes = BlockHashes(prompt, adapter);
  if (hashes.empty()) return std::nullopt;  // shorter than a block and a token: nothing to cache
  std::optional<Match> match;
  for (size_t i = hashes.size(); i-- > 0 && !match;) {
    auto it = entries_.find(hashes[i]);
    if (it == entries_.end()) continue;
    const Entry& e = it->second;
    const size_t n = (i + 1) * static_cast<size_t>(block_);
    if (e.adapter.get() != adapter || e.tokens.size() != n || !std::equal(e.tokens.begin(), e.tokens.end(), prompt.begin()))
      continue;  // a hash collision
    lru_.splice(lru_.begin(), lru_, e.lru);
    match = Match{static_cast<int>(n), e.state};
  }
  if (!match && peers_ != nullptr && adapter == nullptr) match = LookupPeers(prompt, hashes);
  if (!match && store_ != nullptr && adapter == nullptr) match = LookupStore(prompt, hashes);
  if (match) {
    ++counters_.hits;
    counters_.saved_tokens += static_cast<uint64_t>(match->tokens);
  } else {
    ++counters_.misses;
  }
  if (seen_.size() + hashes.size() > kMaxSeen) seen_.clear();
  const size_t covered = match ? static_cast<size_t>(match->tokens / block_) : 0;
  for (size_t i = 0; i < hashes.size(); ++i) {
    const uint32_t count = ++seen_[hashes[i]];
    if (i >= covered && count >= 2 && entries_.count(hashes[i]) == 0) *snapshot = static_cast<int>((i + 1) * block_);
  }
  return match;
}

absl::Status PrefixCache::Insert(std::span<const int32_t> prefix, std::shared_ptr<const LoraAdapter> adapter, int slot) {
  if (!enabled() || prefix.empty() || prefix.size() % block_ != 0) return absl::OkStatus();
  std::vector<int32_t> probe(prefix.begin(), prefix.end());
  probe.push_back(0);  // BlockHashes covers blocks shorter than its input
  const std::vector<uint64_t> hashes = BlockHashes(probe, adapter.get());
  const uint64_t key = hashes.back();
  if (entries_.count(key) != 0) return absl::OkStatus();
  absl::StatusOr<std::shared_ptr<HostState>> state = MakeRoom();
  if (!state.ok()) return state.status();
  if (absl::Status s = pool_.SaveToHost(slot, **state); !s.ok()) return s;
  if (store_ != nullptr && adapter == nullptr) {  // every replica's now (SET NX: the first copy stays)
    absl::Status st = (*state)->Wait();
    if (st.ok()) {
      const std::string entry = StoreKey(key), scratch = absl::StrCat(entry, ":t:", scratch_suffix_);
      st = store_->PutInRanges(scratch, EncodeEntry(prefix, {(*state)->data(), static_cast<size_t>((*state)->words())}),
                               60000);
      if (st.ok()) st = store_->Eval(kPlace, {entry, scratch}, {std::to_string(kStoreTtlMs)}).status();
    }
    if (st.ok()) ++counters_.store_writes;
    else ++counters_.store_errors;
  }
  if (peers_ != nullptr && adapter == nullptr) {  // the other engines' too (a host copy)
    if (absl::Status st = (*state)->Wait(); st.ok()) {
      peers_->Publish(key, prefix, {(*state)->data(), static_cast<size_t>((*state)->words())});
      ++counters_.peer_publishes;
    }
  }
  AddEntry(key, prefix, std::move(adapter), std::move(*state));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<HostState>> PrefixCache::MakeRoom() {
  std::shared_ptr<HostState> state;
  while (static_cast<int>(entries_.size()) >= max_entries_) {  // evict; reuse a buffer nobody else holds
    auto victim = entries_.find(lru_.back());
    if (victim->second.state.use_count() == 1 && !state) state = std::move(victim->second.state);
    lru_.pop_back();
    entries_.erase(victim);
    ++counters_.evicted;
  }
  if (state) return state;
  auto fresh = pool_.NewHostState();
  if (!fresh.ok()) return fresh.status();
  return std::shared_ptr<HostState>(std::move(*fresh));
}

void PrefixCache::AddEntry(uint64_t key, std::span<const int32_t> prefix, std::shared_ptr<const LoraAdapter> adapter,
                           std::shared_ptr<HostState> state) {
  lru_.push_front(key);
  entries_.emplace(key, Entry{std::vector<int32_t>(prefix.begin(), prefix.end()), std::move(adapter), std::move(state), lru_.begin()});
  ++counters_.inserted;
}

std::optional<PrefixCache::Match> PrefixCache::LookupStore(std::span<const int32_t> prompt,
                                                           const std::vector<uint64_t>& hashes) {
  std::vector<std::string> keys;
  for (size_t i = hashes.size(); i-- > 0;) keys.push_back(StoreKey(hashes[i]));
  std::vector<std::string_view> key_views(keys.begin(), keys.end());
  absl::StatusOr<RedisReply> r = store_->Eval(kLongest, key_views, {std::to_string(kStoreTtlMs)});
  const int64_t index = r.ok() ? r->integer : 0;  // 1 = the longest prefix
  if (!r.ok() || index < 1 || index > static_cast<int64_t>(keys.size())) {
    if (r.ok()) ++counters_.store_misses;
    else ++counters_.store_errors;
    return std::nullopt;
  }
  const size_t blocks = hashes.size() + 1 - static_cast<size_t>(index);  // longest first
  const size_t n = blocks * static_cast<size_t>(block_);
  const size_t entry_bytes = sizeof(kMagic) + 4 + n * sizeof(int32_t) + 8 + static_cast<size_t>(pool_.state_words()) * 4 + 8;
  absl::StatusOr<std::optional<std::string>> value = store_->GetInRanges(keys[static_cast<size_t>(index - 1)], entry_bytes);
  if (!value.ok()) {
    ++counters_.store_errors;
    return std::nullopt;
  }
  absl::StatusOr<std::shared_ptr<HostState>> state = MakeRoom();
  if (!value->has_value() || !state.ok() ||
      !DecodeEntry(**value, prompt.first(n), {(*state)->data(), static_cast<size_t>((*state)->words())})) {
    ++counters_.store_misses;  // a collision or a corrupt entry: a miss
    return std::nullopt;
  }
  ++counters_.store_hits;
  const uint64_t key = hashes[blocks - 1];
  AddEntry(key, prompt.first(n), nullptr, *state);
  auto it = entries_.find(key);
  return Match{static_cast<int>(n), it->second.state};
}

std::optional<PrefixCache::Match> PrefixCache::LookupPeers(std::span<const int32_t> prompt,
                                                           const std::vector<uint64_t>& hashes) {
  std::optional<PeerPrefixStates::Found> found = peers_->FindLongest(hashes, prompt, block_);
  if (!found || static_cast<int64_t>(found->state->size()) != pool_.state_words()) {
    ++counters_.peer_misses;
    return std::nullopt;
  }
  absl::StatusOr<std::shared_ptr<HostState>> state = MakeRoom();
  if (!state.ok()) {
    ++counters_.peer_misses;
    return std::nullopt;
  }
  if (!(*state)->Wait().ok()) {  // a reused buffer: its last copy must be done before it is written
    ++counters_.peer_misses;
    return std::nullopt;
  }
  std::copy(found->state->begin(), found->state->end(), (*state)->data());
  ++counters_.peer_hits;
  const size_t n = found->blocks * static_cast<size_t>(block_);
  const uint64_t key = hashes[found->blocks - 1];
  AddEntry(key, prompt.first(n), nullptr, *state);
  return Match{static_cast<int>(n), *state};
}

PrefixCacheStats PrefixCache::stats() const {
  PrefixCacheStats s = counters_;
  s.entries = static_cast<int>(entries_.size());
  s.bytes = s.entries * pool_.state_bytes();
  return s;
}

}  // namespace gla
