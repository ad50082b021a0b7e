// bf16 states (issue 23, --state_dtype bf16): the packing, the CPU backend's bf16 pool against the
// model's own bf16-state rounding (CpuModelOptions::state_dtype, whose accuracy docs/quantization.md
// measures), session files in either dtype (converted on read; version-1 files still read), and
// sessions kept by a bf16 server across a restart.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>

#include "engine/backend.h"
#include "engine/model/cpu_model.h"
#include "engine/scheduler.h"
#include "engine/sessions/session_file.h"
#include "engine/state_storage.h"
#include "models/dtype.h"
#include "models/fingerprint.h"
#include "tests/support/scheduler_util.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::Cat;
using testing::Collected;
using testing::Greedy;
using testing::SubmitCollect;
using testing::Text;

float RoundBf16(float x) { return BFloat16ToFloat(FloatToBFloat16(x)); }

TEST(StateStorage, PacksTwoValuesPerWordAndConvertsBothWays) {
  EXPECT_EQ(StateWords(10, StateDType::kF32), 10);
  EXPECT_EQ(StateWords(10, StateDType::kBF16), 5);
  EXPECT_EQ(StateWords(11, StateDType::kBF16), 6);
  EXPECT_EQ(*ParseStateDType("bf16"), StateDType::kBF16);
  EXPECT_EQ(*ParseStateDType("f32"), StateDType::kF32);
  EXPECT_FALSE(ParseStateDType("fp8").has_value());
  EXPECT_STREQ(StateDTypeName(StateDType::kBF16), "bf16");

  const std::vector<float> values = {1.0f, -2.5f, 1.00390625f, 3.14159265f, -0.0f, 1e-30f, 65504.0f,
                                     std::numeric_limits<float>::infinity(), std::nanf(""), 7.0f, 0.1f};
  const int64_t n = static_cast<int64_t>(values.size());  // odd: the last word is half used
  std::vector<float> words(StateWords(n, StateDType::kBF16), -1.0f), back(n);
  PackBf16State(values.data(), n, words.data());
  uint16_t halves[12];
  std::memcpy(halves, words.data(), sizeof(halves));
  EXPECT_EQ(halves[0], 0x3f80);   // 1.0, the first value in the lower-addressed half
  EXPECT_EQ(halves[2], 0x3f80);   // 1.00390625 is a tie between 1.0 and 1.0078125: to even
  EXPECT_EQ(halves[11], 0);       // the unused half
  UnpackBf16State(words.data(), n, back.data());
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(values[i])) {
      EXPECT_TRUE(std::isnan(back[i]));
    } else {
      EXPECT_EQ(back[i], RoundBf16(values[i])) << i;
    }
  }
  EXPECT_TRUE(std::signbit(back[4]));  // -0 stays -0

  std::vector<float> f32(n), again(words.size());
  ConvertStateWords(words.data(), StateDType::kBF16, f32.data(), StateDType::kF32, n);  // exact
  ConvertStateWords(f32.data(), StateDType::kF32, again.data(), StateDType::kBF16, n);
  EXPECT_EQ(std::memcmp(again.data(), words.data(), words.size() * sizeof(float)), 0);
  std::vector<float> same(words.size());
  ConvertStateWords(words.data(), StateDType::kBF16, same.data(), StateDType::kBF16, n);
  EXPECT_EQ(std::memcmp(same.data(), words.data(), words.size() * sizeof(float)), 0);
}

// The pool holds half the bytes, and a step on it is exactly the model rounding its states to bf16
// at each step's end: the same tokens, and slot contents that are the model's states packed.
TEST(Bf16States, TheCpuBackendPoolIsHalfAndEqualsTheModelsOwnRounding) {
  auto f32 = MakeCpuBackend(testing::TinyModelDir(), {.slots = 3, .threads = 1});
  auto bf16 = MakeCpuBackend(testing::TinyModelDir(), {.slots = 3, .threads = 1, .state_dtype = StateDType::kBF16});
  ASSERT_TRUE(f32.ok() && bf16.ok()) << f32.status() << bf16.status();
  Backend& b = **bf16;
  EXPECT_EQ(2 * b.pool().state_bytes(), (*f32)->pool().state_bytes());
  EXPECT_EQ(2 * b.state_pool_bytes(), (*f32)->state_pool_bytes());
  EXPECT_EQ(b.pool().state_dtype(), StateDType::kBF16);
  EXPECT_NE(b.device().find("bf16 states"), std::string::npos) << b.device();

  CpuModelOptions mo;
  mo.threads = 1;
  mo.state_dtype = CpuModelOptions::StateDType::kBF16;
  auto ref = CpuModel::Load(testing::TinyModelDir(), mo);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const int V = (*ref)->config().vocab_size, limit = b.vocab_limit();  // the sampler picks below the limit

  // Two sequences in one step (a prefill and, later, decodes), as the scheduler packs them.
  std::vector<SequenceState> states = {(*ref)->NewState(), (*ref)->NewState()};
  std::vector<std::vector<int32_t>> feed = {Text(9, 1), Text(14, 2)};
  const int slot0 = *b.pool().Acquire(), slot1 = *b.pool().Acquire();
  SamplingParams greedy;
  TokenHistory h0, h1;
  for (int step = 0; step < 6; ++step) {
    std::vector<StepItem> items = {{feed[0], slot0, true, &greedy, &h0, 0}, {feed[1], slot1, true, &greedy, &h1, 0}};
    std::vector<SampledToken> out;
    ASSERT_TRUE(b.Step(items, &out).ok());
    std::vector<CpuModel::Segment> segs = {{feed[0], states[0].data.data()}, {feed[1], states[1].data.data()}};
    std::vector<float> logits;
    ASSERT_TRUE((*ref)->Forward(segs, &logits).ok());
    for (int s = 0; s < 2; ++s) {
      const auto row = logits.begin() + int64_t{s} * V;
      const int32_t want = static_cast<int32_t>(std::max_element(row, row + limit) - row);
      EXPECT_EQ(out[s].token, want) << "step " << step << " sequence " << s;
      feed[s] = {want};
      auto host = b.pool().NewHostState();
      ASSERT_TRUE(host.ok());
      ASSERT_TRUE(b.pool().SaveToHost(s == 0 ? slot0 : slot1, **host).ok());
      std::vector<float> unpacked(static_cast<size_t>(b.pool().state_values()));
      UnpackBf16State((*host)->data(), b.pool().state_values(), unpacked.data());
      ASSERT_EQ(unpacked, states[s].data) << "step " << step << " sequence " << s;
    }
  }
  // A refused step writes no slot.
  auto before = b.pool().NewHostState();
  ASSERT_TRUE(before.ok() && b.pool().SaveToHost(slot0, **before).ok());
  const std::vector<float> kept((*before)->data(), (*before)->data() + (*before)->words());
  const std::vector<int32_t> bad = {V + 5};
  std::vector<StepItem> items = {{bad, slot0, true, &greedy, &h0, 0}};
  std::vector<SampledToken> out;
  EXPECT_FALSE(b.Step(items, &out).ok());
  auto after = b.pool().NewHostState();
  ASSERT_TRUE(after.ok() && b.pool().SaveToHost(slot0, **after).ok());
  EXPECT_EQ(std::memcmp(kept.data(), (*after)->data(), kept.size() * sizeof(float)), 0);
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// A state written in one dtype reads in the other: bf16 -> f32 exactly, f32 -> bf16 rounded; a
// version-1 file (f32, no dtype field) still reads; an unknown dtype is refused by name.
TEST(Bf16States, SessionFilesConvertBetweenDtypesAndVersionOneStillReads) {
  const std::string dir = testing::MakeTempDir("bf16_session_files");
  constexpr uint64_t kFp = 0x1234;
  constexpr int64_t kValues = 10;
  std::vector<float> values(kValues);
  for (int64_t i = 0; i < kValues; ++i) values[i] = 0.37f * static_cast<float>(i) - 1.3f;
  std::vector<float> words(StateWords(kValues, StateDType::kBF16));
  PackBf16State(values.data(), kValues, words.data());
  SessionRecord r;
  r.id = "s";
  r.tokens = 5;
  const SessionFileExpect as_f32{kFp, kValues, StateDType::kF32, 100};
  const SessionFileExpect as_bf16{kFp, kValues, StateDType::kBF16, 100};

  const std::string bf16_path = dir + "/b.glasession";
  ASSERT_TRUE(WriteSessionFile(bf16_path, kFp, r, words, StateDType::kBF16).ok());
  std::vector<float> got(kValues);
  ASSERT_TRUE(ReadSessionFile(bf16_path, as_f32, got).ok());
  for (int64_t i = 0; i < kValues; ++i) EXPECT_EQ(got[i], RoundBf16(values[i])) << i;
  std::vector<float> got_words(words.size());
  ASSERT_TRUE(ReadSessionFile(bf16_path, as_bf16, got_words).ok());
  EXPECT_EQ(got_words, words);
  const std::string entry = EncodeSession(kFp, r, words, StateDType::kBF16);
  ASSERT_TRUE(DecodeSession(entry, as_f32, got, "entry").ok());
  for (int64_t i = 0; i < kValues; ++i) EXPECT_EQ(got[i], RoundBf16(values[i])) << i;

  const std::string f32_path = dir + "/f.glasession";
  ASSERT_TRUE(WriteSessionFile(f32_path, kFp, r, values, StateDType::kF32).ok());
  ASSERT_TRUE(ReadSessionFile(f32_path, as_bf16, got_words).ok());
  EXPECT_EQ(got_words, words);
  // The wrong size for its dtype: refused, naming the file.
  const std::string short_path = dir + "/short.glasession";
  ASSERT_TRUE(WriteSessionFile(short_path, kFp, r, words, StateDType::kF32).ok());
  auto wrong = ReadSessionFile(short_path, as_bf16, got_words);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition) << wrong.status();
  EXPECT_NE(wrong.status().message().find(short_path), std::string::npos);

  // Version 1: the same bytes without the dtype field, and its own checksum.
  std::string v2 = ReadBytes(f32_path);
  std::string v1 = v2.substr(0, 8) + std::string("\x01\x00\x00\x00", 4) + v2.substr(16, v2.size() - 16 - 8);
  const size_t body = kValues * sizeof(float), head = v1.size() - body;  // hashed as header, then state
  uint64_t h = Hash64({reinterpret_cast<const uint8_t*>(v1.data()), head});
  h = Hash64({reinterpret_cast<const uint8_t*>(v1.data()) + head, body}, h);
  v1.append(reinterpret_cast<const char*>(&h), sizeof(h));
  const std::string v1_path = dir + "/v1.glasession";
  std::ofstream(v1_path, std::ios::binary) << v1;
  std::vector<float> got_v1(kValues);
  auto read_v1 = ReadSessionFile(v1_path, as_f32, got_v1);
  ASSERT_TRUE(read_v1.ok()) << read_v1.status();
  EXPECT_EQ(got_v1, values);
  EXPECT_EQ(read_v1->tokens, 5);

  std::string unknown = v2;
  unknown[12] = 7;  // the dtype field
  const std::string unknown_path = dir + "/unknown.glasession";
  std::ofstream(unknown_path, std::ios::binary) << unknown;
  auto refused = ReadSessionFile(unknown_path, as_f32, got);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss) << refused.status();
  EXPECT_NE(refused.status().message().find("unknown state dtype 7"), std::string::npos) << refused.status();
}

// A bf16 server keeps sessions in bf16 on disk: a restarted bf16 server continues a conversation
// exactly as the one that never stopped, and an f32 server takes the same files (converted).
TEST(Bf16States, SessionsSurviveARestartInBf16AndReadOnAnF32Server) {
  const std::string dir = testing::MakeTempDir("bf16_sessions");
  SchedulerOptions o;
  o.sessions.model_fingerprint = *ModelFingerprint(testing::TinyModelDir());
  o.sessions.dir = dir;
  auto make = [](StateDType dtype) {
    auto b = MakeCpuBackend(testing::TinyModelDir(), {.slots = 2, .threads = 1, .state_dtype = dtype});
    EXPECT_TRUE(b.ok()) << b.status();
    return std::move(*b);
  };
  auto run = [](Scheduler& s, GenerationSpec spec) { return SubmitCollect(s, std::move(spec)).get(); };
  const auto p1 = Text(21, 5), p2 = Text(7, 6);
  Collected o1, uninterrupted;
  {
    auto backend = make(StateDType::kBF16);
    SchedulerOptions kept = o;
    kept.sessions.dir = testing::MakeTempDir("bf16_sessions_kept");
    Scheduler s(*backend, kept);
    ASSERT_TRUE(testing::CreateSession(s, "c").ok());
    o1 = run(s, Greedy(p1, 4, "c"));
    ASSERT_TRUE(o1.status.ok());
    uninterrupted = run(s, Greedy(p2, 6, "c"));
    ASSERT_TRUE(uninterrupted.status.ok());
  }
  {
    auto backend = make(StateDType::kBF16);
    Scheduler s(*backend, o);
    ASSERT_TRUE(testing::CreateSession(s, "c").ok());
    const Collected again = run(s, Greedy(p1, 4, "c"));
    ASSERT_TRUE(again.status.ok());
    EXPECT_EQ(again.tokens, o1.tokens);
  }  // shutdown leaves the session on disk, in bf16
  const std::string file = ReadBytes(dir + "/c.glasession");
  ASSERT_GT(file.size(), 16u);
  EXPECT_EQ(file[12], 1) << "the file's dtype field says bf16";
  {
    auto backend = make(StateDType::kBF16);
    Scheduler s(*backend, o);
    EXPECT_TRUE(s.refused_session_files().empty());
    const Collected o2 = run(s, Greedy(p2, 6, "c"));
    ASSERT_TRUE(o2.status.ok()) << o2.status;
    EXPECT_EQ(o2.tokens, uninterrupted.tokens);
  }
  {
    auto backend = make(StateDType::kF32);
    Scheduler s(*backend, o);
    EXPECT_TRUE(s.refused_session_files().empty());
    const auto list = testing::ListSessions(s);
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].tokens, static_cast<int64_t>(p1.size() + o1.tokens.size() + p2.size() + uninterrupted.tokens.size()));
    const Collected o3 = run(s, Greedy(Text(3, 7), 3, "c"));
    EXPECT_TRUE(o3.status.ok()) << o3.status;
  }
}

}  // namespace
}  // namespace gla
