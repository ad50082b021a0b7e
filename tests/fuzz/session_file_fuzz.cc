// Fuzzes session files (engine/sessions/session_file.h ReadSessionFile): arbitrary bytes as a
// <id>.glasession file, read for a model of fingerprint kFingerprint with kStateFloats floats of
// state, both header-only (empty span, as at start-up) and into a state buffer (as on resume).
// Promise: the file is refused with a status naming it, or the record has a non-negative token
// count and a name no longer than the format's limit, both reads agree, and the state buffer is
// filled, and a pending token is inside the vocabulary; never a FIFO-blocking open, a read outside the file's bytes, UB, crash or leak.
// The same bytes as a shared-store entry (DecodeSession: the layout in one buffer, issue 22) must be
// judged the same way as the file, and as a store listing's record (record_only) accepted whenever
// the whole entry is. Read again for a bf16 pool (issue 23: a file of the other dtype is converted),
// it must be accepted exactly when the f32 read is, holding the f32 read's values rounded to bf16.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/sessions/session_file.h"
#include "engine/state_storage.h"
#include "models/dtype.h"
#include "tests/fuzz/fuzz_util.h"

namespace {
constexpr uint64_t kFingerprint = 0x0123456789abcdefULL;  // the corpus files are written for it
constexpr int64_t kStateFloats = 16;
constexpr int32_t kVocab = 512;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = gla::fuzz::TempDir() + "/fuzz.glasession";
  gla::fuzz::WriteFileOrDie(path, std::string_view(reinterpret_cast<const char*>(data), size));
  const gla::SessionFileExpect expect{kFingerprint, kStateFloats, gla::StateDType::kF32, kVocab};
  auto header_only = gla::ReadSessionFile(path, expect, {});
  std::vector<float> state(kStateFloats, -1.0f);
  auto full = gla::ReadSessionFile(path, expect, state);
  GLA_FUZZ_CHECK(header_only.ok() == full.ok(), "header-only read %s, full read %s",
                 header_only.status().ToString().c_str(), full.status().ToString().c_str());
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::vector<float> from_store(kStateFloats, -1.0f);
  auto entry = gla::DecodeSession(bytes, expect, from_store, "session 'x' in the state store");
  GLA_FUZZ_CHECK(entry.ok() == full.ok(), "store entry %s, file %s", entry.status().ToString().c_str(),
                 full.status().ToString().c_str());
  if (entry.ok()) {
    GLA_FUZZ_CHECK(from_store == state && entry->id == full->id && entry->tokens == full->tokens,
                   "the store entry and the file read differently");
    gla::SessionFileExpect record_only = expect;
    record_only.record_only = true;
    GLA_FUZZ_CHECK(gla::DecodeSession(bytes, record_only, {}, "r").ok(), "a whole entry refused as a record");
  }
  if (!full.ok()) {
    GLA_FUZZ_CHECK(full.status().message().find(path) != std::string::npos, "refusal does not name the file: %s",
                   full.status().ToString().c_str());
    return 0;
  }
  GLA_FUZZ_CHECK(full->tokens >= 0, "tokens %lld", static_cast<long long>(full->tokens));
  GLA_FUZZ_CHECK(!full->pending || (*full->pending >= 0 && *full->pending < kVocab), "pending token %d",
                 full->pending.value_or(-1));
  GLA_FUZZ_CHECK(full->id.size() <= 64 && full->adapter.size() <= 64, "name longer than 64 bytes");
  GLA_FUZZ_CHECK(full->id == header_only->id && full->tokens == header_only->tokens &&
                     full->pending == header_only->pending,
                 "the two reads disagree");
  gla::SessionFileExpect bf16 = expect;
  bf16.state_dtype = gla::StateDType::kBF16;
  std::vector<float> words(static_cast<size_t>(bf16.state_words()), -1.0f), values(kStateFloats);
  auto as_bf16 = gla::ReadSessionFile(path, bf16, words);
  GLA_FUZZ_CHECK(as_bf16.ok(), "readable for an f32 pool, refused for a bf16 one: %s",
                 as_bf16.status().ToString().c_str());
  gla::UnpackBf16State(words.data(), kStateFloats, values.data());
  for (int64_t i = 0; i < kStateFloats; ++i) {
    const float want = gla::BFloat16ToFloat(gla::FloatToBFloat16(state[i]));
    GLA_FUZZ_CHECK(values[i] == want || (std::isnan(values[i]) && std::isnan(want)),
                   "value %lld read for a bf16 pool is %g, the f32 read rounds to %g", static_cast<long long>(i),
                   values[i], want);
  }
  return 0;
}
