#include "engine/sessions/session_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "models/file_io.h"
#include "models/fingerprint.h"

namespace gla {

namespace {

constexpr char kMagic[8] = {'G', 'L', 'A', 'S', 'E', 'S', 'S', '1'};
constexpr uint32_t kVersion = 2;        // written; 1 is read too (f32 states, no dtype field)
constexpr uint32_t kVersionNoDType = 1;
constexpr uint32_t kMaxName = 64;

class Writer {
 public:
  template <typename T>
  void Put(const T& v) { Bytes(&v, sizeof(T)); }
  void Str(const std::string& s) {
    Put(static_cast<uint32_t>(s.size()));
    Bytes(s.data(), s.size());
  }
  // Not inlined: GCC 12 at -O3 reports impossible overflows of the vector's growth otherwise
  // (-Wstringop-overflow false positives, as with GCC PR 105329).
  [[gnu::noinline]] void Bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    buf.insert(buf.end(), b, b + n);
  }
  std::vector<uint8_t> buf;
};

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  template <typename T>
  bool Get(T* v) { return Bytes(v, sizeof(T)); }
  bool Str(std::string* s) {
    uint32_t n = 0;
    if (!Get(&n) || n > kMaxName || n > n_ - at_) return false;
    s->assign(reinterpret_cast<const char*>(p_ + at_), n);
    at_ += n;
    return true;
  }
  bool Bytes(void* out, size_t n) {
    if (n > n_ - at_) return false;
    std::memcpy(out, p_ + at_, n);
    at_ += n;
    return true;
  }
  size_t at() const { return at_; }

 private:
  const uint8_t* p_;
  size_t n_, at_ = 0;
};

}  // namespace

namespace {

bool ReadAll(int fd, void* p, size_t n, off_t at) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::pread(fd, c, n, at);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
    at += r;
  }
  return true;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

namespace {

// Everything before the state: what the checksum starts with.
std::vector<uint8_t> EncodeHeader(uint64_t model_fingerprint, const SessionRecord& r, int64_t words, StateDType dtype) {
  Writer w;
  w.Bytes(kMagic, sizeof(kMagic));
  w.Put(kVersion);
  w.Put(static_cast<uint32_t>(dtype == StateDType::kBF16 ? 1 : 0));
  w.Put(model_fingerprint);
  w.Put(words);
  w.Put(r.tokens);
  w.Put(r.pending.value_or(-1));
  w.Str(r.id);
  w.Str(r.adapter);
  w.Put(r.created_unix_s);
  w.Put(r.last_used_unix_s);
  w.Put(r.ttl_s);
  return std::move(w.buf);
}

std::span<const uint8_t> AsBytes(std::span<const float> state) {
  return {reinterpret_cast<const uint8_t*>(state.data()), state.size_bytes()};
}

// Where a state lies in a file or store entry, as its header says.
struct StatePlace {
  int64_t header_bytes = 0;  // the state starts here
  int64_t words = 0;
  StateDType dtype = StateDType::kF32;
};

// `bytes` (the state's words as stored, in `place.dtype`; any alignment) into `state` in
// expect.state_dtype: copied, or converted (bf16 <-> f32) through an aligned copy.
void CopyStateOut(const uint8_t* bytes, const StatePlace& place, const SessionFileExpect& expect, std::span<float> state) {
  if (place.dtype == expect.state_dtype) {
    std::memcpy(state.data(), bytes, state.size_bytes());
    return;
  }
  std::vector<float> stored(static_cast<size_t>(place.words));
  std::memcpy(stored.data(), bytes, stored.size() * sizeof(float));
  ConvertStateWords(stored.data(), place.dtype, state.data(), expect.state_dtype, expect.state_values);
}

// Parses and checks a header (`head` may run past it). `refuse` makes the DATA_LOSS error naming
// the file or store entry; *place says where the state starts, how long it is and its dtype.
template <typename Refuse>
absl::StatusOr<SessionRecord> ParseHeader(std::span<const uint8_t> head, const SessionFileExpect& expect,
                                          const std::string& name, const Refuse& refuse, StatePlace* place) {
  Reader rd(head.data(), head.size());
  char magic[8];
  uint32_t version = 0, dtype = 0;
  uint64_t fingerprint = 0;
  int32_t pending = -1;
  SessionRecord r;
  if (!rd.Bytes(magic, sizeof(magic)) || std::memcmp(magic, kMagic, sizeof(kMagic)) != 0)
    return refuse("not a session file (bad magic)");
  if (!rd.Get(&version) || (version != kVersion && version != kVersionNoDType))
    return refuse(absl::StrCat("format version ", version, " (this server reads ", kVersionNoDType, " and ", kVersion, ")"));
  if (version == kVersion && !rd.Get(&dtype)) return refuse("truncated header");
  if (dtype > 1) return refuse(absl::StrCat("unknown state dtype ", dtype));
  place->dtype = dtype == 1 ? StateDType::kBF16 : StateDType::kF32;
  if (!rd.Get(&fingerprint) || !rd.Get(&place->words) || !rd.Get(&r.tokens) || !rd.Get(&pending) || !rd.Str(&r.id) ||
      !rd.Str(&r.adapter) || !rd.Get(&r.created_unix_s) || !rd.Get(&r.last_used_unix_s) || !rd.Get(&r.ttl_s))
    return refuse("truncated header");
  if (fingerprint != expect.model_fingerprint)
    return absl::FailedPreconditionError(absl::StrCat(name, ": written for another model (fingerprint ",
                                                      fingerprint, ", this model's ", expect.model_fingerprint, ")"));
  if (r.tokens < 0 || pending < -1) return refuse("negative token count");
  if (pending >= expect.vocab_size)
    return refuse(absl::StrCat("pending token ", pending, " is outside the vocabulary [0, ", expect.vocab_size, ")"));
  if (pending >= 0) r.pending = pending;
  const bool no_past = r.tokens == 0 && !r.pending;
  const int64_t want = StateWords(expect.state_values, place->dtype);
  if (place->words != want && !(place->words == 0 && (no_past || expect.record_only)))
    return absl::FailedPreconditionError(absl::StrCat(name, ": holds a state of ", place->words, " words (",
                                                      StateDTypeName(place->dtype), "), this model's has ", want));
  place->header_bytes = static_cast<int64_t>(rd.at());
  return r;
}

}  // namespace

absl::Status WriteSessionFile(const std::string& path, uint64_t model_fingerprint, const SessionRecord& r,
                              std::span<const float> state, StateDType dtype) {
  const std::vector<uint8_t> header = EncodeHeader(model_fingerprint, r, static_cast<int64_t>(state.size()), dtype);
  uint64_t h = Hash64(header);
  h = Hash64(AsBytes(state), h);
  // Temp file + fsync + rename + directory fsync: after a crash the old file or the new one is
  // there, whole, and a rename that returned is not undone.
  return WriteFileAtomically(path, {header, AsBytes(state), {reinterpret_cast<const uint8_t*>(&h), sizeof(h)}});
}

std::string EncodeSession(uint64_t model_fingerprint, const SessionRecord& r, std::span<const float> state,
                          StateDType dtype) {
  const std::vector<uint8_t> header = EncodeHeader(model_fingerprint, r, static_cast<int64_t>(state.size()), dtype);
  uint64_t h = Hash64(header);
  h = Hash64(AsBytes(state), h);
  std::string out;
  out.reserve(header.size() + state.size_bytes() + sizeof(h));
  out.append(reinterpret_cast<const char*>(header.data()), header.size());
  out.append(reinterpret_cast<const char*>(state.data()), state.size_bytes());
  out.append(reinterpret_cast<const char*>(&h), sizeof(h));
  return out;
}

absl::StatusOr<SessionRecord> DecodeSession(std::string_view bytes, const SessionFileExpect& expect,
                                            std::span<float> state, const std::string& name) {
  auto refuse = [&](const std::string& why) { return absl::DataLossError(absl::StrCat(name, ": ", why)); };
  const std::span<const uint8_t> all(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  StatePlace place;
  absl::StatusOr<SessionRecord> r = ParseHeader(all, expect, name, refuse, &place);
  if (!r.ok()) return r;
  const int64_t header = place.header_bytes, words = place.words;
  const int64_t expected = header + words * 4 + 8;
  if (static_cast<int64_t>(bytes.size()) != expected) return refuse(absl::StrCat(bytes.size(), " bytes, expected ", expected));
  if (!state.empty() && static_cast<int64_t>(state.size()) != expect.state_words())
    return absl::InvalidArgumentError("DecodeSession: state buffer of the wrong size");
  const std::span<const uint8_t> body = all.subspan(static_cast<size_t>(header), static_cast<size_t>(words) * 4);
  uint64_t stored = 0;
  std::memcpy(&stored, all.data() + header + words * 4, sizeof(stored));
  uint64_t h = Hash64(all.first(static_cast<size_t>(header)));
  h = Hash64(body, h);
  if (h != stored) return refuse("checksum mismatch (the entry is corrupt)");
  if (words == 0) std::fill(state.begin(), state.end(), 0.0f);
  else if (!state.empty()) CopyStateOut(body.data(), place, expect, state);
  return r;
}

absl::StatusOr<SessionRecord> ReadSessionFile(const std::string& path, const SessionFileExpect& expect,
                                              std::span<float> state) {
  auto refuse = [&](const std::string& why) { return absl::DataLossError(absl::StrCat("session file ", path, ": ", why)); };
  // Non-blocking and without following a link: a FIFO would block the open (and start-up) until a
  // writer came; it and anything else that is not a regular file is refused right after.
  Fd in{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC)};
  if (in.fd < 0) {
    if (errno == ELOOP) return refuse("a symbolic link (session files are regular files glad writes)");
    return absl::NotFoundError(absl::StrCat("session file ", path, ": cannot open (", std::strerror(errno), ")"));
  }
  struct stat st {};
  if (::fstat(in.fd, &st) != 0 || !S_ISREG(st.st_mode)) return refuse("not a regular file");
  const int64_t size = st.st_size;
  constexpr int64_t kMaxHeader = 512;
  std::vector<uint8_t> head(static_cast<size_t>(std::min<int64_t>(std::max<int64_t>(size, 0), kMaxHeader)));
  if (!ReadAll(in.fd, head.data(), head.size(), 0)) return refuse("cannot read its header");
  const std::string name = absl::StrCat("session file ", path);
  StatePlace place;
  absl::StatusOr<SessionRecord> r = ParseHeader(head, expect, name, refuse, &place);
  if (!r.ok()) return r;
  const int64_t header = place.header_bytes, words = place.words;
  const int64_t expected = header + words * 4 + 8;
  if (size != expected) return refuse(absl::StrCat(size, " bytes, expected ", expected));
  if (!state.empty() && static_cast<int64_t>(state.size()) != expect.state_words())
    return absl::InvalidArgumentError("ReadSessionFile: state buffer of the wrong size");
  // The stored words land in `state` directly when they are in its dtype; otherwise (or when only
  // the record is wanted) in a buffer of their own first.
  std::vector<float> own;
  std::span<float> dst = state;
  if (words == 0) {
    std::fill(state.begin(), state.end(), 0.0f);
    dst = {};
  } else if (dst.empty() || place.dtype != expect.state_dtype) {
    own.resize(static_cast<size_t>(words));
    dst = own;
  }
  uint64_t stored = 0;
  if (!ReadAll(in.fd, dst.data(), dst.size_bytes(), static_cast<off_t>(header)) ||
      !ReadAll(in.fd, &stored, sizeof(stored), static_cast<off_t>(header + words * 4)))
    return refuse("truncated state");
  uint64_t h = Hash64({head.data(), static_cast<size_t>(header)});
  h = Hash64({reinterpret_cast<const uint8_t*>(dst.data()), dst.size_bytes()}, h);
  if (h != stored) return refuse("checksum mismatch (the file is corrupt)");
  if (!state.empty() && words > 0 && place.dtype != expect.state_dtype)
    CopyStateOut(reinterpret_cast<const uint8_t*>(own.data()), place, expect, state);
  return r;
}

}  // namespace gla
