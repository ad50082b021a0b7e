#include "engine/sessions/session_file.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "models/fingerprint.h"

namespace gla {

namespace {

constexpr char kMagic[8] = {'G', 'L', 'A', 'S', 'E', 'S', 'S', '1'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxName = 64;

class Writer {
 public:
  template <typename T>
  void Put(const T& v) { Bytes(&v, sizeof(T)); }
  void Str(const std::string& s) {
    Put(static_cast<uint32_t>(s.size()));
    Bytes(s.data(), s.size());
  }
  void Bytes(const void* p, size_t n) {
    if (n == 0) return;
    const size_t at = buf.size();
    buf.resize(at + n);
    std::memcpy(buf.data() + at, p, n);
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

absl::Status WriteSessionFile(const std::string& path, uint64_t model_fingerprint, const SessionRecord& r,
                              std::span<const float> state) {
  Writer w;
  w.Bytes(kMagic, sizeof(kMagic));
  w.Put(kVersion);
  w.Put(model_fingerprint);
  w.Put(static_cast<int64_t>(state.size()));
  w.Put(r.tokens);
  w.Put(r.pending.value_or(-1));
  w.Str(r.id);
  w.Str(r.adapter);
  w.Put(r.created_unix_s);
  w.Put(r.last_used_unix_s);
  w.Put(r.ttl_s);
  uint64_t h = Hash64(w.buf);
  h = Hash64({reinterpret_cast<const uint8_t*>(state.data()), state.size_bytes()}, h);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(w.buf.data()), static_cast<std::streamsize>(w.buf.size()));
    out.write(reinterpret_cast<const char*>(state.data()), static_cast<std::streamsize>(state.size_bytes()));
    out.write(reinterpret_cast<const char*>(&h), sizeof(h));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::InternalError(absl::StrCat("cannot write session file ", tmp));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<SessionRecord> ReadSessionFile(const std::string& path, uint64_t model_fingerprint,
                                              int64_t state_floats, std::span<float> state) {
  auto refuse = [&](const std::string& why) { return absl::DataLossError(absl::StrCat("session file ", path, ": ", why)); };
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("session file ", path, ": cannot open"));
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  in.seekg(0);
  constexpr int64_t kMaxHeader = 512;
  std::vector<uint8_t> head(static_cast<size_t>(std::min<int64_t>(std::max<int64_t>(size, 0), kMaxHeader)));
  if (!in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size())))
    return refuse("cannot read its header");
  Reader rd(head.data(), head.size());
  char magic[8];
  uint32_t version = 0;
  uint64_t fingerprint = 0;
  int64_t floats = 0;
  int32_t pending = -1;
  SessionRecord r;
  if (!rd.Bytes(magic, sizeof(magic)) || std::memcmp(magic, kMagic, sizeof(kMagic)) != 0)
    return refuse("not a session file (bad magic)");
  if (!rd.Get(&version) || version != kVersion) return refuse(absl::StrCat("format version ", version, " (this server reads ", kVersion, ")"));
  if (!rd.Get(&fingerprint) || !rd.Get(&floats) || !rd.Get(&r.tokens) || !rd.Get(&pending) || !rd.Str(&r.id) ||
      !rd.Str(&r.adapter) || !rd.Get(&r.created_unix_s) || !rd.Get(&r.last_used_unix_s) || !rd.Get(&r.ttl_s))
    return refuse("truncated header");
  if (fingerprint != model_fingerprint)
    return absl::FailedPreconditionError(
        absl::StrCat("session file ", path, ": written for another model (fingerprint ", fingerprint, ", this model's ", model_fingerprint, ")"));
  if (floats != state_floats)
    return absl::FailedPreconditionError(absl::StrCat("session file ", path, ": holds a state of ", floats,
                                                      " floats, this model's has ", state_floats));
  if (r.tokens < 0 || pending < -1) return refuse("negative token count");
  if (pending >= 0) r.pending = pending;
  const int64_t header = static_cast<int64_t>(rd.at());
  const int64_t expected = header + floats * 4 + 8;
  if (size != expected) return refuse(absl::StrCat(size, " bytes, expected ", expected));
  std::vector<float> own;
  std::span<float> dst = state;
  if (dst.empty()) {
    own.resize(static_cast<size_t>(floats));
    dst = own;
  } else if (static_cast<int64_t>(dst.size()) != floats) {
    return absl::InvalidArgumentError("ReadSessionFile: state buffer of the wrong size");
  }
  uint64_t stored = 0;
  in.seekg(header);
  if (!in.read(reinterpret_cast<char*>(dst.data()), static_cast<std::streamsize>(dst.size_bytes())) ||
      !in.read(reinterpret_cast<char*>(&stored), sizeof(stored)))
    return refuse("truncated state");
  uint64_t h = Hash64({head.data(), static_cast<size_t>(header)});
  h = Hash64({reinterpret_cast<const uint8_t*>(dst.data()), dst.size_bytes()}, h);
  if (h != stored) return refuse("checksum mismatch (the file is corrupt)");
  return r;
}

}  // namespace gla
