#include "engine/sessions/redis_client.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <thread>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace gla {

namespace {

timeval ToTimeval(double seconds) {
  timeval tv{};
  const double s = std::max(seconds, 0.001);
  tv.tv_sec = static_cast<time_t>(s);
  tv.tv_usec = static_cast<suseconds_t>((s - std::floor(s)) * 1e6);
  return tv;
}

// Takes `key` for ARGV[1] for ARGV[2] ms when free, renews it when ARGV[1] already holds it.
constexpr char kAcquire[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if v == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end "
    "if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end "
    "return 0";
// Extends `key` by ARGV[2] ms only when ARGV[1] holds it.
constexpr char kRenew[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
// Deletes `key` only when ARGV[1] holds it.
constexpr char kRelease[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

// hiredis writes with write(2): a store that closed the connection raises SIGPIPE in the writing
// thread, whose default action ends the process (a restarted Redis under a large write did). Blocked
// in this thread for the call; one raised meanwhile is taken back before the mask is restored, so the
// failed write is an error reply, never a signal.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeBlocked() {
    sigset_t pending;
    sigpending(&pending);
    if (!was_pending_ && sigismember(&pending, SIGPIPE) == 1) {
      const timespec now{0, 0};
      sigtimedwait(&pipe_, nullptr, &now);
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_, old_;
  bool was_pending_ = false;
};

bool ParseInt(std::string_view text, int* out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::string RedisAddress::ToString() const { return absl::StrCat("redis://", host, ":", port, "/", db); }

absl::StatusOr<RedisAddress> ParseRedisUrl(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("state store '", std::string(url), "': ", std::string(why),
                                                   " (expected redis://HOST[:PORT][/DB])"));
  };
  if (url.substr(0, kScheme.size()) != kScheme) return bad("not a redis:// address");
  std::string_view rest = url.substr(kScheme.size());
  RedisAddress a;
  if (const size_t slash = rest.find('/'); slash != std::string_view::npos) {
    if (!ParseInt(rest.substr(slash + 1), &a.db) || a.db < 0 || a.db > 15) return bad("the database is not 0-15");
    rest = rest.substr(0, slash);
  }
  if (rest.find('@') != std::string_view::npos) return bad("credentials in the address are not supported");
  if (rest.find('?') != std::string_view::npos) return bad("options in the address are not supported");
  std::string_view host = rest, port;
  if (!rest.empty() && rest[0] == '[') {  // [IPv6]:PORT
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("an IPv6 address without ']'");
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') return bad("text after the IPv6 address");
      port = rest.substr(close + 2);
    }
  } else if (const size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (port.data() != nullptr && (!ParseInt(port, &a.port) || a.port < 1 || a.port > 65535))
    return bad("the port is not 1-65535");
  if (host.empty()) return bad("no host");
  a.host = std::string(host);
  return a;
}

RedisClient::RedisClient(RedisAddress address, RedisOptions options)
    : address_(std::move(address)), options_(options) {}

RedisClient::~RedisClient() {
  std::lock_guard<std::mutex> lock(mu_);
  DropLocked();
}

void RedisClient::DropLocked() {
  if (context_ != nullptr) redisFree(context_);
  context_ = nullptr;
}

absl::Status RedisClient::Unavailable(std::string_view what) const {
  return absl::UnavailableError(absl::StrCat("state store ", address_.ToString(), ": ", std::string(what)));
}

absl::Status RedisClient::ConnectLocked() {
  redisContext* c = redisConnectWithTimeout(address_.host.c_str(), address_.port, ToTimeval(options_.connect_timeout_s));
  if (c == nullptr) return Unavailable("cannot allocate a connection");
  if (c->err != 0) {
    const std::string why = c->errstr;
    redisFree(c);
    return Unavailable(why);
  }
  if (redisSetTimeout(c, ToTimeval(options_.command_timeout_s)) != REDIS_OK) {
    redisFree(c);
    return Unavailable("cannot set the command timeout");
  }
  context_ = c;
  if (address_.db != 0) {
    auto* r = static_cast<redisReply*>(redisCommand(context_, "SELECT %d", address_.db));
    const bool ok = r != nullptr && r->type == REDIS_REPLY_STATUS;
    if (r != nullptr) freeReplyObject(r);
    if (!ok) {
      DropLocked();
      return Unavailable(absl::StrCat("cannot select database ", address_.db));
    }
  }
  return absl::OkStatus();
}

namespace {

double SteadyNow() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// A reply, converted whole (arrays nest: SCAN answers [cursor, [keys]]). A server error anywhere in
// it is INTERNAL with the server's text.
absl::Status Convert(const redisReply* r, const std::string& store, RedisReply* out) {
  switch (r->type) {
    case REDIS_REPLY_NIL: out->kind = RedisReply::kNil; return absl::OkStatus();
    case REDIS_REPLY_STRING: out->kind = RedisReply::kString, out->text.assign(r->str, r->len); return absl::OkStatus();
    case REDIS_REPLY_STATUS: out->kind = RedisReply::kStatus, out->text.assign(r->str, r->len); return absl::OkStatus();
    case REDIS_REPLY_INTEGER: out->kind = RedisReply::kInteger, out->integer = r->integer; return absl::OkStatus();
    case REDIS_REPLY_ARRAY:
      out->kind = RedisReply::kArray;
      out->elements.resize(r->elements);
      for (size_t i = 0; i < r->elements; ++i)
        if (absl::Status s = Convert(r->element[i], store, &out->elements[i]); !s.ok()) return s;
      return absl::OkStatus();
    case REDIS_REPLY_ERROR:
      return absl::InternalError(absl::StrCat("state store ", store, ": ", std::string(r->str, r->len)));
    default: return absl::InternalError(absl::StrCat("state store: unexpected reply type ", r->type));
  }
}

}  // namespace

absl::StatusOr<RedisClient::Reply> RedisClient::Command(const std::vector<std::string_view>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> argvlen;
  for (std::string_view a : args) argv.push_back(a.data()), argvlen.push_back(a.size());
  std::lock_guard<std::mutex> lock(mu_);
  const double now = SteadyNow();
  if (failed_at_ > 0 && now - failed_at_ < options_.retry_after_s)
    return Unavailable(absl::StrCat(failed_why_, " (", static_cast<int>((now - failed_at_) * 1000),
                                    " ms ago; tried again after ", static_cast<int>(options_.retry_after_s * 1000), " ms)"));
  const SigpipeBlocked no_sigpipe;
  if (context_ == nullptr) {
    if (absl::Status s = ConnectLocked(); !s.ok()) {
      failed_at_ = SteadyNow();
      failed_why_ = std::string(s.message().substr(s.message().find(": ") + 2));
      return s;
    }
  }
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), argvlen.data()));
  if (r == nullptr) {  // I/O error or timeout: this connection is done; the next call reconnects
    const std::string why = context_->errstr;
    DropLocked();
    failed_at_ = SteadyNow();
    failed_why_ = why.empty() ? "no answer" : why;
    return Unavailable(failed_why_);
  }
  failed_at_ = 0;
  Reply reply;
  const absl::Status status = Convert(r, address_.ToString(), &reply);
  freeReplyObject(r);
  if (!status.ok()) return status;
  return reply;
}

absl::Status RedisClient::Ping() {
  absl::StatusOr<Reply> r = Command({"PING"});
  return r.ok() ? absl::OkStatus() : r.status();
}

absl::Status RedisClient::Put(std::string_view key, std::string_view value, int64_t ttl_ms) {
  const std::string ttl = std::to_string(ttl_ms);
  absl::StatusOr<Reply> r = ttl_ms > 0 ? Command({"SET", key, value, "PX", ttl}) : Command({"SET", key, value});
  return r.ok() ? absl::OkStatus() : r.status();
}

absl::StatusOr<std::optional<std::string>> RedisClient::Get(std::string_view key) {
  absl::StatusOr<Reply> r = Command({"GET", key});
  if (!r.ok()) return r.status();
  if (r->kind == Reply::kNil) return std::optional<std::string>();
  return std::optional<std::string>(std::move(r->text));
}

absl::Status RedisClient::Delete(std::string_view key) {
  absl::StatusOr<Reply> r = Command({"DEL", key});
  return r.ok() ? absl::OkStatus() : r.status();
}

absl::StatusOr<bool> RedisClient::Acquire(std::string_view key, std::string_view owner, int64_t ttl_ms) {
  if (ttl_ms <= 0) return absl::InvalidArgumentError("a lease needs a positive time to live");
  const std::string ttl = std::to_string(ttl_ms);
  absl::StatusOr<Reply> r = Command({"EVAL", kAcquire, "1", key, owner, ttl});
  if (!r.ok()) return r.status();
  return r->kind == Reply::kInteger && r->integer == 1;
}

absl::StatusOr<bool> RedisClient::Renew(std::string_view key, std::string_view owner, int64_t ttl_ms) {
  if (ttl_ms <= 0) return absl::InvalidArgumentError("a lease needs a positive time to live");
  const std::string ttl = std::to_string(ttl_ms);
  absl::StatusOr<Reply> r = Command({"EVAL", kRenew, "1", key, owner, ttl});
  if (!r.ok()) return r.status();
  return r->kind == Reply::kInteger && r->integer == 1;
}

absl::StatusOr<bool> RedisClient::Release(std::string_view key, std::string_view owner) {
  absl::StatusOr<Reply> r = Command({"EVAL", kRelease, "1", key, owner});
  if (!r.ok()) return r.status();
  return r->kind == Reply::kInteger && r->integer == 1;
}

absl::Status RedisClient::PutInRanges(std::string_view key, std::string_view value, int64_t ttl_ms) {
  if (value.empty() || ttl_ms <= 0) return absl::InvalidArgumentError("PutInRanges: an empty value or no expiry");
  const std::string last = std::to_string(value.size() - 1), ttl = std::to_string(ttl_ms);
  absl::StatusOr<Reply> r = Command({"DEL", key});
  if (r.ok()) r = Command({"SETRANGE", key, last, value.substr(value.size() - 1)});
  if (r.ok()) r = Command({"PEXPIRE", key, ttl});
  for (size_t at = 0; r.ok() && at + 1 < value.size(); at += kRangeBytes) {
    const std::string offset = std::to_string(at);
    r = Command({"SETRANGE", key, offset, value.substr(at, std::min(kRangeBytes, value.size() - 1 - at))});
  }
  return r.ok() ? absl::OkStatus() : r.status();
}

namespace {
absl::Status TooLong(std::string_view key, int64_t size, size_t max_bytes) {
  return absl::DataLossError(absl::StrCat("state store: ", std::string(key), " holds ", size, " bytes, more than the ",
                                          max_bytes, " expected"));
}
}  // namespace

absl::StatusOr<std::optional<std::string>> RedisClient::GetInRanges(std::string_view key, size_t max_bytes) {
  absl::StatusOr<Reply> r = Command({"STRLEN", key});
  if (!r.ok()) return r.status();
  const int64_t size = r->integer;
  if (size <= 0) return std::optional<std::string>();
  if (static_cast<uint64_t>(size) > max_bytes) return TooLong(key, size, max_bytes);
  std::string value;
  value.reserve(static_cast<size_t>(size));
  for (int64_t at = 0; at < size; at += static_cast<int64_t>(kRangeBytes)) {
    const std::string from = std::to_string(at), to = std::to_string(std::min<int64_t>(at + kRangeBytes, size) - 1);
    r = Command({"GETRANGE", key, from, to});
    if (!r.ok()) return r.status();
    if (r->text.empty()) break;  // shortened meanwhile: the caller's checksum refuses it
    value += r->text;
  }
  return std::optional<std::string>(std::move(value));
}

absl::StatusOr<std::optional<std::string>> RedisClient::GetInRanges(const std::vector<RedisClient*>& clients,
                                                                   std::string_view key, size_t max_bytes) {
  if (clients.size() <= 1) return clients.at(0)->GetInRanges(key, max_bytes);
  absl::StatusOr<Reply> r = clients[0]->Command({"STRLEN", key});
  if (!r.ok()) return r.status();
  const int64_t size = r->integer;
  if (size <= 0) return std::optional<std::string>();
  if (static_cast<uint64_t>(size) > max_bytes) return TooLong(key, size, max_bytes);
  std::string value(static_cast<size_t>(size), '\0');
  const int64_t ranges = (size + static_cast<int64_t>(kRangeBytes) - 1) / static_cast<int64_t>(kRangeBytes);
  std::vector<absl::Status> status(clients.size());
  std::vector<std::thread> readers;
  for (size_t c = 0; c < clients.size() && static_cast<int64_t>(c) < ranges; ++c) {
    readers.emplace_back([&, c] {  // ranges c, c + n, c + 2n, ... into their place in `value`
      for (int64_t i = static_cast<int64_t>(c); i < ranges && status[c].ok(); i += static_cast<int64_t>(clients.size())) {
        const int64_t at = i * static_cast<int64_t>(kRangeBytes), end = std::min<int64_t>(at + kRangeBytes, size);
        const std::string from = std::to_string(at), to = std::to_string(end - 1);
        absl::StatusOr<Reply> got = clients[c]->Command({"GETRANGE", key, from, to});
        if (!got.ok()) status[c] = got.status();
        else if (static_cast<int64_t>(got->text.size()) != end - at) status[c] = absl::DataLossError("a range came back short (the value changed)");
        else std::memcpy(value.data() + at, got->text.data(), got->text.size());
      }
    });
  }
  for (std::thread& t : readers) t.join();
  for (const absl::Status& s : status)
    if (!s.ok()) return s;
  return std::optional<std::string>(std::move(value));
}

absl::StatusOr<int64_t> RedisClient::DeleteKeys(const std::vector<std::string>& keys) {
  if (keys.empty()) return 0;
  std::vector<std::string_view> args = {"DEL"};
  for (const std::string& k : keys) args.push_back(k);
  absl::StatusOr<Reply> r = Command(args);
  if (!r.ok()) return r.status();
  return r->integer;
}

absl::StatusOr<RedisReply> RedisClient::Eval(std::string_view script, const std::vector<std::string_view>& keys,
                                             const std::vector<std::string_view>& args) {
  const std::string nkeys = std::to_string(keys.size());
  std::vector<std::string_view> argv = {"EVAL", script, nkeys};
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  return Command(argv);
}

absl::StatusOr<std::vector<std::string>> RedisClient::ScanKeys(std::string_view pattern, size_t limit) {
  std::vector<std::string> keys;
  std::string cursor = "0";
  do {
    absl::StatusOr<Reply> r = Command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
    if (!r.ok()) return r.status();
    if (r->kind != Reply::kArray || r->elements.size() != 2 || r->elements[1].kind != Reply::kArray)
      return absl::InternalError("state store: SCAN answered something other than [cursor, keys]");
    cursor = r->elements[0].text;
    for (Reply& k : r->elements[1].elements) {
      if (keys.size() == limit)
        return absl::ResourceExhaustedError(absl::StrCat("state store: more than ", limit, " keys match ", std::string(pattern)));
      keys.push_back(std::move(k.text));
    }
  } while (cursor != "0");
  // SCAN may return a key more than once (a rehash during the walk).
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

}  // namespace gla
