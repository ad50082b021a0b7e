// End to end against a real glad on loopback serving the reference checkpoint (CPU backend).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include "health.grpc.pb.h"
#include "models/safetensors.h"
#include "reflection.grpc.pb.h"
#include "tests/support/glad_process.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::GladProcess;

std::vector<int32_t> RefIds(const char* name) {
  auto f = SafetensorsFile::Open(testing::ReferenceDir() + "/gla-tiny/expected.safetensors");
  auto v = *ToInt64(*f->Find(name));
  return std::vector<int32_t>(v.begin(), v.end());
}

v1::GenerateRequest Request(const std::vector<int32_t>& prompt, int max_new) {
  v1::GenerateRequest r;
  r.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
  r.set_max_new_tokens(max_new);
  r.set_ignore_eos(true);
  return r;
}

std::vector<int32_t> Ids(const google::protobuf::RepeatedField<int32_t>& r) { return {r.begin(), r.end()}; }

struct Streamed {
  std::vector<int32_t> ids;
  v1::FinishReason reason = v1::FINISH_REASON_UNSPECIFIED;
  grpc::Status status;
  int messages = 0;
};

Streamed Stream(v1::Gla::Stub& stub, const v1::GenerateRequest& req, int deadline_ms = 60000) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  Streamed s;
  auto reader = stub.GenerateStream(&ctx, req);
  v1::GenerateStreamResponse m;
  while (reader->Read(&m)) {
    ++s.messages;
    s.ids.insert(s.ids.end(), m.token_ids().begin(), m.token_ids().end());
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) s.reason = m.finish_reason();
  }
  s.status = reader->Finish();
  return s;
}

v1::ModelInfoResponse Info(v1::Gla::Stub& stub) {
  grpc::ClientContext ctx;
  v1::ModelInfoResponse info;
  EXPECT_TRUE(stub.ModelInfo(&ctx, {}, &info).ok());
  return info;
}

void WaitForIdle(v1::Gla::Stub& stub) {
  for (int i = 0; i < 500 && Info(stub).slots_in_use() != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

class ServerE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new GladProcess({"--model", testing::TinyModelDir(), "--slots", "8", "--max_new_tokens", "4096",
                               "--max_prompt_tokens", "2048", "--step_token_budget", "64", "--threads", "1"});
  }
  // A server that failed to start must fail every test, not skip it.
  void SetUp() override { ASSERT_TRUE(server_ != nullptr && server_->ok()) << (server_ ? server_->log() : ""); }
  static void TearDownTestSuite() {
    EXPECT_EQ(server_->Terminate(), 0) << server_->log();  // SIGTERM drains and exits 0
    delete server_;
  }
  static GladProcess* server_;
};
GladProcess* ServerE2E::server_ = nullptr;

TEST_F(ServerE2E, GreedyEqualsReferenceContinuation) {
  auto stub = server_->stub();
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  ASSERT_TRUE(stub->Generate(&ctx, Request(RefIds("greedy.prompt_ids"), 16), &resp).ok());
  EXPECT_EQ(Ids(resp.token_ids()), RefIds("greedy.output_ids"));
  EXPECT_EQ(resp.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(resp.usage().prompt_tokens(), 24u);
  EXPECT_EQ(resp.usage().completion_tokens(), 16u);
  EXPECT_GT(resp.usage().total_time_s(), 0.0);
}

TEST_F(ServerE2E, UnaryAndStreamingAgreeForTheSameSeed) {
  auto stub = server_->stub();
  v1::GenerateRequest req = Request(RefIds("greedy.prompt_ids"), 40);
  req.mutable_sampling()->set_temperature(0.9f);
  req.mutable_sampling()->set_top_p(0.95f);
  req.mutable_sampling()->set_seed(1234);
  req.set_logprobs(3);
  grpc::ClientContext ctx;
  v1::GenerateResponse unary;
  ASSERT_TRUE(stub->Generate(&ctx, req, &unary).ok());
  const Streamed s = Stream(*stub, req);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.ids, Ids(unary.token_ids()));
  EXPECT_EQ(s.reason, v1::FINISH_REASON_LENGTH);
  EXPECT_GT(s.messages, 1);
  ASSERT_EQ(unary.logprobs_size(), 40);
  EXPECT_EQ(unary.logprobs(0).top_size(), 3);
  EXPECT_EQ(unary.logprobs(0).chosen().token_id(), unary.token_ids(0));
  EXPECT_LE(unary.logprobs(0).chosen().logprob(), 0.0f);
  req.mutable_sampling()->set_seed(99);  // another seed, another text (40 tokens: equality would be a fluke)
  grpc::ClientContext ctx2;
  v1::GenerateResponse other;
  ASSERT_TRUE(stub->Generate(&ctx2, req, &other).ok());
  EXPECT_NE(Ids(other.token_ids()), Ids(unary.token_ids()));
}

TEST_F(ServerE2E, SixtyFourConcurrentStreamsAllCorrect) {
  auto stub = server_->stub();
  const auto base = RefIds("seq2.input_ids");
  std::vector<v1::GenerateRequest> reqs;
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 64; ++i) {
    std::vector<int32_t> prompt(base.begin(), base.begin() + 1 + (i * 13) % 120);
    reqs.push_back(Request(prompt, 2 + (i * 7) % 30));
    grpc::ClientContext ctx;
    v1::GenerateResponse solo;
    ASSERT_TRUE(stub->Generate(&ctx, reqs.back(), &solo).ok());
    expected.push_back(Ids(solo.token_ids()));
  }
  std::vector<Streamed> got(64);
  std::vector<std::thread> threads;
  for (int i = 0; i < 64; ++i) threads.emplace_back([&, i] { got[i] = Stream(*stub, reqs[i]); });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 64; ++i) {
    EXPECT_TRUE(got[i].status.ok()) << i << ": " << got[i].status.error_message();
    EXPECT_EQ(got[i].ids, expected[i]) << "stream " << i;
  }
  WaitForIdle(*stub);
  EXPECT_EQ(Info(*stub).slots_in_use(), 0u);
}

TEST_F(ServerE2E, CancelMidStreamReleasesTheSlot) {
  auto stub = server_->stub();
  grpc::ClientContext ctx;
  auto reader = stub->GenerateStream(&ctx, Request(RefIds("greedy.prompt_ids"), 4096));
  v1::GenerateStreamResponse m;
  ASSERT_TRUE(reader->Read(&m));
  EXPECT_GE(Info(*stub).slots_in_use(), 1u);
  ctx.TryCancel();
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  WaitForIdle(*stub);
  EXPECT_EQ(Info(*stub).slots_in_use(), 0u);
}

TEST_F(ServerE2E, DeadlineExceededEndsTheCall) {
  auto stub = server_->stub();
  // The deadline falls a fifth of the way into the whole request, timed here first: a fixed 150 ms
  // was longer than all 4,096 tokens of the tiny model took on a fast CPU (94 ms).
  const auto t0 = std::chrono::steady_clock::now();
  {
    grpc::ClientContext whole;
    v1::GenerateResponse r;
    ASSERT_TRUE(stub->Generate(&whole, Request(RefIds("greedy.prompt_ids"), 4096), &r).ok());
    ASSERT_EQ(r.token_ids_size(), 4096);
  }
  const auto fifth = (std::chrono::steady_clock::now() - t0) / 5;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::microseconds>(fifth));
  v1::GenerateResponse resp;
  EXPECT_EQ(stub->Generate(&ctx, Request(RefIds("greedy.prompt_ids"), 4096), &resp).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  WaitForIdle(*stub);
  EXPECT_EQ(Info(*stub).slots_in_use(), 0u);
}

struct BadField {
  const char* name;
  std::function<void(v1::GenerateRequest&)> edit;
  const char* field;
};

class InvalidRequest : public ServerE2E, public ::testing::WithParamInterface<BadField> {};

TEST_P(InvalidRequest, IsInvalidArgumentNamingTheFieldAndTheServerGoesOn) {
  auto stub = server_->stub();
  v1::GenerateRequest req = Request({1, 5, 9}, 4);
  GetParam().edit(req);
  for (bool streaming : {false, true}) {
    grpc::Status st;
    if (streaming) {
      st = Stream(*stub, req).status;
    } else {
      grpc::ClientContext ctx;
      v1::GenerateResponse resp;
      st = stub->Generate(&ctx, req, &resp);
    }
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << GetParam().name;
    EXPECT_NE(st.error_message().find(GetParam().field), std::string::npos) << st.error_message();
  }
  grpc::ClientContext ctx;
  v1::GenerateResponse ok;
  EXPECT_TRUE(stub->Generate(&ctx, Request({1, 5, 9}, 2), &ok).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Fields, InvalidRequest,
    ::testing::Values(
        BadField{"empty_prompt", [](auto& r) { r.mutable_token_ids()->clear_ids(); }, "token_ids"},
        BadField{"no_prompt", [](auto& r) { r.clear_prompt(); }, "prompt"},
        BadField{"negative_temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-0.5f); }, "sampling.temperature"},
        BadField{"top_p_zero", [](auto& r) { r.mutable_sampling()->set_top_p(0.0f); }, "sampling.top_p"},
        BadField{"top_p_above_one", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }, "sampling.top_p"},
        BadField{"max_new_tokens_over_limit", [](auto& r) { r.set_max_new_tokens(5000); }, "max_new_tokens"},
        // uint32 values that turn negative as an int (they passed the limit before).
        BadField{"max_new_tokens_2_pow_31", [](auto& r) { r.set_max_new_tokens(2147483648u); }, "max_new_tokens"},
        BadField{"max_new_tokens_uint32_max", [](auto& r) { r.set_max_new_tokens(4294967295u); }, "max_new_tokens"},
        BadField{"token_outside_vocab", [](auto& r) { r.mutable_token_ids()->add_ids(512); }, "token_ids"},
        BadField{"prompt_over_limit",
                 [](auto& r) { for (int i = 0; i < 2100; ++i) r.mutable_token_ids()->add_ids(i % 500); }, "prompt"},
        BadField{"non_utf8_text", [](auto& r) { r.set_text("caf\xC3\x28"); }, "text"},
        BadField{"text_without_tokenizer", [](auto& r) { r.set_text("hello"); }, "text"},
        // Structured output follows the text: a model without a tokenizer refuses it.
        BadField{"regex_without_tokenizer", [](auto& r) { r.set_regex("[0-9]+"); }, "regex: structured output needs"},
        BadField{"json_schema_without_tokenizer", [](auto& r) { r.set_json_schema("{}"); }, "json_schema: "},
        BadField{"unknown_enum", [](auto& r) { r.set_priority(static_cast<v1::Priority>(7)); }, "priority"},
        BadField{"logprobs_too_many", [](auto& r) { r.set_logprobs(50); }, "logprobs"},
        BadField{"stop_token_outside_vocab", [](auto& r) { r.add_stop_token_ids(-3); }, "stop_token_ids"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(ServerE2E, StopTokenIdsAndModelInfo) {
  auto stub = server_->stub();
  const auto greedy = RefIds("greedy.output_ids");
  v1::GenerateRequest req = Request(RefIds("greedy.prompt_ids"), 16);
  req.add_stop_token_ids(greedy[5]);
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  ASSERT_TRUE(stub->Generate(&ctx, req, &resp).ok());
  const auto first = std::find(greedy.begin(), greedy.end(), greedy[5]);
  EXPECT_EQ(Ids(resp.token_ids()), std::vector<int32_t>(greedy.begin(), first + 1));
  EXPECT_EQ(resp.finish_reason(), v1::FINISH_REASON_STOP);
  const auto info = Info(*stub);
  // glad's default backend is cuda where a GPU is usable (deploy/gpu-check.sh sets
  // GLA_EXPECT_BACKEND=cuda so this suite provably ran there), cpu elsewhere.
  const char* expect_backend = std::getenv("GLA_EXPECT_BACKEND");
  EXPECT_EQ(info.backend(), expect_backend != nullptr ? expect_backend : "cpu");
  EXPECT_NE(server_->log().find("backend " + info.backend()), std::string::npos) << server_->log();
  EXPECT_EQ(info.slots(), 8u);
  EXPECT_GE(info.state_pool_bytes(), 8u * info.state_bytes_per_sequence());
  EXPECT_GT(info.weight_bytes(), 0u);
  EXPECT_EQ(info.config().vocab_size(), 512);
  EXPECT_EQ(info.state_bytes_per_sequence(), 2u * 4 * 8 * 16 * 4);
  EXPECT_EQ(info.state_dtype(), "f32");
  EXPECT_EQ(info.limits().max_new_tokens(), 4096u);
  EXPECT_FALSE(info.has_tokenizer());
}

TEST_F(ServerE2E, HealthAndReflectionAnswer) {
  auto health = grpc::health::v1::Health::NewStub(server_->channel());
  grpc::ClientContext hctx;
  grpc::health::v1::HealthCheckResponse hresp;
  ASSERT_TRUE(health->Check(&hctx, {}, &hresp).ok());
  EXPECT_EQ(hresp.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  auto refl = grpc::reflection::v1alpha::ServerReflection::NewStub(server_->channel());
  grpc::ClientContext rctx;
  auto rw = refl->ServerReflectionInfo(&rctx);
  grpc::reflection::v1alpha::ServerReflectionRequest rq;
  rq.set_list_services("");
  ASSERT_TRUE(rw->Write(rq));
  grpc::reflection::v1alpha::ServerReflectionResponse rr;
  ASSERT_TRUE(rw->Read(&rr));
  std::vector<std::string> names;
  for (const auto& s : rr.list_services_response().service()) names.push_back(s.name());
  EXPECT_NE(std::find(names.begin(), names.end(), "gla.v1.Gla"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "grpc.health.v1.Health"), names.end());
  rq.set_file_containing_symbol("gla.v1.Gla");  // what grpcurl asks for next
  ASSERT_TRUE(rw->Write(rq));
  ASSERT_TRUE(rw->Read(&rr));
  EXPECT_GT(rr.file_descriptor_response().file_descriptor_proto_size(), 0);
  rw->WritesDone();
  EXPECT_TRUE(rw->Finish().ok());
}

TEST(ServerE2ESmall, QueueFullIsResourceExhausted) {
  GladProcess server({"--model", testing::TinyModelDir(), "--slots", "1", "--queue_size", "1", "--threads", "1",
                      "--max_new_tokens", "1000000"});
  ASSERT_TRUE(server.ok()) << server.log();
  auto stub = server.stub();
  const auto prompt = RefIds("greedy.prompt_ids");
  grpc::ClientContext c1, c2;
  auto running = stub->GenerateStream(&c1, Request(prompt, 1000000));  // holds the only slot
  v1::GenerateStreamResponse m;
  ASSERT_TRUE(running->Read(&m));
  auto queued = stub->GenerateStream(&c2, Request(prompt, 4));  // waits in the queue
  for (int i = 0; i < 200 && Info(*stub).queued_requests() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(Info(*stub).queued_requests(), 1u);
  grpc::ClientContext c3;
  v1::GenerateResponse resp;
  const grpc::Status st = stub->Generate(&c3, Request(prompt, 4), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  c1.TryCancel();
  while (running->Read(&m)) {
  }
  running->Finish();
  Streamed q;
  while (queued->Read(&m)) q.ids.insert(q.ids.end(), m.token_ids().begin(), m.token_ids().end());
  EXPECT_TRUE(queued->Finish().ok());
  EXPECT_EQ(q.ids.size(), 4u);  // admitted once the slot was freed
  EXPECT_EQ(server.Terminate(), 0);
}

TEST(ServerE2ESmall, ShutdownCancelsAfterTheGracePeriodAndExitsZero) {
  GladProcess server({"--model", testing::TinyModelDir(), "--slots", "2", "--threads", "1", "--max_new_tokens",
                      "1000000", "--shutdown_grace_s", "0.3"});
  ASSERT_TRUE(server.ok()) << server.log();
  auto stub = server.stub();
  Streamed s;
  std::thread client([&] { s = Stream(*stub, Request(RefIds("greedy.prompt_ids"), 1000000)); });
  for (int i = 0; i < 200 && Info(*stub).slots_in_use() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(server.Terminate(), 0) << server.log();
  client.join();
  EXPECT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.reason, v1::FINISH_REASON_CANCELLED);
  EXPECT_NE(server.log().find("finish=cancelled"), std::string::npos);
}

TEST(ServerE2ESmall, StartupErrorsAreOneLineAndNonZero) {
  GladProcess bad_model({"--model", "/nonexistent"});
  EXPECT_FALSE(bad_model.ok());
  EXPECT_NE(bad_model.log().find("glad: error: /nonexistent: not a directory"), std::string::npos) << bad_model.log();
  GladProcess bad_backend({"--model", testing::TinyModelDir(), "--backend", "tpu"});
  EXPECT_FALSE(bad_backend.ok());
  EXPECT_NE(bad_backend.log().find("glad: error: --backend tpu is not one of auto, cuda, cpu"), std::string::npos)
      << bad_backend.log();
  char dir_template[] = "/tmp/gla-unused-gemms-XXXXXX";  // the refused runs must create nothing in it
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string unused_cache = std::string(dir_template) + "/gemms.cache";
  GladProcess cache_without_tuning({"--model", testing::TinyModelDir(), "--backend", "cpu", "--gemm_tuning=false",
                                    "--gemm_tuning_cache", unused_cache});
  EXPECT_FALSE(cache_without_tuning.ok());
  EXPECT_NE(cache_without_tuning.log().find("glad: error: --gemm_tuning_cache keeps --gemm_tuning's choices: it needs "
                                            "--gemm_tuning"),
            std::string::npos)
      << cache_without_tuning.log();
  GladProcess cache_on_cpu({"--model", testing::TinyModelDir(), "--backend", "cpu", "--gemm_tuning_cache",
                           unused_cache});
  EXPECT_FALSE(cache_on_cpu.ok());
  EXPECT_NE(cache_on_cpu.log().find("glad: error: --gemm_tuning_cache applies to --backend cuda: the CPU backend tunes "
                                    "no GEMMs"),
            std::string::npos)
      << cache_on_cpu.log();
  EXPECT_NE(access(unused_cache.c_str(), F_OK), 0) << "a refused start created " << unused_cache;
  EXPECT_EQ(rmdir(dir_template), 0) << "a refused start left something in " << dir_template;
  GladProcess batch_too_large({"--model", testing::TinyModelDir(), "--backend", "cpu", "--persistent_decode_max_batch", "9"});
  EXPECT_FALSE(batch_too_large.ok());
  EXPECT_NE(batch_too_large.log().find("glad: error: --persistent_decode_max_batch 9: expected 1 to 8"), std::string::npos)
      << batch_too_large.log();
}

// A --gemm_tuning_cache in a configuration shared with GPU hosts, on a host where --backend auto
// finds no GPU: glad starts, says in its log that the cache is ignored, and creates no file.
TEST(ServerE2ESmall, GemmTuningCacheIgnoredWhereAutoChoosesTheCpu) {
  char dir_template[] = "/tmp/gla-gemm-cache-auto-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string cache = std::string(dir_template) + "/gemms.cache";
  GladProcess server({"--model", testing::TinyModelDir(), "--backend", "auto", "--threads", "1", "--gemm_tuning_cache",
                      cache});
  ASSERT_TRUE(server.ok()) << server.log();
  const bool chose_cpu = server.log().find("--backend auto: cpu") != std::string::npos;
  EXPECT_EQ(server.Terminate(), 0) << server.log();
  if (!chose_cpu) {
    std::remove(cache.c_str());
    rmdir(dir_template);
    GTEST_SKIP() << "a GPU is usable here, so --backend auto chose cuda (the cache is that backend's)";
  }
  EXPECT_NE(server.log().find("glad: --gemm_tuning_cache " + cache + " ignored: --backend auto chose cpu"),
            std::string::npos)
      << server.log();
  EXPECT_NE(access(cache.c_str(), F_OK), 0) << "the CPU backend created " << cache;
  rmdir(dir_template);
}

// --state_dtype bf16 (issue 23): the pool keeps half the bytes per sequence and says so; greedy
// generation runs on it (its tokens may part from f32 states': docs/quantization.md measures how
// far). On the CPU backend always, and on the CUDA backend where the run says a GPU is there
// (GLA_EXPECT_BACKEND=cuda: deploy/gpu-check.sh engine). An unknown dtype is a one-line startup error.
TEST(ServerE2ESmall, Bf16StatesHalveEachSequencesStateAndServe) {
  std::vector<std::string> backends = {"cpu"};
  const char* expect_backend = std::getenv("GLA_EXPECT_BACKEND");
  if (expect_backend != nullptr && std::string(expect_backend) == "cuda") backends.push_back("cuda");
  else std::printf("[ note ] bf16 states served on the cpu backend only here (no GLA_EXPECT_BACKEND=cuda)\n");
  for (const std::string& backend : backends) {
    GladProcess server({"--model", testing::TinyModelDir(), "--backend", backend, "--slots", "4", "--threads", "1",
                        "--state_dtype", "bf16"});
    ASSERT_TRUE(server.ok()) << server.log();
    EXPECT_NE(server.log().find("backend " + backend), std::string::npos) << server.log();
    auto stub = server.stub();
    const auto info = Info(*stub);
    EXPECT_EQ(info.state_dtype(), "bf16") << backend;
    EXPECT_EQ(info.state_bytes_per_sequence(), 2u * 4 * 8 * 16 * 2) << backend;
    EXPECT_NE(info.device().find("bf16 states"), std::string::npos) << info.device();
    grpc::ClientContext ctx;
    v1::GenerateResponse resp;
    ASSERT_TRUE(stub->Generate(&ctx, Request(RefIds("greedy.prompt_ids"), 16), &resp).ok()) << backend;
    EXPECT_EQ(resp.token_ids_size(), 16) << backend;
    EXPECT_EQ(server.Terminate(), 0) << backend;
  }
  GladProcess bad({"--model", testing::TinyModelDir(), "--backend", "cpu", "--state_dtype", "fp8"});
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.log().find("glad: error: --state_dtype 'fp8': expected f32 or bf16"), std::string::npos) << bad.log();
}

// --weights fp8 and int8 (issue 23): glad serves with the projections in one-byte rows and its
// device line says so: on the CPU backend always (INT8 arithmetic; fp32 on the FP8 values), on the
// CUDA backend (the rows on the GPU) where the run says a GPU is there (GLA_EXPECT_BACKEND=cuda).
TEST(ServerE2ESmall, ByteWeightsServeAndSaySo) {
  std::vector<std::string> backends = {"cpu"};
  const char* expect_backend = std::getenv("GLA_EXPECT_BACKEND");
  if (expect_backend != nullptr && std::string(expect_backend) == "cuda") backends.push_back("cuda");
  else std::printf("[ note ] fp8 / int8 weights served on the cpu backend only here (no GLA_EXPECT_BACKEND=cuda)\n");
  for (const std::string& backend : backends) {
    for (const std::string weights : {"fp8", "int8"}) {
      GladProcess server({"--model", testing::TinyModelDir(), "--backend", backend, "--slots", "4", "--threads", "1",
                          "--weights", weights});
      ASSERT_TRUE(server.ok()) << server.log();
      auto stub = server.stub();
      const auto info = Info(*stub);
      EXPECT_NE(info.device().find(weights + " weights"), std::string::npos) << info.device();
      grpc::ClientContext ctx;
      v1::GenerateResponse resp;
      ASSERT_TRUE(stub->Generate(&ctx, Request(RefIds("greedy.prompt_ids"), 16), &resp).ok()) << backend << weights;
      EXPECT_EQ(resp.token_ids_size(), 16) << backend << " " << weights;
      EXPECT_EQ(server.Terminate(), 0) << backend << " " << weights;
    }
  }
}

// --backend cuda serves where a GPU is usable and is a one-line startup error elsewhere (never a
// silent fall-back to the CPU).
TEST(ServerE2ESmall, BackendCudaServesOrSaysWhyNot) {
  GladProcess glad({"--model", testing::TinyModelDir(), "--backend", "cuda", "--slots", "2"});
  const char* expect_backend = std::getenv("GLA_EXPECT_BACKEND");
  if (expect_backend != nullptr && std::string(expect_backend) == "cuda") {
    ASSERT_TRUE(glad.ok()) << glad.log();
    EXPECT_NE(glad.log().find("backend cuda"), std::string::npos) << glad.log();
    EXPECT_EQ(glad.Terminate(), 0);
  } else if (!glad.ok()) {
    EXPECT_NE(glad.log().find("glad: error: --backend cuda: "), std::string::npos) << glad.log();
  } else {
    EXPECT_NE(glad.log().find("backend cuda"), std::string::npos) << glad.log();  // a GPU after all
  }
}

}  // namespace
}  // namespace gla
