#include "engine/model/gemm_tuning_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <mutex>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace gla {

namespace {

constexpr absl::string_view kHeader = "gla-gemm-tuning-cache 1";

// Serializes Add's read-merge-write within the process (several engines may share one file).
std::mutex& FileMutex() {
  static std::mutex m;
  return m;
}

std::string Errno(absl::string_view what, const std::string& path) {
  return absl::StrCat(what, " ", path, ": ", std::strerror(errno));
}

bool ParseCount(absl::string_view s, int64_t* out) {
  return !s.empty() && s.front() != '+' && s.front() != '-' && absl::SimpleAtoi(s, out) && *out >= 1 &&
         *out <= std::numeric_limits<int32_t>::max();
}

bool ParseFlag(absl::string_view s, bool* out) {
  if (s != "0" && s != "1") return false;
  *out = s == "1";
  return true;
}

// The whole file at `path` into *text; *missing where there is none (then *text is empty).
absl::Status ReadCacheFile(const std::string& path, std::string* text, bool* missing) {
  *missing = false;
  text->clear();
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below, as not a regular file).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      *missing = true;
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(Errno("GEMM tuning cache: cannot open", path));
  }
  struct stat st {};
  absl::Status status;
  if (::fstat(fd, &st) != 0) {
    status = absl::InvalidArgumentError(Errno("GEMM tuning cache: cannot stat", path));
  } else if (!S_ISREG(st.st_mode)) {
    status = absl::InvalidArgumentError(absl::StrCat("GEMM tuning cache ", path, " is not a regular file"));
  } else if (st.st_size > GemmTuningCache::kMaxBytes) {
    status = absl::InvalidArgumentError(absl::StrCat("GEMM tuning cache ", path, " is ", st.st_size,
                                                     " bytes, more than a cache holds (",
                                                     GemmTuningCache::kMaxBytes, ")"));
  } else {
    // Read to the end (the size may change under a concurrent writer's rename: the old file is read).
    char buf[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        status = absl::InvalidArgumentError(Errno("GEMM tuning cache: cannot read", path));
        break;
      }
      if (n == 0) break;
      text->append(buf, static_cast<size_t>(n));
      if (static_cast<int64_t>(text->size()) > GemmTuningCache::kMaxBytes) {
        status = absl::InvalidArgumentError(absl::StrCat("GEMM tuning cache ", path, " grew past ",
                                                         GemmTuningCache::kMaxBytes, " bytes while read"));
        break;
      }
    }
  }
  ::close(fd);
  return status;
}

// `text` written to a new file beside `path`, then renamed over it.
absl::Status WriteCacheFile(const std::string& path, const std::string& text) {
  static std::atomic<int> counter{0};
  // A name that exists (a file a crashed process of the same pid left: in a container the server is
  // often the same pid at every start) is skipped for the next one.
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 64 && fd < 0; ++attempt) {
    tmp = absl::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) return absl::InternalError(Errno("GEMM tuning cache: cannot create", tmp));
  size_t done = 0;
  absl::Status status;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      status = absl::InternalError(Errno("GEMM tuning cache: cannot write", tmp));
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (status.ok() && ::fsync(fd) != 0) status = absl::InternalError(Errno("GEMM tuning cache: cannot sync", tmp));
  if (::close(fd) != 0 && status.ok()) status = absl::InternalError(Errno("GEMM tuning cache: cannot close", tmp));
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0)
    status = absl::InternalError(Errno("GEMM tuning cache: cannot rename it to", path));
  if (!status.ok()) ::unlink(tmp.c_str());
  return status;
}

// The folder of `path` ("." for a bare name) and its last component.
void SplitPath(const std::string& path, std::string* dir, std::string* base) {
  const size_t slash = path.rfind('/');
  *dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  *base = slash == std::string::npos ? path : path.substr(slash + 1);
}

// Removes the temporary files WriteCacheFile leaves when its process dies between creating one and
// renaming it (a crash or kill -9 at that moment): `<base>.tmp.<pid>.<n>` beside `path` whose pid is
// no live process here, or is this process's (a crashed predecessor of the same pid: in a container
// the server is often pid 1 at every start), and whose last change is older than kStaleTempSeconds.
// The age too: a writer in another PID namespace sharing the folder (two containers, one volume) is
// not visible to kill(), and this process's own writes are in flight for milliseconds, so neither's
// file is ever that old. Only regular files of exactly that name form are touched (never a symlink's
// target). Best effort: what cannot be read or removed stays.
constexpr int64_t kStaleTempSeconds = 600;
void RemoveStaleTempFiles(const std::string& path) {
  std::string dir, base;
  SplitPath(path, &dir, &base);
  const std::string prefix = base + ".tmp.";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  const int dir_fd = ::dirfd(d);
  const time_t now = ::time(nullptr);
  while (const dirent* e = ::readdir(d)) {
    const absl::string_view name(e->d_name);
    if (!absl::StartsWith(name, prefix)) continue;
    const std::vector<absl::string_view> parts = absl::StrSplit(name.substr(prefix.size()), '.');
    int64_t pid = 0, n = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &pid) || !absl::SimpleAtoi(parts[1], &n) || pid <= 0 ||
        pid > std::numeric_limits<pid_t>::max() || n < 0)
      continue;
    if (pid != ::getpid() && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH))
      continue;  // alive, or not ours to ask
    struct stat st {};
    if (::fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    if (now - st.st_mtime < kStaleTempSeconds) continue;
    ::unlinkat(dir_fd, e->d_name, 0);
  }
  ::closedir(d);
}

std::string CleanKey(std::string key) {
  for (char& c : key)
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  return key;
}

}  // namespace

absl::StatusOr<GemmTuningRecords> ParseGemmTuningCache(std::string_view whole) {
  GemmTuningRecords records;
  const absl::string_view text(whole.data(), whole.size());
  const std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (lines.empty() || lines.front() != kHeader)
    return absl::InvalidArgumentError(absl::StrCat("not a GEMM tuning cache: its first line is not '", kHeader, "'"));
  for (size_t i = 1; i < lines.size(); ++i) {
    const absl::string_view line = lines[i];
    if (line.empty() && i + 1 == lines.size()) break;  // the final newline
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("GEMM tuning cache line ", i + 1, ": ", why));
    };
    const std::vector<absl::string_view> fields = absl::StrSplit(line, '\t');
    if (fields.size() != 3) return bad("expected three tab-separated fields");
    if (fields[0].empty()) return bad("empty device key");
    const std::vector<absl::string_view> nums = absl::StrSplit(fields[1], ' ');
    GemmTuningKey key;
    if (nums.size() != 7 || !ParseCount(nums[0], &key.N) || !ParseCount(nums[1], &key.K) ||
        !ParseCount(nums[2], &key.x_stride) || !ParseCount(nums[3], &key.y_stride) ||
        !ParseFlag(nums[4], &key.y_bf16) || !ParseFlag(nums[5], &key.accumulate) || !ParseCount(nums[6], &key.rows))
      return bad("expected N K x_stride y_stride y_bf16 accumulate rows (counts from 1, flags 0 or 1)");
    GemmTuningChoice choice;
    if (fields[2] != "default") {
      const std::vector<absl::string_view> words = absl::StrSplit(fields[2], ' ');
      if (words.size() != choice.algo.size()) return bad("expected 'default' or 8 hexadecimal words");
      choice.use_default = false;
      for (size_t w = 0; w < words.size(); ++w) {
        uint64_t v = 0;
        if (words[w].size() != 16 || !absl::SimpleHexAtoi(words[w], &v)) return bad("a word is not 16 hex digits");
        choice.algo[w] = v;
      }
    }
    if (!records[std::string(fields[0])].emplace(key, choice).second) return bad("a second record of the same key");
  }
  return records;
}

std::string FormatGemmTuningCache(const GemmTuningRecords& records) {
  std::string out = absl::StrCat(kHeader, "\n");
  for (const auto& [device, entries] : records) {
    for (const auto& [k, c] : entries) {
      absl::StrAppend(&out, device, "\t", k.N, " ", k.K, " ", k.x_stride, " ", k.y_stride, " ", k.y_bf16 ? 1 : 0, " ",
                      k.accumulate ? 1 : 0, " ", k.rows, "\t");
      if (c.use_default) {
        out += "default";
      } else {
        for (size_t w = 0; w < c.algo.size(); ++w) absl::StrAppendFormat(&out, "%s%016x", w ? " " : "", c.algo[w]);
      }
      out += "\n";
    }
  }
  return out;
}

absl::StatusOr<GemmTuningCache> GemmTuningCache::Open(std::string path, std::string device_key) {
  if (path.empty()) return absl::InvalidArgumentError("GEMM tuning cache: empty path");
  device_key = CleanKey(std::move(device_key));
  if (device_key.empty()) return absl::InvalidArgumentError("GEMM tuning cache: empty device key");
  // A symlink (an operator pointing the cache at shared storage) is written through: Add's rename
  // would otherwise replace the link with a file of its own and the shared file would stop growing.
  struct stat link {};
  if (::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
    char* resolved = ::realpath(path.c_str(), nullptr);
    if (resolved == nullptr)
      return absl::InvalidArgumentError(Errno("GEMM tuning cache: cannot resolve the symlink", path));
    path = resolved;
    std::free(resolved);
  }
  std::string text;
  bool missing = false;
  if (absl::Status s = ReadCacheFile(path, &text, &missing); !s.ok()) return s;
  RemoveStaleTempFiles(path);
  if (missing) {
    // Its folder must exist: the first Add creates the file there.
    std::string dir, base;
    SplitPath(path, &dir, &base);
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return absl::InvalidArgumentError(absl::StrCat("GEMM tuning cache ", path, ": its folder ", dir,
                                                     " does not exist"));
    return GemmTuningCache(std::move(path), std::move(device_key), {});
  }
  absl::StatusOr<GemmTuningRecords> records = ParseGemmTuningCache(text);
  if (!records.ok())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", records.status().message()));
  return GemmTuningCache(std::move(path), std::move(device_key), *std::move(records));
}

const GemmTuningChoice* GemmTuningCache::Find(const GemmTuningKey& key) const {
  const auto device = records_.find(device_key_);
  if (device == records_.end()) return nullptr;
  const auto it = device->second.find(key);
  return it == device->second.end() ? nullptr : &it->second;
}

int GemmTuningCache::size() const {
  const auto device = records_.find(device_key_);
  return device == records_.end() ? 0 : static_cast<int>(device->second.size());
}

absl::Status GemmTuningCache::Add(const GemmTuningKey& key, const GemmTuningChoice& choice) {
  records_[device_key_][key] = choice;
  added_[key] = choice;
  std::lock_guard<std::mutex> lock(FileMutex());
  std::string text;
  bool missing = false;
  if (absl::Status s = ReadCacheFile(path_, &text, &missing); !s.ok()) return s;
  GemmTuningRecords merged;
  if (!missing) {
    absl::StatusOr<GemmTuningRecords> on_disk = ParseGemmTuningCache(text);
    if (!on_disk.ok())  // replaced by something else since Open: not ours to write over
      return absl::FailedPreconditionError(absl::StrCat(path_, ": ", on_disk.status().message()));
    merged = *std::move(on_disk);
  }
  // Only what this cache added goes over the file: a record it merely read at Open may have been
  // replaced since by another writer (re-timed where cuBLASLt stopped taking the old choice), and
  // writing the copy read back would undo that.
  for (const auto& [k, c] : added_) merged[device_key_][k] = c;
  std::string out = FormatGemmTuningCache(merged);
  // Never write what Open would refuse to read back.
  if (static_cast<int64_t>(out.size()) > kMaxBytes)
    return absl::ResourceExhaustedError(absl::StrCat(path_, ": the cache would grow past ", kMaxBytes, " bytes"));
  if (absl::Status written = WriteCacheFile(path_, out); !written.ok()) return written;
  records_ = std::move(merged);  // Find answers as the file now has it
  return absl::OkStatus();
}

}  // namespace gla
