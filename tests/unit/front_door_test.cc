// The front door (server/front_door.h) without any protocol: a neutral call validated with the
// field names of the protocol that carried it, refusals of what no protocol may send, how a
// finished generation ends its call, admission through the guard, and Prepare's adapter lookup and
// request ids. The gRPC suites (tests/e2e) drive the same code through the gRPC adapter.
#include "server/front_door.h"

#include <gtest/gtest.h>

#include "engine/backend.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

class FrontDoorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto b = MakeCpuBackend(testing::TinyModelDir(), {.slots = 2, .threads = 1});
    ASSERT_TRUE(b.ok()) << b.status();
    backend_ = b->release();
  }
  static void TearDownTestSuite() {
    delete backend_;
    backend_ = nullptr;
  }
  static GenerateCall Ids(std::vector<int32_t> ids) {
    GenerateCall c;
    c.token_ids = std::move(ids);
    return c;
  }
  static Backend* backend_;
};
Backend* FrontDoorTest::backend_ = nullptr;

TEST_F(FrontDoorTest, ErrorsNameTheFieldAsTheClientsProtocolCallsIt) {
  GenerateCall grpc_call = Ids({1, 2, 3});
  grpc_call.temperature = -1.0f;
  auto s = ValidateGenerateCall(grpc_call, *backend_, {});
  ASSERT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.status().message(), "sampling.temperature: must be in [0, 100]");

  GenerateCall http_call = grpc_call;
  http_call.names.temperature = "temperature";
  http_call.names.max_new_tokens = "max_tokens";
  EXPECT_EQ(ValidateGenerateCall(http_call, *backend_, {}).status().message(), "temperature: must be in [0, 100]");
  http_call.temperature = 1.0f;
  http_call.max_new_tokens = uint64_t{1} << 40;  // no narrowing on the way: refused, not wrapped
  EXPECT_EQ(ValidateGenerateCall(http_call, *backend_, {}).status().message(),
            "max_tokens: 1099511627776 is over the limit of 1024");
}

TEST_F(FrontDoorTest, RefusesWhatNoProtocolMaySend) {
  const int vocab = backend_->config().vocab_size;
  GenerateCall both = Ids({1});
  both.text = "hi";
  EXPECT_EQ(ValidateGenerateCall(both, *backend_, {}).status().message(), "prompt: set text or token_ids");
  EXPECT_EQ(ValidateGenerateCall(GenerateCall{}, *backend_, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateGenerateCall(Ids({}), *backend_, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateGenerateCall(Ids({vocab}), *backend_, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateGenerateCall(Ids({-1}), *backend_, {}).status().code(), absl::StatusCode::kInvalidArgument);
  for (int priority : {-2, 2, 1 << 30}) {
    GenerateCall c = Ids({1});
    c.priority = priority;
    EXPECT_EQ(ValidateGenerateCall(c, *backend_, {}).status().code(), absl::StatusCode::kInvalidArgument) << priority;
  }
  GenerateCall k = Ids({1});
  k.top_k = int64_t{1} << 33;  // an int64 from JSON must not wrap into range
  EXPECT_EQ(ValidateGenerateCall(k, *backend_, {}).status().code(), absl::StatusCode::kInvalidArgument);
  GenerateCall nan = Ids({1});
  nan.top_p = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(ValidateGenerateCall(nan, *backend_, {}).status().code(), absl::StatusCode::kInvalidArgument);
  ServerLimits small;
  small.max_prompt_tokens = 2;
  EXPECT_EQ(ValidateGenerateCall(Ids({1, 2, 3}), *backend_, small).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(FrontDoorTest, AValidCallBecomesTheSpecItDescribes) {
  GenerateCall c = Ids({5, 6});
  c.temperature = 0.5f;
  c.top_p = 0.9f;
  c.seed = 42;
  c.logprobs = 3;
  c.max_new_tokens = 7;
  c.stop_token_ids = {9};
  c.priority = -1;
  c.deadline = std::chrono::system_clock::now() + std::chrono::seconds(5);
  auto spec = ValidateGenerateCall(c, *backend_, {});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->prompt, (std::vector<int32_t>{5, 6}));
  EXPECT_FLOAT_EQ(spec->sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(spec->sampling.top_p, 0.9f);
  EXPECT_EQ(spec->sampling.seed, 42u);
  EXPECT_EQ(spec->sampling.logprobs, 3);
  EXPECT_EQ(spec->max_new_tokens, 7);
  EXPECT_EQ(spec->stop_token_ids, (std::vector<int32_t>{9}));
  EXPECT_EQ(spec->priority, -1);
  EXPECT_EQ(spec->deadline, c.deadline);
}

TEST(FrontDoorFinalStatus, ACancelNearTheDeadlineIsTheDeadline) {
  GenerationUpdate u;
  u.finished = true;
  u.reason = FinishReason::kCancelled;
  const auto now = std::chrono::system_clock::now();
  EXPECT_EQ(FinalStatus(u, true, std::nullopt).code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(FinalStatus(u, true, now + std::chrono::milliseconds(50)).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(FinalStatus(u, true, now + std::chrono::seconds(60)).code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(FinalStatus(u, false, std::nullopt).ok()) << "cancelled by shutdown: finish_reason says so";
  u.status = absl::InternalError("boom");
  EXPECT_EQ(FinalStatus(u, true, std::nullopt).code(), absl::StatusCode::kInternal);
  u.status = absl::OkStatus();
  u.reason = FinishReason::kLength;
  EXPECT_TRUE(FinalStatus(u, true, now).ok()) << "a generation that ended on its own ended well";
}

TEST(FrontDoorNames, EveryCodeHasItsName) {
  EXPECT_STREQ(StatusCodeName(absl::StatusCode::kOk), "OK");
  EXPECT_STREQ(StatusCodeName(absl::StatusCode::kUnauthenticated), "UNAUTHENTICATED");
  EXPECT_STREQ(StatusCodeName(absl::StatusCode::kResourceExhausted), "RESOURCE_EXHAUSTED");
  EXPECT_STREQ(StatusCodeName(static_cast<absl::StatusCode>(99)), "UNKNOWN");
}

TEST_F(FrontDoorTest, AdmitsThroughTheGuardAndPreparesWithIdsAndAdapters) {
  SchedulerOptions so;
  Scheduler scheduler(*backend_, so);
  RequestGuard guard({"tok", 0, 0});
  ServiceInfo info;
  info.guard = &guard;
  EngineSet engines({&scheduler}, /*shared_store=*/false);
  FrontDoor door(engines, {}, info);
  EXPECT_EQ(door.Admit(std::nullopt, "ipv4:1.2.3.4:1").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(door.Admit("Bearer tok", "ipv4:1.2.3.4:1").ok());

  auto first = door.Prepare(Ids({1}));
  auto second = door.Prepare(Ids({1}));
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_FALSE(first->id.empty());
  EXPECT_NE(first->id, second->id) << "each request gets its own id";
  GenerateCall named = Ids({1});
  named.request_id = "mine";
  EXPECT_EQ(door.Prepare(named)->id, "mine");

  GenerateCall adapted = Ids({1});
  adapted.adapter = "nope";
  EXPECT_EQ(door.Prepare(adapted).status().code(), absl::StatusCode::kNotFound);
  scheduler.Shutdown(std::chrono::milliseconds(0));
}

}  // namespace
}  // namespace gla
