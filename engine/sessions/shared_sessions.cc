#include "engine/sessions/shared_sessions.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gla {

namespace {

// The state travels to a scratch key first (RedisClient::PutInRanges: a large value in one command
// is slow through hiredis); these scripts then check and RENAME it into place, so a reader never
// sees half a state and a refused write leaves nothing behind.
// KEYS meta, state, scratch; ARGV meta, expiry ms (0: none). 1 = created, 0 = exists.
constexpr char kCreate[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DEL', KEYS[3]) return 0 end "
    "redis.call('RENAME', KEYS[3], KEYS[2]) "
    "if ARGV[2] == '0' then redis.call('SET', KEYS[1], ARGV[1]) redis.call('PERSIST', KEYS[2]) "
    "else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) redis.call('PEXPIRE', KEYS[2], ARGV[2]) end "
    "return 1";
// KEYS lease, meta, state, scratch; ARGV owner, expected version, meta, expiry ms.
// 1 = written; -1 = the lease is not ours; -2 = no session; -3 = another version.
constexpr char kCommit[] =
    "local function refuse(code) redis.call('DEL', KEYS[4]) return code end "
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return refuse(-1) end "
    "local m = redis.call('GET', KEYS[2]) "
    "if m == false then return refuse(-2) end "
    "if string.match(m, '^(%d+)\\n') ~= ARGV[2] then return refuse(-3) end "
    "redis.call('RENAME', KEYS[4], KEYS[3]) "
    "if ARGV[4] == '0' then redis.call('SET', KEYS[2], ARGV[3]) redis.call('PERSIST', KEYS[3]) "
    "else redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) redis.call('PEXPIRE', KEYS[3], ARGV[4]) end "
    "return 1";
constexpr int64_t kScratchTtlMs = 60000;  // a writer that dies halfway leaves its scratch key this long
// A turn's first call, one round trip: the session's record and version, and its lease taken (or
// renewed when ours). KEYS lease, meta; ARGV owner, lease ms. {-1} = no session (no lease taken),
// {0} = another owner holds it, {1, meta} = leased.
constexpr char kLeaseAndFind[] =
    "local m = redis.call('GET', KEYS[2]) "
    "if m == false then return {-1} end "
    "local v = redis.call('GET', KEYS[1]) "
    "if v == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
    "elseif v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
    "else return {0} end "
    "return {1, m}";
// KEYS lease, meta, state; ARGV owner. 1 = deleted, 0 = not there, -1 = the lease is not ours.
constexpr char kRemove[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end "
    "return redis.call('DEL', KEYS[2], KEYS[3]) > 0 and 1 or 0";

bool ParseVersion(std::string_view text, uint64_t* out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size() && *out > 0;
}

}  // namespace

std::string ReplicaName() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  std::random_device rd;
  return absl::StrFormat("%s:%d:%08x", host, static_cast<int>(getpid()), rd());
}

SharedSessions::SharedSessions(std::shared_ptr<RedisClient> client, SessionFileExpect expect, std::string owner,
                               int64_t lease_ms)
    : client_(std::move(client)), expect_(expect), owner_(std::move(owner)), lease_ms_(lease_ms),
      prefix_(absl::StrFormat("gla:%016x:", expect.model_fingerprint)) {
  constexpr int kReadConnections = 4;
  read_over_.push_back(client_.get());
  for (int i = 1; i < kReadConnections; ++i) {
    readers_.push_back(std::make_unique<RedisClient>(client_->address(), client_->options()));
    read_over_.push_back(readers_.back().get());
  }
}

std::string SharedSessions::Key(char kind, const std::string& id) const { return absl::StrCat(prefix_, std::string(1, kind), ":", id); }

std::string SharedSessions::Meta(const SessionRecord& record, uint64_t version) const {
  return absl::StrCat(version, "\n", EncodeSession(expect_.model_fingerprint, record, {}, expect_.state_dtype));
}

std::string SharedSessions::ExpiryMs(const SessionRecord& record) {
  return record.ttl_s > 0 ? std::to_string(std::min<int64_t>(record.ttl_s, int64_t{1} << 40) * 1000) : std::string("0");
}

absl::StatusOr<SharedSessions::Entry> SharedSessions::ParseMeta(const std::string& id, std::string_view value) const {
  const std::string name = absl::StrCat("session '", id, "' in the state store");
  const size_t nl = value.find('\n');
  Entry e;
  if (nl == std::string_view::npos || !ParseVersion(value.substr(0, nl), &e.version))
    return absl::DataLossError(absl::StrCat(name, ": its record has no version"));
  SessionFileExpect record_only = expect_;
  record_only.record_only = true;
  absl::StatusOr<SessionRecord> r = DecodeSession(value.substr(nl + 1), record_only, {}, name);
  if (!r.ok()) return r.status();
  if (r->id != id) return absl::DataLossError(absl::StrCat(name, ": holds session '", r->id, "'"));
  e.record = std::move(*r);
  return e;
}

std::string SharedSessions::Scratch(const std::string& id) const { return absl::StrCat(Key('t', id), ":", owner_); }

absl::StatusOr<bool> SharedSessions::Create(const SessionRecord& record, std::span<const float> state) {
  const std::string meta = Meta(record, 1), expiry = ExpiryMs(record), scratch = Scratch(record.id);
  if (absl::Status s = client_->PutInRanges(scratch, EncodeSession(expect_.model_fingerprint, record, state, expect_.state_dtype), kScratchTtlMs);
      !s.ok())
    return s;
  absl::StatusOr<RedisReply> r = client_->Eval(kCreate, {Key('m', record.id), Key('s', record.id), scratch}, {meta, expiry});
  if (!r.ok()) return r.status();
  return r->integer == 1;
}

absl::StatusOr<bool> SharedSessions::Lease(const std::string& id) { return client_->Acquire(Key('l', id), owner_, lease_ms_); }

absl::StatusOr<bool> SharedSessions::Renew(const std::string& id) { return client_->Renew(Key('l', id), owner_, lease_ms_); }

absl::Status SharedSessions::Unlease(const std::string& id) {
  absl::StatusOr<bool> r = client_->Release(Key('l', id), owner_);
  return r.ok() ? absl::OkStatus() : r.status();
}

absl::StatusOr<std::optional<SharedSessions::Entry>> SharedSessions::Find(const std::string& id) {
  absl::StatusOr<std::optional<std::string>> v = client_->Get(Key('m', id));
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<Entry>();
  absl::StatusOr<Entry> e = ParseMeta(id, **v);
  if (!e.ok()) return e.status();
  return std::optional<Entry>(std::move(*e));
}

absl::StatusOr<SharedSessions::LeaseFound> SharedSessions::LeaseAndFind(const std::string& id) {
  absl::StatusOr<RedisReply> r =
      client_->Eval(kLeaseAndFind, {Key('l', id), Key('m', id)}, {owner_, std::to_string(lease_ms_)});
  if (!r.ok()) return r.status();
  const std::vector<RedisReply>& e = r->elements;
  if (r->kind != RedisReply::kArray || e.empty() || e[0].kind != RedisReply::kInteger)
    return absl::InternalError("the state store answered the lease script with something else than its reply");
  LeaseFound out;
  if (e[0].integer != 1) {
    out.outcome = e[0].integer == -1 ? LeaseFound::kNoSession : LeaseFound::kHeldElsewhere;
    return out;
  }
  out.outcome = LeaseFound::kLeased;
  if (e.size() != 2 || e[1].kind != RedisReply::kString)
    return absl::InternalError("the state store answered the lease script without the session's record");
  absl::StatusOr<Entry> entry = ParseMeta(id, e[1].text);
  if (!entry.ok()) {
    Unlease(id).IgnoreError();
    return entry.status();
  }
  out.entry = std::move(*entry);
  return out;
}

absl::StatusOr<SharedSessions::Entry> SharedSessions::Read(const std::string& id, std::span<float> state,
                                                           const Entry* known) {
  absl::StatusOr<std::optional<Entry>> meta = known != nullptr ? std::optional<Entry>(*known) : Find(id);
  if (!meta.ok()) return meta.status();
  if (!meta->has_value()) return absl::NotFoundError(absl::StrCat("no session '", id, "' in the state store"));
  // At most a header (names are at most 64 bytes each), the state in either dtype (another replica
  // may keep f32 states, the larger: one word per value) and the checksum.
  const size_t most = 512 + static_cast<size_t>(expect_.state_values) * sizeof(float) + 8;
  absl::StatusOr<std::optional<std::string>> v = RedisClient::GetInRanges(read_over_, Key('s', id), most);
  if (!v.ok()) return v.status();
  const std::string name = absl::StrCat("session '", id, "' in the state store");
  if (!v->has_value()) return absl::DataLossError(absl::StrCat(name, ": its record is there, its state is not"));
  absl::StatusOr<SessionRecord> r = DecodeSession(**v, expect_, state, name);
  if (!r.ok()) return r.status();
  if (r->id != id || r->tokens != (*meta)->record.tokens || r->pending != (*meta)->record.pending)
    return absl::DataLossError(absl::StrCat(name, ": its state and its record disagree"));
  Entry e = std::move(**meta);
  e.record = std::move(*r);
  return e;
}

absl::Status SharedSessions::Commit(const SessionRecord& record, uint64_t expected_version, std::span<const float> state) {
  const std::string meta = Meta(record, expected_version + 1), scratch = Scratch(record.id);
  const std::string expected = std::to_string(expected_version), expiry = ExpiryMs(record);
  if (absl::Status s = client_->PutInRanges(scratch, EncodeSession(expect_.model_fingerprint, record, state, expect_.state_dtype), kScratchTtlMs);
      !s.ok())
    return s;
  absl::StatusOr<RedisReply> r = client_->Eval(
      kCommit, {Key('l', record.id), Key('m', record.id), Key('s', record.id), scratch}, {owner_, expected, meta, expiry});
  if (!r.ok()) return r.status();
  switch (r->integer) {
    case 1: return absl::OkStatus();
    case -1:
      return absl::AbortedError(absl::StrCat("session '", record.id, "': this replica no longer holds its lease (the turn ran past ",
                                             lease_ms_, " ms without renewing it)"));
    case -2: return absl::AbortedError(absl::StrCat("session '", record.id, "' was deleted or expired during the turn"));
    default:
      return absl::AbortedError(absl::StrCat("session '", record.id, "' moved on in the store during the turn (version ",
                                             expected_version, " was the turn's start)"));
  }
}

absl::StatusOr<bool> SharedSessions::Remove(const std::string& id) {
  absl::StatusOr<RedisReply> r = client_->Eval(kRemove, {Key('l', id), Key('m', id), Key('s', id)}, {owner_});
  if (!r.ok()) return r.status();
  if (r->integer < 0) return absl::AbortedError(absl::StrCat("session '", id, "': delete without its lease"));
  return r->integer == 1;
}

absl::StatusOr<std::vector<SharedSessions::Entry>> SharedSessions::List(size_t limit) {
  absl::StatusOr<std::vector<std::string>> keys = client_->ScanKeys(absl::StrCat(prefix_, "m:*"), limit);
  if (!keys.ok()) return keys.status();
  std::vector<Entry> out;
  const size_t skip = prefix_.size() + 2;
  for (const std::string& k : *keys) {
    absl::StatusOr<std::optional<Entry>> e = Find(k.substr(skip));
    if (!e.ok() && e.status().code() == absl::StatusCode::kUnavailable) return e.status();
    if (!e.ok()) continue;  // an entry that does not decode is not a session (BeginTurn says why)
    if (e->has_value()) out.push_back(std::move(**e));  // gone since the scan: not listed
  }
  return out;
}

}  // namespace gla
