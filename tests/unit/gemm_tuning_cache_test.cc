// The GEMM tuning cache file (engine/model/gemm_tuning_cache.h): its text round-trips, anything it
// would not write is refused with the line, hostile files (another file, a FIFO, a folder, too large,
// a missing folder) are refused at Open and never written over, and Add merges with what another
// writer added meanwhile, writing back only the records it added. The cuBLASLt side (restoring a choice) runs on the GPU
// (cuda_engine_test TunedGemmsFromACacheGiveTheSameBits).
#include "engine/model/gemm_tuning_cache.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace gla {
namespace {

namespace fs = std::filesystem;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct TempDir {
  fs::path dir;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "gla-gemm-cache-XXXXXX").string();
    dir = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(dir); }
};

GemmTuningChoice Algo(uint64_t first) {
  GemmTuningChoice c;
  c.use_default = false;
  for (size_t i = 0; i < c.algo.size(); ++i) c.algo[i] = first + i * 0x1111111111111111ull;
  return c;
}

TEST(GemmTuningCache, TextRoundTrips) {
  GemmTuningRecords records;
  records["NVIDIA H100 80GB HBM3 sm_90 cublasLt 130000"][{2048, 2048, 2048, 2048, false, true, 32}] = Algo(1);
  records["NVIDIA H100 80GB HBM3 sm_90 cublasLt 130000"][{6160, 2048, 2048, 6160, false, false, 512}] = {};
  records["NVIDIA H200 sm_90 cublasLt 130000"][{11264, 2048, 2048, 11264, true, false, 4096}] = Algo(~0ull - 9);
  const std::string text = FormatGemmTuningCache(records);
  EXPECT_EQ(text.rfind("gla-gemm-tuning-cache 1\n", 0), 0u) << text;
  const auto back = ParseGemmTuningCache(text);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, records);
  EXPECT_EQ(FormatGemmTuningCache(*back), text);
  EXPECT_TRUE(ParseGemmTuningCache("gla-gemm-tuning-cache 1\n").ok());
  EXPECT_TRUE(ParseGemmTuningCache("gla-gemm-tuning-cache 1").ok());
}

TEST(GemmTuningCache, RefusesWhatItWouldNotWriteNamingTheLine) {
  const std::string head = "gla-gemm-tuning-cache 1\n";
  const std::string good = "dev\t8 8 8 8 0 0 1\tdefault\n";
  ASSERT_TRUE(ParseGemmTuningCache(head + good).ok());
  const std::string hex8 = "0000000000000001 0000000000000002 0000000000000003 0000000000000004 "
                           "0000000000000005 0000000000000006 0000000000000007 0000000000000008";
  ASSERT_TRUE(ParseGemmTuningCache(head + "dev\t8 8 8 8 1 1 7\t" + hex8 + "\n").ok());
  for (const std::string& bad :
       {std::string("root:x:0:0:root:/root:/bin/bash\n"), std::string("gla-gemm-tuning-cache 2\n"),
        std::string(""), head + "dev\t8 8 8 8 0 0 1\n", head + "\t8 8 8 8 0 0 1\tdefault\n",
        head + "dev\t8 8 8 8 0 0\tdefault\n", head + "dev\t8 8 8 8 0 0 1 1\tdefault\n",
        head + "dev\t0 8 8 8 0 0 1\tdefault\n", head + "dev\t-8 8 8 8 0 0 1\tdefault\n",
        head + "dev\t+8 8 8 8 0 0 1\tdefault\n", head + "dev\t8 8 8 8 2 0 1\tdefault\n",
        head + "dev\t99999999999 8 8 8 0 0 1\tdefault\n", head + "dev\t8  8 8 8 0 0 1\tdefault\n",
        head + "dev\t8 8 8 8 0 0 1\tDefault\n", head + "dev\t8 8 8 8 0 0 1\t0000000000000001\n",
        head + "dev\t8 8 8 8 0 0 1\t" + hex8 + " 0000000000000009\n",
        head + "dev\t8 8 8 8 0 0 1\t" + hex8.substr(1) + "\n",
        head + "dev\t8 8 8 8 0 0 1\t" + std::string(hex8).replace(0, 1, "g") + "\n", head + good + good,
        head + good + "\n" + good, head + good + "dev\t8 8 8 8 0 0 1\tdefault\textra\n"}) {
    const auto parsed = ParseGemmTuningCache(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  const auto dup = ParseGemmTuningCache(head + good + good);
  EXPECT_NE(std::string(dup.status().message()).find("line 3"), std::string::npos) << dup.status();
}

TEST(GemmTuningCache, AMissingFileIsEmptyAndTheFirstAddCreatesIt) {
  TempDir t;
  const fs::path p = t.dir / "gemms.cache";
  auto cache = GemmTuningCache::Open(p.string(), "dev\twith a tab");
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(cache->device_key(), "dev with a tab");
  EXPECT_EQ(cache->size(), 0);
  EXPECT_FALSE(fs::exists(p));
  const GemmTuningKey key{2048, 2048, 2048, 2048, false, true, 32};
  EXPECT_EQ(cache->Find(key), nullptr);
  ASSERT_TRUE(cache->Add(key, Algo(5)).ok());
  ASSERT_NE(cache->Find(key), nullptr);
  EXPECT_EQ(*cache->Find(key), Algo(5));
  // A second process (here: a second Open) finds it; another device key does not.
  auto again = GemmTuningCache::Open(p.string(), "dev with a tab");
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_NE(again->Find(key), nullptr);
  EXPECT_EQ(*again->Find(key), Algo(5));
  auto other = GemmTuningCache::Open(p.string(), "another GPU");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->Find(key), nullptr);
  // No temporary file is left beside it.
  int files = 0;
  for (const auto& e : fs::directory_iterator(t.dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(GemmTuningCache, AddKeepsWhatAnotherWriterAddedMeanwhile) {
  TempDir t;
  const std::string p = (t.dir / "c").string();
  auto a = GemmTuningCache::Open(p, "gpu");
  auto b = GemmTuningCache::Open(p, "gpu");
  auto c = GemmTuningCache::Open(p, "other gpu");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  const GemmTuningKey k1{8, 8, 8, 8, false, false, 1}, k2{16, 8, 8, 16, true, false, 2};
  ASSERT_TRUE(a->Add(k1, Algo(1)).ok());
  ASSERT_TRUE(b->Add(k2, {}).ok());
  ASSERT_TRUE(c->Add(k1, Algo(9)).ok());
  const auto on_disk = ParseGemmTuningCache(Slurp(p));
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  ASSERT_EQ(on_disk->at("gpu").size(), 2u);
  EXPECT_EQ(on_disk->at("gpu").at(k1), Algo(1));
  EXPECT_TRUE(on_disk->at("gpu").at(k2).use_default);
  EXPECT_EQ(on_disk->at("other gpu").at(k1), Algo(9));
}

TEST(GemmTuningCache, HostileFilesAreRefusedAndNeverWrittenOver) {
  TempDir t;
  // Another file: refused with the reason, left as it was.
  const fs::path notes = t.dir / "notes.txt";
  std::ofstream(notes) << "my notes\n";
  auto opened = GemmTuningCache::Open(notes.string(), "gpu");
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(opened.status().message()).find("not a GEMM tuning cache"), std::string::npos)
      << opened.status();
  EXPECT_EQ(Slurp(notes), "my notes\n");
  // A FIFO (opening it must not block), a folder, an oversized file, a missing folder, no path.
  const fs::path fifo = t.dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(GemmTuningCache::Open(fifo.string(), "gpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GemmTuningCache::Open(t.dir.string(), "gpu").status().code(), absl::StatusCode::kInvalidArgument);
  const fs::path big = t.dir / "big";
  {
    std::ofstream out(big);
    out << "gla-gemm-tuning-cache 1\n";
    out << std::string(GemmTuningCache::kMaxBytes, '\n');
  }
  const auto too_big = GemmTuningCache::Open(big.string(), "gpu");
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(too_big.status().message()).find("more than a cache holds"), std::string::npos)
      << too_big.status();
  EXPECT_EQ(GemmTuningCache::Open((t.dir / "no-such-folder" / "c").string(), "gpu").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GemmTuningCache::Open("", "gpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GemmTuningCache::Open((t.dir / "c").string(), "").status().code(), absl::StatusCode::kInvalidArgument);
  // Replaced by something else after Open: Add refuses to write over it.
  const fs::path p = t.dir / "c";
  auto cache = GemmTuningCache::Open(p.string(), "gpu");
  ASSERT_TRUE(cache.ok());
  std::ofstream(p) << "someone else's file\n";
  const absl::Status added = cache->Add({8, 8, 8, 8, false, false, 1}, {});
  EXPECT_EQ(added.code(), absl::StatusCode::kFailedPrecondition) << added;
  EXPECT_EQ(Slurp(p), "someone else's file\n");
  ASSERT_NE(cache->Find({8, 8, 8, 8, false, false, 1}), nullptr) << "kept in memory for this process";
}

// A writer killed between creating its temporary file and renaming it leaves `<name>.tmp.<pid>.<n>`;
// the next Open removes those of dead processes, and of this process's pid (a predecessor of the same
// pid: the usual case in a container), once they are ten minutes old, and nothing else: not a live
// process's (a child that waits), not a fresh one (a writer in another PID namespace may own it), not
// another cache's, not a name of another form, not a symlink (nor its target). A fresh file of this
// pid holding the name Add would take first is stepped over, not an error.
// A cache opened before another writer replaced a record must not write its stale copy back: Add
// writes over the file only the records this cache added, and leaves every other record as the file
// has it now (a choice re-timed by a newer process, say after cuBLASLt stopped taking the old one).
TEST(GemmTuningCache, AddWritesBackOnlyTheRecordsItAdded) {
  TempDir t;
  const std::string p = (t.dir / "c").string();
  const GemmTuningKey k1{8, 8, 8, 8, false, false, 1}, k2{16, 8, 8, 16, true, false, 2};
  {
    auto first = GemmTuningCache::Open(p, "gpu");
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE(first->Add(k1, Algo(1)).ok());
  }
  auto late = GemmTuningCache::Open(p, "gpu");  // reads k1 = Algo(1)
  ASSERT_TRUE(late.ok());
  ASSERT_NE(late->Find(k1), nullptr);
  {
    auto retimed = GemmTuningCache::Open(p, "gpu");
    ASSERT_TRUE(retimed.ok());
    ASSERT_TRUE(retimed->Add(k1, Algo(5)).ok());  // k1 replaced on disk
  }
  ASSERT_TRUE(late->Add(k2, {}).ok());
  const auto on_disk = ParseGemmTuningCache(Slurp(p));
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  EXPECT_EQ(on_disk->at("gpu").at(k1), Algo(5));  // not late's Algo(1)
  EXPECT_TRUE(on_disk->at("gpu").at(k2).use_default);
  // And late's own record still wins over another writer's for the key it added.
  {
    auto other = GemmTuningCache::Open(p, "gpu");
    ASSERT_TRUE(other.ok());
    ASSERT_TRUE(other->Add(k2, Algo(7)).ok());
  }
  ASSERT_TRUE(late->Add(k1, Algo(3)).ok());
  const auto after = ParseGemmTuningCache(Slurp(p));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->at("gpu").at(k1), Algo(3));
  EXPECT_TRUE(after->at("gpu").at(k2).use_default);
}

TEST(GemmTuningCache, OpenRemovesTheTemporaryFilesOfDeadWriters) {
  TempDir t;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);  // `child` is now the pid of no live process
  // A live writer of our own making (the parent's pid may be 0 in a container, a name Open skips for
  // its form rather than its liveness): a child that waits until it is killed below.
  const pid_t alive = ::fork();
  ASSERT_GE(alive, 0);
  if (alive == 0) {
    ::pause();
    ::_exit(0);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{alive};
  const std::string dead = std::to_string(child), live = std::to_string(alive), self = std::to_string(::getpid());
  const auto old_time = fs::file_time_type::clock::now() - std::chrono::hours(1);
  auto make = [&](const std::string& name, bool old) {
    std::ofstream(t.dir / name) << "half a cache";
    if (old) fs::last_write_time(t.dir / name, old_time);
  };
  make("c.tmp." + dead + ".0", true);       // removed
  make("c.tmp." + dead + ".1", false);      // fresh: kept
  make("c.tmp." + live + ".0", true);       // a live writer's: kept
  make("c.tmp." + self + ".100", true);     // a predecessor of this pid: removed
  make("other.tmp." + dead + ".0", true);   // another cache's: kept
  make("c.tmp." + dead + ".x", true);       // not the form: kept
  make("c.tmp." + dead, true);              // not the form: kept
  make("target", true);
  fs::create_symlink(t.dir / "target", t.dir / ("c.tmp." + dead + ".2"));  // a symlink: kept, and its target
  auto cache = GemmTuningCache::Open((t.dir / "c").string(), "gpu");
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_FALSE(fs::exists(t.dir / ("c.tmp." + dead + ".0")));
  EXPECT_FALSE(fs::exists(t.dir / ("c.tmp." + self + ".100")));
  for (const std::string& kept : {"c.tmp." + dead + ".1", "c.tmp." + live + ".0", "other.tmp." + dead + ".0",
                                  "c.tmp." + dead + ".x", "c.tmp." + dead, std::string("target")})
    EXPECT_TRUE(fs::exists(t.dir / kept)) << kept;
  EXPECT_TRUE(fs::is_symlink(t.dir / ("c.tmp." + dead + ".2")));
  // Fresh files of this pid at the names Add takes next: stepped over (they stay: fresh).
  for (int n = 0; n < 40; ++n) make("c.tmp." + self + "." + std::to_string(n), false);
  // And with the cache file itself there (the usual case: a restart after the crash).
  make("c.tmp." + dead + ".3", true);
  ASSERT_TRUE(cache->Add({8, 8, 8, 8, false, false, 1}, {}).ok());
  ASSERT_TRUE(GemmTuningCache::Open((t.dir / "c").string(), "gpu").ok());
  EXPECT_FALSE(fs::exists(t.dir / ("c.tmp." + dead + ".3")));
}

// A cache path that is a symlink (to shared storage, say) is written through, not replaced by a file
// of its own at the first Add; a dangling one is refused with the reason.
TEST(GemmTuningCache, ASymlinkedPathIsWrittenThrough) {
  TempDir t;
  fs::create_directory(t.dir / "shared");
  const fs::path target = t.dir / "shared" / "gemms.cache", link = t.dir / "link.cache";
  {
    auto first = GemmTuningCache::Open(target.string(), "gpu");
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_TRUE(first->Add({8, 8, 8, 8, false, false, 1}, Algo(3)).ok());
  }
  fs::create_symlink(target, link);
  auto cache = GemmTuningCache::Open(link.string(), "gpu");
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(fs::path(cache->path()), fs::canonical(target));
  ASSERT_NE(cache->Find({8, 8, 8, 8, false, false, 1}), nullptr) << "read through the link";
  ASSERT_TRUE(cache->Add({8, 8, 8, 8, false, false, 2}, Algo(4)).ok());
  EXPECT_TRUE(fs::is_symlink(link)) << "the link was replaced by a file";
  const auto on_disk = ParseGemmTuningCache(Slurp(target));
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  EXPECT_EQ(on_disk->at("gpu").size(), 2u) << "the record went to the link's target";
  fs::create_symlink(t.dir / "nowhere" / "c", t.dir / "dangling");
  const auto dangling = GemmTuningCache::Open((t.dir / "dangling").string(), "gpu");
  EXPECT_EQ(dangling.status().code(), absl::StatusCode::kInvalidArgument) << dangling.status();
  EXPECT_NE(std::string(dangling.status().message()).find("symlink"), std::string::npos) << dangling.status();
}

// A cache that would grow past what Open reads back is not written (its records stay in memory).
TEST(GemmTuningCache, NeverWritesAFileItWouldNotReadBack) {
  TempDir t;
  const fs::path p = t.dir / "c";
  auto cache = GemmTuningCache::Open(p.string(), std::string(GemmTuningCache::kMaxBytes / 4, 'x'));
  ASSERT_TRUE(cache.ok()) << cache.status();
  ASSERT_TRUE(cache->Add({8, 8, 8, 8, false, false, 1}, {}).ok());  // one record: ~1 MiB
  absl::Status grown;
  for (int64_t rows = 2; rows < 8 && grown.ok(); ++rows) grown = cache->Add({8, 8, 8, 8, false, false, rows}, {});
  EXPECT_EQ(grown.code(), absl::StatusCode::kResourceExhausted) << grown;
  EXPECT_LE(static_cast<int64_t>(fs::file_size(p)), GemmTuningCache::kMaxBytes);
  EXPECT_TRUE(GemmTuningCache::Open(p.string(), "y").ok()) << "what is on disk still reads back";
}

}  // namespace
}  // namespace gla
