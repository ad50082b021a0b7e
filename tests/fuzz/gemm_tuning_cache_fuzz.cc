// Fuzzes GEMM tuning cache files (engine/model/gemm_tuning_cache.h; glad --gemm_tuning_cache): the
// file persists across restarts and may be shared between servers, so its bytes are outside input.
// Arbitrary bytes are parsed as a cache's text (ParseGemmTuningCache) and opened as the file at a
// cache path (GemmTuningCache::Open), then a record is added (Add: re-read, merge, write beside and
// rename). Promise: INVALID_ARGUMENT (a parse error naming its line; an open error naming the file),
// or the records round-trip: Format(Parse(x)) parses to the same records, Format is then a fixed
// point, Open agrees with Parse, every record is found under its device key, and after Add the file
// reads back with the new record and every old one; never UB, a crash or a leak.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/model/gemm_tuning_cache.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = gla::ParseGemmTuningCache(text);
  if (parsed.ok()) {
    const std::string formatted = gla::FormatGemmTuningCache(*parsed);
    auto again = gla::ParseGemmTuningCache(formatted);
    GLA_FUZZ_CHECK(again.ok(), "Format wrote what Parse refuses: %s", again.status().ToString().c_str());
    GLA_FUZZ_CHECK(*again == *parsed, "the records changed through Format and Parse");
    GLA_FUZZ_CHECK(gla::FormatGemmTuningCache(*again) == formatted, "Format is not a fixed point");
  } else {
    GLA_FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument, "parse refused with %s",
                   parsed.status().ToString().c_str());
  }

  static const std::string path = gla::fuzz::TempDir() + "/gemms.cache";
  gla::fuzz::WriteFileOrDie(path, text);
  // Open cleans a device key of tabs, newlines and carriage returns (a file's key may hold a '\r':
  // no process opens it). The first record's key when it is clean (so that Find is exercised), else
  // a fixed one.
  auto clean = [](const std::string& k) { return k.find_first_of("\t\n\r") == std::string::npos; };
  std::string key = "fuzz gpu";
  if (parsed.ok() && !parsed->empty() && clean(parsed->begin()->first)) key = parsed->begin()->first;
  auto cache = gla::GemmTuningCache::Open(path, key);
  GLA_FUZZ_CHECK(cache.ok() == parsed.ok() || static_cast<int64_t>(size) > gla::GemmTuningCache::kMaxBytes,
                 "Open %s, Parse %s", cache.status().ToString().c_str(), parsed.status().ToString().c_str());
  if (!cache.ok()) {
    GLA_FUZZ_CHECK(cache.status().code() == absl::StatusCode::kInvalidArgument, "open refused with %s",
                   cache.status().ToString().c_str());
    GLA_FUZZ_CHECK(cache.status().message().find(path) != std::string_view::npos, "refusal does not name the file: %s",
                   cache.status().ToString().c_str());
    return 0;
  }
  GLA_FUZZ_CHECK(cache->device_key() == key, "device key '%s' opened as '%s'", key.c_str(),
                 cache->device_key().c_str());
  const auto mine = parsed->find(key);
  const int expected = mine == parsed->end() ? 0 : static_cast<int>(mine->second.size());
  GLA_FUZZ_CHECK(cache->size() == expected, "%d records under the key, %d parsed", cache->size(), expected);
  if (mine != parsed->end())
    for (const auto& [k, choice] : mine->second) {
      const gla::GemmTuningChoice* found = cache->Find(k);
      GLA_FUZZ_CHECK(found != nullptr && *found == choice, "a parsed record not found under its key");
    }

  const gla::GemmTuningKey added{7, 9, 9, 7, true, false, 3};
  gla::GemmTuningChoice choice;
  choice.use_default = false;
  choice.algo = {1, 2, 3, 4, 5, 6, 7, 8};
  const absl::Status status = cache->Add(added, choice);
  GLA_FUZZ_CHECK(status.ok(), "Add after a good Open: %s", status.ToString().c_str());
  auto reread = gla::GemmTuningCache::Open(path, key);
  GLA_FUZZ_CHECK(reread.ok(), "the written file does not open: %s", reread.status().ToString().c_str());
  const gla::GemmTuningChoice* back = reread->Find(added);
  GLA_FUZZ_CHECK(back != nullptr && *back == choice, "the added record did not come back");
  GLA_FUZZ_CHECK(reread->size() == expected + (mine != parsed->end() && mine->second.count(added) ? 0 : 1),
                 "records lost or gained: %d after Add, %d before", reread->size(), expected);
  for (const auto& [device, records] : *parsed) {
    if (!clean(device)) continue;
    auto other = gla::GemmTuningCache::Open(path, device);
    GLA_FUZZ_CHECK(other.ok(), "reopen under '%s': %s", device.c_str(), other.status().ToString().c_str());
    for (const auto& [k, c] : records) {
      if (device == key && k == added) continue;
      const gla::GemmTuningChoice* found = other->Find(k);
      GLA_FUZZ_CHECK(found != nullptr && *found == c, "a record of '%s' lost by Add", device.c_str());
    }
  }
  return 0;
}
