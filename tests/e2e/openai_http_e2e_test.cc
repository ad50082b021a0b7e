// The OpenAI HTTP API end to end: a real glad on loopback (CPU backend, the reference checkpoint)
// with --http_listen, driven over HTTP/1.1 (tests/support/http_client.h) and, where the two
// protocols must agree, over gRPC too: both go through the one front door.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "models/safetensors.h"
#include "nlohmann/json.hpp"
#include "tests/support/glad_process.h"
#include "tests/support/http_client.h"
#include "tests/support/test_certs.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using json = nlohmann::json;
using testing::GladProcess;
using testing::HttpClient;
using testing::SseData;

std::vector<int32_t> RefIds(const char* name) {
  auto f = SafetensorsFile::Open(testing::ReferenceDir() + "/gla-tiny/expected.safetensors");
  auto v = *ToInt64(*f->Find(name));
  return std::vector<int32_t>(v.begin(), v.end());
}

// The HTTP port glad logged ("OpenAI HTTP API on http[s]://127.0.0.1:PORT/v1"); 0 if none in 10 s.
int HttpPort(const GladProcess& glad) {
  const std::regex line("OpenAI HTTP API on https?://127\\.0\\.0\\.1:([0-9]+)/v1");
  for (int i = 0; i < 1000; ++i) {
    std::smatch m;
    const std::string log = glad.log();
    if (std::regex_search(log, m, line)) return std::stoi(m[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return 0;
}

int SlotsInUse(GladProcess& glad) {
  grpc::ClientContext ctx;
  v1::ModelInfoResponse info;
  if (!glad.stub()->ModelInfo(&ctx, {}, &info).ok()) return -1;
  return static_cast<int>(info.slots_in_use());
}

bool WaitForIdle(GladProcess& glad) {
  for (int i = 0; i < 1000; ++i) {
    if (SlotsInUse(glad) == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

json Greedy(int max_tokens) {
  return {{"model", "tiny"},
          {"prompt", RefIds("greedy.prompt_ids")},
          {"max_tokens", max_tokens},
          {"temperature", 0},
          {"ignore_eos", true},
          {"return_token_ids", true}};
}

// One glad per test suite (its flags: the suite's SetUpTestSuite calls Start), shared by its
// tests; a glad that failed to start fails every test rather than skipping it. Per suite (CRTP):
// each instantiation has its own glad_ and port_.
template <class Suite>
class SharedGladTest : public ::testing::Test {
 protected:
  static void Start(std::vector<std::string> args) {
    glad_ = new GladProcess(std::move(args));
    port_ = glad_->ok() ? HttpPort(*glad_) : 0;
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(glad_->Terminate(), 0) << glad_->log();
    delete glad_;
  }
  void SetUp() override { ASSERT_TRUE(glad_ != nullptr && glad_->ok() && port_ > 0) << (glad_ ? glad_->log() : ""); }

  static json Body(const testing::HttpResponse& r) { return json::parse(r.body, nullptr, false); }

  static inline GladProcess* glad_ = nullptr;
  static inline int port_ = 0;
};

class OpenAiHttpE2E : public SharedGladTest<OpenAiHttpE2E> {
 protected:
  static void SetUpTestSuite() {
    Start({"--model", testing::TinyModelDir(), "--served_model_name", "tiny", "--http_listen", "127.0.0.1:0",
           "--slots", "8", "--queue_size", "2048", "--max_new_tokens", "4096", "--max_prompt_tokens", "2048",
           "--threads", "1", "--http_max_body_mb", "1", "--http_threads", "2"});
  }
};

TEST_F(OpenAiHttpE2E, HealthAndModels) {
  HttpClient c(port_);
  auto health = c.Get("/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(Body(health)["status"], "ok");
  auto models = c.Get("/v1/models");  // same connection: keep-alive
  ASSERT_EQ(models.status, 200) << models.error;
  const json m = Body(models);
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], "tiny");
  EXPECT_EQ(m["data"][0]["object"], "model");
  // The Prometheus exposition on the same port, with the HTTP requests counted by their route.
  ASSERT_EQ(c.Post("/v1/completions", Greedy(2).dump()).status, 200);
  auto metrics = c.Get("/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.headers["content-type"].rfind("text/plain", 0), 0u);
  EXPECT_NE(metrics.body.find("gla_requests_total{"), std::string::npos) << metrics.body.substr(0, 400);
  EXPECT_NE(metrics.body.find("method=\"v1/completions\""), std::string::npos) << metrics.body.substr(0, 2000);
}

TEST_F(OpenAiHttpE2E, GreedyCompletionEqualsTheReferenceContinuation) {
  HttpClient c(port_);
  auto r = c.Post("/v1/completions", Greedy(16).dump());
  ASSERT_EQ(r.status, 200) << r.body << r.error;
  const json b = Body(r);
  EXPECT_EQ(b["object"], "text_completion");
  EXPECT_EQ(b["model"], "tiny");
  EXPECT_EQ(b["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  ASSERT_EQ(b["choices"].size(), 1u);
  EXPECT_EQ(b["choices"][0]["token_ids"].get<std::vector<int32_t>>(), RefIds("greedy.output_ids"));
  EXPECT_EQ(b["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(b["usage"]["prompt_tokens"], 24);
  EXPECT_EQ(b["usage"]["completion_tokens"], 16);
  EXPECT_EQ(b["usage"]["total_tokens"], 40);
}

TEST_F(OpenAiHttpE2E, StreamedChunksAddUpToTheUnaryAnswer) {
  HttpClient c(port_);
  json req = Greedy(16);
  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  auto r = c.Post("/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  const auto events = SseData(r.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::vector<int32_t> ids;
  std::string finish;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    EXPECT_EQ(e["object"], "text_completion");
    ASSERT_EQ(e["choices"].size(), 1u);
    for (int32_t id : e["choices"][0]["token_ids"]) ids.push_back(id);
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
    EXPECT_TRUE(e["usage"].is_null()) << "usage comes once, at the end";
  }
  EXPECT_EQ(ids, RefIds("greedy.output_ids"));
  EXPECT_EQ(finish, "length");
  const json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 16);
}

TEST_F(OpenAiHttpE2E, NChoicesAndSeveralPromptsAreReproducibleForASeed) {
  HttpClient c(port_);
  const auto p = RefIds("greedy.prompt_ids");
  json req = {{"model", "tiny"},         {"prompt", {p, std::vector<int32_t>(p.begin(), p.begin() + 5)}},
              {"max_tokens", 12},        {"temperature", 1.0},
              {"n", 3},                  {"seed", 7},
              {"ignore_eos", true},      {"return_token_ids", true},
              {"logprobs", 2}};
  auto first = c.Post("/v1/completions", req.dump());
  auto second = c.Post("/v1/completions", req.dump());
  ASSERT_EQ(first.status, 200) << first.body;
  const json a = Body(first), b = Body(second);
  ASSERT_EQ(a["choices"].size(), 6u);
  for (size_t k = 0; k < 6; ++k) {
    EXPECT_EQ(a["choices"][k]["index"], k);
    EXPECT_EQ(a["choices"][k]["token_ids"], b["choices"][k]["token_ids"]) << "same seed, same choice " << k;
    EXPECT_EQ(a["choices"][k]["token_ids"].size(), 12u);
    EXPECT_EQ(a["choices"][k]["logprobs"]["token_logprobs"].size(), 12u);
    EXPECT_LE(a["choices"][k]["logprobs"]["top_logprobs"][0].size(), 2u);
  }
  EXPECT_NE(a["choices"][0]["token_ids"], a["choices"][1]["token_ids"]) << "n choices are drawn apart";
  EXPECT_EQ(a["usage"]["prompt_tokens"], 24 + 5) << "a prompt counts once, whatever n";
  EXPECT_EQ(a["usage"]["completion_tokens"], 6 * 12);
}

// Prompt scoring through echo, checked against gla-eval's logits of the same tokens (the CPU
// model's all-logits forward): the scores an evaluation harness reads.
TEST_F(OpenAiHttpE2E, EchoScoresThePromptAsGlaEvalLogitsDo) {
  const std::vector<int32_t> ids = RefIds("seq2.input_ids");  // 130 tokens: two 64-token chunks
  const std::string out = testing::MakeTempDir("echo_logits") + "/logits.safetensors";
  std::string list;
  for (int32_t id : ids) list += absl::StrCat(list.empty() ? "" : ",", id);
  const auto eval = testing::RunCommand(absl::StrCat(GLA_EVAL_PATH, " logits --model ", testing::TinyModelDir(),
                                                     " --ids ", list, " --out ", out));
  ASSERT_EQ(eval.code, 0) << eval.err;
  auto f = SafetensorsFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.status();
  const std::vector<double> logits = *ToFloat64(*f->Find("logits"));
  const size_t V = logits.size() / ids.size();

  HttpClient c(port_);
  json req = {{"model", "tiny"}, {"prompt", ids}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 3}, {"temperature", 0}};
  auto r = c.Post("/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json b = Body(r);
  const json& lp = b["choices"][0]["logprobs"];
  EXPECT_EQ(b["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(b["usage"]["completion_tokens"], 0);
  EXPECT_EQ(b["usage"]["prompt_tokens"], ids.size());
  ASSERT_EQ(lp["tokens"].size(), ids.size());
  EXPECT_TRUE(lp["token_logprobs"][0].is_null()) << "nothing precedes the first token";
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  double worst = 0;
  for (size_t t = 1; t < ids.size(); ++t) {
    const double* row = logits.data() + (t - 1) * V;
    const double mx = *std::max_element(row, row + V);
    double z = 0;
    for (size_t v = 0; v < V; ++v) z += std::exp(row[v] - mx);
    worst = std::max(worst, std::abs(lp["token_logprobs"][t].get<double>() - (row[ids[t]] - mx - std::log(z))));
    EXPECT_EQ(lp["tokens"][t], absl::StrCat("<", ids[t], ">"));  // no tokenizer: tokens named by id
    EXPECT_EQ(lp["top_logprobs"][t].size(), 3u);
  }
  EXPECT_LT(worst, 1e-4) << "largest |HTTP echo - gla-eval log-softmax|";
}

TEST_F(OpenAiHttpE2E, EchoWithNChoicesSharesThePromptScoresAndStreamsThemFirst) {
  const std::vector<int32_t> p = RefIds("greedy.prompt_ids");
  json req = {{"model", "tiny"}, {"prompt", p},         {"max_tokens", 5}, {"echo", true},
              {"logprobs", 1},   {"n", 3},              {"seed", 9},       {"ignore_eos", true},
              {"return_token_ids", true}};
  HttpClient c(port_);
  auto r = c.Post("/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json b = Body(r);
  ASSERT_EQ(b["choices"].size(), 3u);
  const json& first = b["choices"][0]["logprobs"];
  for (size_t k = 0; k < 3; ++k) {
    const json& lp = b["choices"][k]["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), p.size() + 5) << "the prompt's tokens, then the completion's";
    for (size_t t = 1; t < p.size(); ++t) EXPECT_EQ(lp["token_logprobs"][t], first["token_logprobs"][t]);
    EXPECT_EQ(b["choices"][k]["token_ids"].size(), 5u) << "token_ids are the completion's";
  }
  EXPECT_NE(b["choices"][0]["token_ids"], b["choices"][1]["token_ids"]);
  // Streamed: each choice's first chunk carries the whole prompt part.
  req["stream"] = true;
  auto s = c.Post("/v1/completions", req.dump());
  ASSERT_EQ(s.status, 200) << s.body;
  std::vector<size_t> seen(3, 0);
  for (const std::string& e : SseData(s.body)) {
    if (e == "[DONE]") continue;
    const json chunk = json::parse(e);
    const size_t k = chunk["choices"][0]["index"];
    const size_t n = chunk["choices"][0]["logprobs"]["tokens"].size();
    if (seen[k] == 0) {
      EXPECT_GE(n, p.size()) << "choice " << k << "'s first chunk";
    }
    seen[k] += n;
  }
  for (size_t k = 0; k < 3; ++k) EXPECT_EQ(seen[k], p.size() + 5);
}

// n > 1 and prompt scores over gRPC: the same front door, so the same generations and the same
// scores as over HTTP.
TEST_F(OpenAiHttpE2E, GrpcTakesNAndPromptScoresLikeHttp) {
  const auto p = RefIds("greedy.prompt_ids");
  v1::GenerateRequest g;
  g.mutable_token_ids()->mutable_ids()->Add(p.begin(), p.end());
  g.set_max_new_tokens(6);
  g.set_ignore_eos(true);
  g.mutable_sampling()->set_temperature(1.0f);
  g.mutable_sampling()->set_seed(21);
  g.set_n(3);
  // The metrics count every generation's tokens of an n > 1 call, not only the last one's.
  auto generated = [&] {
    HttpClient m(port_);
    const std::string text = m.Get("/metrics").body;
    const std::regex line("\ngla_generated_tokens_total ([0-9.e+]+)");
    std::smatch x;
    return std::regex_search(text, x, line) ? std::stod(x[1]) : -1.0;
  };
  ASSERT_TRUE(WaitForIdle(*glad_));
  const double before = generated();
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  ASSERT_TRUE(glad_->stub()->Generate(&ctx, g, &resp).ok());
  ASSERT_EQ(resp.choices_size(), 3);
  EXPECT_EQ(generated() - before, 18.0) << "3 generations x 6 tokens";
  EXPECT_EQ(std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()),
            std::vector<int32_t>(resp.choices(0).token_ids().begin(), resp.choices(0).token_ids().end()));
  json req = {{"model", "tiny"}, {"prompt", p},   {"max_tokens", 6},        {"temperature", 1.0},
              {"seed", 21},      {"n", 3},        {"ignore_eos", true},     {"return_token_ids", true}};
  HttpClient c(port_);
  auto r = c.Post("/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json b = Body(r);
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(resp.choices(k).token_ids_size(), 6);
    EXPECT_EQ(resp.choices(k).finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(b["choices"][k]["token_ids"].get<std::vector<int32_t>>(),
              std::vector<int32_t>(resp.choices(k).token_ids().begin(), resp.choices(k).token_ids().end()))
        << "choice " << k;
  }
  // Streamed: each message names its generation; per generation, the same tokens.
  grpc::ClientContext sctx;
  auto stream = glad_->stub()->GenerateStream(&sctx, g);
  std::vector<std::vector<int32_t>> got(3);
  std::vector<int> finished(3, 0);
  v1::GenerateStreamResponse m;
  while (stream->Read(&m)) {
    ASSERT_LT(m.index(), 3u);
    got[m.index()].insert(got[m.index()].end(), m.token_ids().begin(), m.token_ids().end());
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) ++finished[m.index()];
  }
  ASSERT_TRUE(stream->Finish().ok());
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(got[k], std::vector<int32_t>(resp.choices(k).token_ids().begin(), resp.choices(k).token_ids().end()));
    EXPECT_EQ(finished[k], 1);
  }
  // Scores only: the same numbers as HTTP's echo.
  v1::GenerateRequest score;
  score.mutable_token_ids()->mutable_ids()->Add(p.begin(), p.end());
  score.set_prompt_logprobs(2);
  score.set_score_only(true);
  grpc::ClientContext qctx;
  v1::GenerateResponse scored;
  ASSERT_TRUE(glad_->stub()->Generate(&qctx, score, &scored).ok());
  EXPECT_EQ(scored.token_ids_size(), 0);
  EXPECT_EQ(scored.finish_reason(), v1::FINISH_REASON_LENGTH);
  ASSERT_EQ(scored.prompt_logprobs_size(), static_cast<int>(p.size()) - 1);
  json echo = {{"model", "tiny"}, {"prompt", p}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 2}};
  const json e = Body(c.Post("/v1/completions", echo.dump()));
  for (size_t t = 1; t < p.size(); ++t) {
    const v1::Logprobs& lp = scored.prompt_logprobs(static_cast<int>(t - 1));
    EXPECT_EQ(lp.chosen().token_id(), p[t]);
    EXPECT_EQ(lp.top_size(), 2);
    EXPECT_FLOAT_EQ(lp.chosen().logprob(), e["choices"][0]["logprobs"]["token_logprobs"][t].get<float>());
  }
  // Refusals name the field.
  auto refused = [&](v1::GenerateRequest bad, const std::string& needle) {
    grpc::ClientContext x;
    v1::GenerateResponse unused;
    const grpc::Status st = glad_->stub()->Generate(&x, bad, &unused);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find(needle), std::string::npos) << st.error_message();
  };
  v1::GenerateRequest bad = g;
  bad.set_n(1000);
  refused(bad, "n: must be in [1, 16]");
  bad = score;
  bad.clear_prompt_logprobs();
  refused(bad, "score_only: scores the prompt only: needs prompt_logprobs");
  bad = score;
  bad.set_session("s1");
  refused(bad, "prompt_logprobs: scores a prompt from an empty past");
  bad = g;
  bad.set_request_id("mine");
  refused(bad, "request_id: names one generation");
}

// logit_bias over both protocols: +100 makes a token all but certain, -100 all but bans one, and
// out-of-range ids and values are refused by name.
TEST_F(OpenAiHttpE2E, LogitBiasForcesAndBansTokensOnBothProtocols) {
  HttpClient c(port_);
  json req = Greedy(8);
  req["logit_bias"] = {{"42", 100}};
  auto r = c.Post("/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["choices"][0]["token_ids"].get<std::vector<int32_t>>(), std::vector<int32_t>(8, 42));
  const std::vector<int32_t> greedy = RefIds("greedy.output_ids");
  req = Greedy(1);
  req["logit_bias"] = {{std::to_string(greedy[0]), -100}};
  r = c.Post("/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(Body(r)["choices"][0]["token_ids"][0], greedy[0]) << "the greedy token was banned";
  v1::GenerateRequest g;
  const auto p = RefIds("greedy.prompt_ids");
  g.mutable_token_ids()->mutable_ids()->Add(p.begin(), p.end());
  g.set_max_new_tokens(4);
  g.set_ignore_eos(true);
  (*g.mutable_sampling()->mutable_logit_bias())[17] = 100.0f;
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  ASSERT_TRUE(glad_->stub()->Generate(&ctx, g, &resp).ok());
  EXPECT_EQ(std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()), std::vector<int32_t>(4, 17));
  for (const char* bad : {R"({"model":"tiny","prompt":[1],"logit_bias":{"x":1}})",
                          R"({"model":"tiny","prompt":[1],"logit_bias":{"99999":1}})",
                          R"({"model":"tiny","prompt":[1],"logit_bias":{"3":101}})",
                          R"({"model":"tiny","prompt":[1],"logit_bias":{"3":1,"03":2}})",
                          R"({"model":"tiny","prompt":[1],"logit_bias":[1]})"}) {
    auto e = c.Post("/v1/completions", bad);
    EXPECT_EQ(e.status, 400) << bad;
    EXPECT_NE(e.body.find("logit_bias"), std::string::npos) << e.body;
  }
}

TEST_F(OpenAiHttpE2E, BothProtocolsGiveTheSameTokensThroughTheOneFrontDoor) {
  v1::GenerateRequest g;
  const auto p = RefIds("greedy.prompt_ids");
  g.mutable_token_ids()->mutable_ids()->Add(p.begin(), p.end());
  g.set_max_new_tokens(10);
  g.set_ignore_eos(true);
  g.mutable_sampling()->set_temperature(0.8f);
  g.mutable_sampling()->set_seed(123);
  grpc::ClientContext ctx;
  v1::GenerateResponse resp;
  ASSERT_TRUE(glad_->stub()->Generate(&ctx, g, &resp).ok());
  json req = {{"model", "tiny"},  {"prompt", p},          {"max_tokens", 10},        {"temperature", 0.8},
              {"seed", 123},      {"ignore_eos", true},   {"return_token_ids", true}};
  HttpClient c(port_);
  auto r = c.Post("/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["choices"][0]["token_ids"].get<std::vector<int32_t>>(),
            std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()));
}

TEST_F(OpenAiHttpE2E, RefusalsComeInOpenAisErrorShapeWithTheirStatus) {
  HttpClient c(port_);
  auto expect_error = [&](const testing::HttpResponse& r, int status, const std::string& needle) {
    EXPECT_EQ(r.status, status) << r.body;
    const json e = Body(r);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << r.body;
    EXPECT_NE(e["error"]["message"].get<std::string>().find(needle), std::string::npos) << r.body;
    EXPECT_TRUE(e["error"]["type"].is_string());
  };
  expect_error(c.Post("/v1/completions", "{not json"), 400, "not valid JSON");
  expect_error(c.Post("/v1/completions", R"({"model":"tiny","prompt":[1,2],"temprature":1})"), 400, "temprature");
  expect_error(c.Post("/v1/completions", R"({"model":"tiny","prompt":[1,2],"temperature":-1})"), 400,
               "temperature: must be in [0, 100]");
  expect_error(c.Post("/v1/completions", R"({"model":"tiny","prompt":[1,2],"max_tokens":100000})"), 400,
               "max_tokens: 100000 is over the limit of 4096");
  expect_error(c.Post("/v1/completions", R"({"model":"tiny","prompt":[1,2],"max_tokens":1e30})"), 400,
               "max_tokens: must be an integer");
  expect_error(c.Post("/v1/completions", R"({"model":"tiny","prompt":[99999999]})"), 400, "outside the vocabulary");
  expect_error(c.Post("/v1/completions", R"({"model":"tiny","prompt":"text"})"), 400, "no tokenizer.model");
  expect_error(c.Post("/v1/completions", R"({"model":"nope","prompt":[1]})"), 404, "model 'nope' does not exist");
  expect_error(c.Post("/v1/completions", R"({"prompt":[1]})"), 400, "model: is required");
  expect_error(c.Post("/v1/completions", R"({"model":"tiny","prompt":[1],"n":0})"), 400, "n: must be in");
  expect_error(c.Post("/v1/completions", R"({"model":"tiny","prompt":[1],"max_tokens":0})"), 400,
               "max_tokens: 0 only with echo");
  expect_error(c.Post("/v1/completions", R"({"model":"tiny","prompt":[1],"echo":true,"session":"s"})"), 400,
               "echo: scores a prompt from an empty past");
  expect_error(c.Get("/v1/nothing"), 404, "no route");
  expect_error(c.Get("/v1/completions"), 400, "takes POST");
  // Over --http_max_body_mb (1 MiB): 413 before the body is read, and the connection closes.
  HttpClient big(port_);
  expect_error(big.Post("/v1/completions", std::string(2 << 20, ' ')), 413, "over the server's limit");
  // Nothing of the above holds a slot.
  EXPECT_TRUE(WaitForIdle(*glad_));
}

TEST_F(OpenAiHttpE2E, AClientThatGoesAwayMidStreamIsCancelledAndFreesItsSlot) {
  json req = Greedy(4096);
  req["stream"] = true;
  req["request_id"] = "leaves-early";
  {
    HttpClient c(port_);
    ASSERT_TRUE(c.StartStreamAndRead("/v1/completions", req.dump(), 2));
    c.Close();
  }
  EXPECT_TRUE(WaitForIdle(*glad_));
  // Its log line says it was cancelled (a generation of 4,096 tokens had not finished on its own).
  bool cancelled = false;
  for (int i = 0; i < 200 && !cancelled; ++i) {
    const std::string log = glad_->log();
    const size_t at = log.find("id=leaves-early ");
    cancelled = at != std::string::npos && log.find("finish=cancelled", at) < log.find('\n', at);
    if (!cancelled) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(cancelled) << glad_->log();
}

TEST_F(OpenAiHttpE2E, AThousandConcurrentStreamsAllFinish) {
  // Far more streams than slots (8) and than HTTP threads (2): every one ends with [DONE]. A
  // thread and a socket per client here; the descriptor limit raised as glad raises its own.
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max;
  setrlimit(RLIMIT_NOFILE, &r);
  getrlimit(RLIMIT_NOFILE, &r);
  // Each stream costs a descriptor here and one in glad: a hard limit below ~2,200 runs fewer, said.
  const int kStreams = static_cast<int>(std::min<rlim_t>(1000, (r.rlim_cur - 200) / 2));
  if (kStreams < 1000)
    std::printf("[ note     ] ulimit -Hn %llu: %d concurrent streams instead of 1,000\n",
                static_cast<unsigned long long>(r.rlim_cur), kStreams);
  ASSERT_GE(kStreams, 100) << "ulimit -Hn is too low for this test";
  std::atomic<int> done{0}, failed{0};
  std::mutex why_mu;
  std::string why;
  std::vector<std::thread> clients;
  json req = Greedy(6);
  req["stream"] = true;
  const std::string body = req.dump();
  for (int i = 0; i < kStreams; ++i)
    clients.emplace_back([&] {
      HttpClient c(port_, std::chrono::seconds(120));
      auto r = c.Post("/v1/completions", body);
      const auto events = SseData(r.body);
      if (r.status == 200 && !events.empty() && events.back() == "[DONE]") {
        ++done;
      } else {
        ++failed;
        std::lock_guard<std::mutex> lock(why_mu);
        if (why.size() < 2000) why += std::to_string(r.status) + " " + r.error + " " + r.body.substr(0, 200) + "\n";
      }
    });
  for (auto& t : clients) t.join();
  EXPECT_EQ(done.load(), kStreams);
  EXPECT_EQ(failed.load(), 0) << why;
  EXPECT_TRUE(WaitForIdle(*glad_));
}

TEST(OpenAiHttpAuth, TheBearerTokenGuardsTheApiButNotHealth) {
  GladProcess glad({"--model", testing::TinyModelDir(), "--http_listen", "127.0.0.1:0", "--auth_token", "s3cret",
                    "--threads", "1"});
  ASSERT_TRUE(glad.ok()) << glad.log();
  const int port = HttpPort(glad);
  ASSERT_GT(port, 0) << glad.log();
  HttpClient c(port);
  EXPECT_EQ(c.Get("/health").status, 200);
  auto none = c.Get("/v1/models");
  EXPECT_EQ(none.status, 401) << none.body;
  EXPECT_NE(none.body.find("authentication_error"), std::string::npos);
  EXPECT_EQ(c.Get("/v1/models", {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(c.Get("/v1/models", {{"Authorization", "Bearer s3cret"}}).status, 200);
  EXPECT_EQ(glad.Terminate(), 0);
}

TEST(OpenAiHttpDrain, SigtermLetsARunningStreamFinish) {
  GladProcess glad({"--model", testing::TinyModelDir(), "--served_model_name", "tiny", "--http_listen", "127.0.0.1:0",
                    "--threads", "1", "--shutdown_grace_s", "30", "--max_new_tokens", "4096"});
  ASSERT_TRUE(glad.ok()) << glad.log();
  const int port = HttpPort(glad);
  ASSERT_GT(port, 0);
  json req = Greedy(4000);
  req["stream"] = true;
  req["request_id"] = "drained";
  testing::HttpResponse r;
  std::thread client([&] { r = HttpClient(port).Post("/v1/completions", req.dump()); });
  bool running = false;
  for (int i = 0; i < 500 && !running; ++i) {
    running = SlotsInUse(glad) >= 1;
    if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const int code = glad.Terminate();
  client.join();
  EXPECT_EQ(code, 0) << glad.log();
  ASSERT_EQ(r.status, 200) << r.error;
  const auto events = SseData(r.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json e = json::parse(events[i]);  // kept: a range-for over a temporary's member would dangle
    for (int32_t id : e["choices"][0]["token_ids"]) ids.push_back(id);
  }
  EXPECT_EQ(ids.size(), 4000u) << "the stream ran to its end within the grace: " << r.body.substr(0, 600);
  // The drain was under way while it ran: SIGTERM is logged before the request's own line.
  ASSERT_TRUE(running) << "the stream never held a slot";
  const std::string log = glad.log();
  const size_t draining = log.find("draining"), ended = log.find("id=drained ");
  ASSERT_NE(ended, std::string::npos) << log;
  EXPECT_LT(draining, ended) << "the generation ended before SIGTERM: this run did not test the drain\n" << log;
}

// HTTPS on --http_listen: the gRPC port's --tls_cert and --tls_key, the same bearer token. The
// clients: tests/support/http_client.h over TLS, and curl (an implementation of its own).
class OpenAiHttpsE2E : public SharedGladTest<OpenAiHttpsE2E> {
 protected:
  static void SetUpTestSuite() {
    Start({"--model", testing::TinyModelDir(), "--served_model_name", "tiny", "--http_listen", "127.0.0.1:0",
           "--threads", "1", "--tls_cert", testing::ServerTestCert().cert, "--tls_key", testing::ServerTestCert().key,
           "--auth_token", "s3cret"});
  }
  static testing::HttpTls Tls() { return {testing::ServerTestCert().cert, "", ""}; }
  static inline const std::vector<std::pair<std::string, std::string>> kToken = {{"Authorization", "Bearer s3cret"}};
};

TEST_F(OpenAiHttpsE2E, ModelsAndACompletionWithTheTokenAndA401WithoutIt) {
  EXPECT_NE(glad_->log().find("OpenAI HTTP API on https://127.0.0.1:"), std::string::npos) << glad_->log();
  HttpClient c(port_, Tls());
  auto models = c.Get("/v1/models", kToken);
  ASSERT_EQ(models.status, 200) << models.error << models.body;
  EXPECT_EQ(Body(models)["data"][0]["id"], "tiny");
  auto r = c.Post("/v1/completions", Greedy(16).dump(), kToken);  // the same connection: keep-alive
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  EXPECT_EQ(Body(r)["choices"][0]["token_ids"].get<std::vector<int32_t>>(), RefIds("greedy.output_ids"));
  auto wrong = c.Get("/v1/models", {{"Authorization", "Bearer wrong"}});
  EXPECT_EQ(wrong.status, 401) << wrong.error;
  EXPECT_NE(wrong.body.find("authentication_error"), std::string::npos) << wrong.body;
  EXPECT_EQ(c.Post("/v1/completions", Greedy(2).dump()).status, 401);
  EXPECT_EQ(c.Get("/health").status, 200) << "health needs no token, over TLS too";
}

TEST_F(OpenAiHttpsE2E, AStreamedCompletionEndsWithDone) {
  json req = Greedy(16);
  req["stream"] = true;
  auto r = HttpClient(port_, Tls()).Post("/v1/completions", req.dump(), kToken);
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  const auto events = SseData(r.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    for (int32_t id : e["choices"][0]["token_ids"]) ids.push_back(id);
  }
  EXPECT_EQ(ids, RefIds("greedy.output_ids"));
}

// curl's own TLS and HTTP/1.1 (ALPN offers h2 too): a streamed completion, then a wrong token.
TEST_F(OpenAiHttpsE2E, CurlStreamsACompletion) {
  json req = Greedy(16);
  req["stream"] = true;
  const std::string dir = testing::MakeTempDir("curl-https");
  std::ofstream(dir + "/req.json") << req.dump();
  const std::string curl = absl::StrCat("curl -sS --max-time 60 --cacert ", testing::ServerTestCert().cert,
                                        " -H 'Content-Type: application/json' ");
  const std::string url = absl::StrCat(" https://127.0.0.1:", port_, "/v1/completions");
  const std::string body = " -d @" + dir + "/req.json";
  const auto streamed = testing::RunCommand(curl + "-N -H 'Authorization: Bearer s3cret'" + body + url);
  ASSERT_EQ(streamed.code, 0) << streamed.err;
  const auto events = SseData(streamed.out);
  ASSERT_GE(events.size(), 2u) << streamed.out;
  EXPECT_EQ(events.back(), "[DONE]");
  const auto refused =
      testing::RunCommand(curl + "-o /dev/null -w '%{http_code}' -H 'Authorization: Bearer wrong'" + body + url);
  EXPECT_EQ(refused.out, "401") << refused.err;
}

// A plaintext request on the HTTPS port gets a plaintext 400 that says so (not a reset, not a
// hang), and the server goes on serving TLS.
TEST_F(OpenAiHttpsE2E, PlaintextOnTheHttpsPortIsRefusedAndServingGoesOn) {
  auto plain = HttpClient(port_).Get("/v1/models");
  EXPECT_EQ(plain.status, 400) << plain.error;
  EXPECT_NE(plain.body.find("this port serves HTTPS"), std::string::npos) << plain.body;
  const auto curl = testing::RunCommand(absl::StrCat("curl -sS --max-time 30 http://127.0.0.1:", port_, "/health"));
  EXPECT_NE(curl.out.find("this port serves HTTPS"), std::string::npos) << curl.out << curl.err;
  EXPECT_EQ(HttpClient(port_, Tls()).Get("/v1/models", kToken).status, 200);
}

// --tls_client_ca: both ports want a client certificate that CA signed.
TEST(OpenAiHttpMutualTls, AClientCertificateFromTheClientCaIsRequired) {
  const testing::CertFiles& server = testing::ServerTestCert();
  const testing::CertFiles& client = testing::ClientTestCert();
  GladProcess glad({"--model", testing::TinyModelDir(), "--http_listen", "127.0.0.1:0", "--threads", "1",
                    "--tls_cert", server.cert, "--tls_key", server.key, "--tls_client_ca",
                    testing::ClientTestCa().cert});
  ASSERT_TRUE(glad.ok()) << glad.log();
  EXPECT_NE(glad.log().find(" mutual-tls (backend"), std::string::npos) << glad.log();
  const int port = HttpPort(glad);
  ASSERT_GT(port, 0) << glad.log();
  auto none = HttpClient(port, {server.cert, "", ""}).Get("/v1/models");
  EXPECT_EQ(none.status, 0) << "no client certificate: " << none.body;
  auto untrusted = HttpClient(port, {server.cert, server.cert, server.key}).Get("/v1/models");
  EXPECT_EQ(untrusted.status, 0) << "a certificate the client CA did not sign: " << untrusted.body;
  auto with = HttpClient(port, {server.cert, client.cert, client.key}).Get("/v1/models");
  EXPECT_EQ(with.status, 200) << with.error;
  const std::string curl = absl::StrCat("curl -sS --max-time 30 --cacert ", server.cert, " https://127.0.0.1:", port,
                                        "/health");
  EXPECT_NE(testing::RunCommand(curl).code, 0) << "curl without a certificate";
  const auto curl_with = testing::RunCommand(curl + " --cert " + client.cert + " --key " + client.key);
  EXPECT_EQ(curl_with.code, 0) << curl_with.err;
  EXPECT_NE(curl_with.out.find("ok"), std::string::npos) << curl_with.out;
  // The gRPC port asks the same (the same files, read once).
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = testing::ReadFile(server.cert);
  auto model_info = [&](const grpc::SslCredentialsOptions& creds) {
    auto stub = v1::Gla::NewStub(grpc::CreateChannel(glad.address(), grpc::SslCredentials(creds)));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ModelInfoResponse info;
    return stub->ModelInfo(&ctx, {}, &info).error_code();
  };
  EXPECT_NE(model_info(o), grpc::StatusCode::OK) << "gRPC without a client certificate";
  o.pem_cert_chain = testing::ReadFile(client.cert);
  o.pem_private_key = testing::ReadFile(client.key);
  EXPECT_EQ(model_info(o), grpc::StatusCode::OK);
  EXPECT_EQ(glad.Terminate(), 0);
}

}  // namespace
}  // namespace gla

namespace gla {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUnderAsan = true;
#else
constexpr bool kUnderAsan = false;
#endif

// /v1/chat/completions on the default model (models/gla-brown: a SentencePiece tokenizer, no
// tokenizer_config.json), once with a ChatML template given by --chat_template and once with the
// plain default; the prompt's token count is checked against gRPC Tokenize of the text the
// template must have rendered.
class OpenAiChatE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = testing::MakeTempDir("chatml");
    template_file_ = dir + "/chatml.jinja";
    std::ofstream(template_file_) << "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                                     "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    chatml_ = new GladProcess({"--model", std::string(GLA_SOURCE_DIR) + "/models/gla-brown", "--served_model_name",
                               "brown", "--http_listen", "127.0.0.1:0", "--threads", "1", "--chat_template",
                               template_file_});
    plain_ = new GladProcess({"--model", std::string(GLA_SOURCE_DIR) + "/models/gla-brown", "--served_model_name",
                              "brown", "--http_listen", "127.0.0.1:0", "--threads", "1"});
  }
  static void TearDownTestSuite() {
    for (GladProcess* g : {chatml_, plain_}) {
      const int code = g->Terminate();
      if (!kUnderAsan) {
        EXPECT_EQ(code, 0) << g->log();
      }
      delete g;
    }
  }
  void SetUp() override {
    if (kUnderAsan)
      GTEST_SKIP() << "skipped under AddressSanitizer: glad loads SentencePiece with RTLD_DEEPBIND (to keep it off "
                      "gRPC's protobuf), which the sanitizer runtime refuses; the release build runs this suite";
    ASSERT_TRUE(chatml_->ok() && plain_->ok()) << chatml_->log() << plain_->log();
  }
  static int TokenCount(GladProcess& glad, const std::string& text, bool add_bos) {
    grpc::ClientContext ctx;
    v1::TokenizeRequest req;
    req.set_text(text);
    req.set_add_bos(add_bos);
    v1::TokenizeResponse resp;
    EXPECT_TRUE(glad.stub()->Tokenize(&ctx, req, &resp).ok());
    return resp.token_ids_size();
  }
  static json Chat(bool stream) {
    return {{"model", "brown"},
            {"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "What did the jury say?"}}}},
            {"max_tokens", 12},
            {"temperature", 0},
            {"stream", stream}};
  }
  static std::string template_file_;
  static GladProcess *chatml_, *plain_;
};
std::string OpenAiChatE2E::template_file_;
GladProcess* OpenAiChatE2E::chatml_ = nullptr;
GladProcess* OpenAiChatE2E::plain_ = nullptr;

TEST_F(OpenAiChatE2E, TheChatTemplateMakesThePromptAndTheAnswerIsAnAssistantMessage) {
  HttpClient c(HttpPort(*chatml_));
  auto r = c.Post("/v1/chat/completions", Chat(false).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json b = json::parse(r.body);
  EXPECT_EQ(b["object"], "chat.completion");
  EXPECT_EQ(b["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(b["choices"][0]["message"]["role"], "assistant");
  EXPECT_FALSE(b["choices"][0]["message"]["content"].get<std::string>().empty());
  EXPECT_EQ(b["choices"][0]["finish_reason"], "length");
  const std::string rendered =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat did the jury say?<|im_end|>\n"
      "<|im_start|>assistant\n";
  EXPECT_EQ(b["usage"]["prompt_tokens"], TokenCount(*chatml_, rendered, false));
}

TEST_F(OpenAiChatE2E, StreamedDeltasOpenWithTheRoleAndAddUpToTheMessage) {
  HttpClient c(HttpPort(*chatml_));
  const json whole = json::parse(c.Post("/v1/chat/completions", Chat(false).dump()).body);
  auto r = c.Post("/v1/chat/completions", Chat(true).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const auto events = SseData(r.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json first = json::parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string content, finish;
  for (size_t i = 1; i + 1 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    const json& delta = e["choices"][0]["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(content, whole["choices"][0]["message"]["content"]);
  EXPECT_EQ(finish, "length");
}

TEST_F(OpenAiChatE2E, WithoutATemplateThePlainDefaultIsUsed) {
  HttpClient c(HttpPort(*plain_));
  json req = Chat(false);
  req["messages"] = {{{"role", "user"}, {"content", "Hello"}}};
  auto r = c.Post("/v1/chat/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  // "{{ bos_token }}user: Hello\nassistant:" with the BOS as its id.
  EXPECT_EQ(json::parse(r.body)["usage"]["prompt_tokens"], TokenCount(*plain_, "user: Hello\nassistant:", true));
}

TEST_F(OpenAiChatE2E, ChatRefusalsNameTheField) {
  HttpClient c(HttpPort(*chatml_));
  auto expect_error = [&](const json& body, int status, const std::string& needle) {
    auto r = c.Post("/v1/chat/completions", body.dump());
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_NE(r.body.find(needle), std::string::npos) << r.body;
  };
  expect_error({{"model", "brown"}}, 400, "messages: is required");
  expect_error({{"model", "brown"}, {"messages", json::array()}}, 400, "messages: must be a non-empty list");
  expect_error({{"model", "brown"}, {"messages", {{{"role", "tool"}, {"content", "x"}}}}}, 400, "messages[0].role");
  expect_error({{"model", "brown"},
                {"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", "x"}}}}}}}},
               400, "only text parts");
  json structured = Chat(false);
  structured["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"name", "x"}}}};
  expect_error(structured, 400, "response_format.json_schema.schema: is required");
  json tools = Chat(false);
  tools["tools"] = {{{"type", "function"}}};
  expect_error(tools, 400, "tool calls are not supported");
  json lp = Chat(false);
  lp["top_logprobs"] = 2;
  expect_error(lp, 400, "top_logprobs: needs logprobs: true");
}

// Structured output (issue 21) through the OpenAI API on the default model: every output that
// ended by itself (finish_reason "stop") is in the constraint's language, sampled at temperature
// > 0 over several seeds.
class OpenAiStructuredE2E : public SharedGladTest<OpenAiStructuredE2E> {
 protected:
  static void SetUpTestSuite() {
    if (kUnderAsan) return;  // SetUp says why
    Start({"--model", std::string(GLA_SOURCE_DIR) + "/models/gla-brown", "--served_model_name", "brown",
           "--http_listen", "127.0.0.1:0", "--threads", "1"});
  }
  static void TearDownTestSuite() {
    if (glad_ != nullptr) SharedGladTest::TearDownTestSuite();
  }
  void SetUp() override {
    if (kUnderAsan)
      GTEST_SKIP() << "skipped under AddressSanitizer: glad loads SentencePiece with RTLD_DEEPBIND, which the "
                      "sanitizer runtime refuses; the release build runs this suite";
    SharedGladTest::SetUp();
  }
  static json Chat(bool stream) {
    return {{"model", "brown"},
            {"messages", {{{"role", "user"}, {"content", "Answer in one word."}}}},
            {"max_tokens", 12},
            {"temperature", 0.8},
            {"seed", 1},
            {"stream", stream}};
  }
  // A person: every member required, none other allowed.
  static json PersonSchema() {
    return json::parse(R"({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "member": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3}},
      "required": ["name", "age", "member", "tags"], "additionalProperties": false})");
  }
  // Whether `text` is a JSON object valid under PersonSchema(); why not in *why.
  static bool IsPerson(const std::string& text, std::string* why) {
    const json v = json::parse(text, nullptr, false);
    if (v.is_discarded() || !v.is_object()) return *why = "not a JSON object", false;
    if (v.size() != 4) return *why = "not exactly 4 members", false;
    if (!v.contains("name") || !v["name"].is_string()) return *why = "name", false;
    // maxLength counts code points.
    const std::string name = v["name"];
    if (std::count_if(name.begin(), name.end(), [](char c) { return (c & 0xC0) != 0x80; }) > 20)
      return *why = "name longer than 20", false;
    if (!v.contains("age") || !v["age"].is_number_integer() || v["age"] < 0 || v["age"] > 120) return *why = "age", false;
    if (!v.contains("member") || !v["member"].is_boolean()) return *why = "member", false;
    if (!v.contains("tags") || !v["tags"].is_array() || v["tags"].size() > 3) return *why = "tags", false;
    for (const json& t : v["tags"])
      if (t != "red" && t != "green" && t != "blue") return *why = "a tag", false;
    return true;
  }
  static json Completion(int seed) {
    return {{"model", "brown"}, {"prompt", "A person, as JSON:"}, {"max_tokens", 120}, {"temperature", 0.8},
            {"seed", seed}};
  }
  static HttpClient Client() { return HttpClient(port_); }
};

TEST_F(OpenAiStructuredE2E, JsonSchemaOutputsValidateOnBothEndpoints) {
  HttpClient c = Client();
  const json format = {{"type", "json_schema"},
                       {"json_schema", {{"name", "person"}, {"schema", PersonSchema()}, {"strict", true}}}};
  int stopped = 0, runs = 0;
  for (int seed = 1; seed <= 8; ++seed) {
    const bool chat = seed % 2 == 0;
    json req = Completion(seed);
    if (chat) {
      req.erase("prompt");
      req["messages"] = {{{"role", "user"}, {"content", "Describe a person as JSON."}}};
    }
    req["response_format"] = format;
    auto r = c.Post(chat ? "/v1/chat/completions" : "/v1/completions", req.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json choice = json::parse(r.body)["choices"][0];
    const std::string text = chat ? choice["message"]["content"] : choice["text"];
    ++runs;
    if (choice["finish_reason"] != "stop") {
      EXPECT_EQ(choice["finish_reason"], "length") << text;
      continue;
    }
    ++stopped;
    std::string why;
    EXPECT_TRUE(IsPerson(text, &why)) << why << ": " << text;
    // At most one space between tokens, no newlines.
    EXPECT_EQ(text.find("  "), std::string::npos) << text;
    EXPECT_EQ(text.find('\n'), std::string::npos) << text;
  }
  EXPECT_GE(stopped, runs - 2) << "most outputs should be complete within 120 tokens";
}

TEST_F(OpenAiStructuredE2E, JsonObjectRegexChoiceAndGrammar) {
  HttpClient c = Client();
  for (int seed = 1; seed <= 3; ++seed) {
    json req = Completion(seed);
    req["response_format"] = {{"type", "json_object"}};
    auto r = c.Post("/v1/completions", req.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json choice = json::parse(r.body)["choices"][0];
    if (choice["finish_reason"] == "stop") {
      const json v = json::parse(choice["text"].get<std::string>(), nullptr, false);
      EXPECT_TRUE(v.is_object()) << choice["text"];
    }
  }
  const std::regex phone("[0-9]{3}-[0-9]{4}");
  for (int seed = 1; seed <= 3; ++seed) {
    json req = Completion(seed);
    req["guided_regex"] = "[0-9]{3}-[0-9]{4}";
    auto r = c.Post("/v1/completions", req.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json choice = json::parse(r.body)["choices"][0];
    EXPECT_TRUE(std::regex_match(choice["text"].get<std::string>(), phone)) << choice["text"];
    EXPECT_EQ(choice["finish_reason"], "stop");  // nothing can follow: it ends there
  }
  // Regex metacharacters in the choices are literal; n = 4 samples several.
  const std::vector<std::string> choices = {"yes", "no", "maybe (later)", "a.b*"};
  json req = Completion(4);
  req["guided_choice"] = choices;
  req["n"] = 4;
  req["temperature"] = 1.5;
  auto r = c.Post("/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  for (const json& choice : json::parse(r.body)["choices"]) {
    EXPECT_NE(std::find(choices.begin(), choices.end(), choice["text"].get<std::string>()), choices.end())
        << choice["text"];
    EXPECT_EQ(choice["finish_reason"], "stop");
  }
  json chat = Chat(false);
  chat["max_tokens"] = 20;
  chat["guided_grammar"] = R"(root ::= ("up" | "down") " " [0-9])";
  auto g = c.Post("/v1/chat/completions", chat.dump());
  ASSERT_EQ(g.status, 200) << g.body;
  const json gc = json::parse(g.body)["choices"][0];
  EXPECT_TRUE(std::regex_match(gc["message"]["content"].get<std::string>(), std::regex("(up|down) [0-9]")))
      << gc["message"]["content"];
}

// A streamed constrained chat adds up to the unary answer of the same seed, and validates.
TEST_F(OpenAiStructuredE2E, StreamingWithAConstraint) {
  HttpClient c = Client();
  json req = Chat(false);
  req["max_tokens"] = 120;
  req["temperature"] = 0.8;
  req["seed"] = 3;
  req["guided_json"] = PersonSchema();
  const json whole = json::parse(c.Post("/v1/chat/completions", req.dump()).body);
  req["stream"] = true;
  auto r = c.Post("/v1/chat/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const auto events = SseData(r.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string content, finish;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    const json& delta = e["choices"][0]["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(content, whole["choices"][0]["message"]["content"]);
  EXPECT_EQ(finish, whole["choices"][0]["finish_reason"]);
  if (finish == "stop") {
    std::string why;
    EXPECT_TRUE(IsPerson(content, &why)) << why << ": " << content;
  }
}

// max_tokens still applies: the output is cut there (finish_reason "length"), incomplete JSON.
TEST_F(OpenAiStructuredE2E, MaxTokensCutsAConstrainedOutput) {
  HttpClient c = Client();
  json req = Completion(1);
  req["max_tokens"] = 3;
  req["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"name", "person"}, {"schema", PersonSchema()}}}};
  auto r = c.Post("/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json b = json::parse(r.body);
  EXPECT_EQ(b["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(b["usage"]["completion_tokens"], 3);
  EXPECT_EQ(b["choices"][0]["text"].get<std::string>().rfind("{", 0), 0u) << b["choices"][0]["text"];
  EXPECT_TRUE(json::parse(b["choices"][0]["text"].get<std::string>(), nullptr, false).is_discarded());
}

TEST_F(OpenAiStructuredE2E, RefusalsNameTheFieldAndTheKeyword) {
  HttpClient c = Client();
  auto expect_error = [&](const char* route, const json& body, const std::vector<std::string>& needles) {
    auto r = c.Post(route, body.dump());
    EXPECT_EQ(r.status, 400) << r.body;
    const json e = json::parse(r.body, nullptr, false);
    EXPECT_EQ(e["error"]["type"], "invalid_request_error") << r.body;
    for (const std::string& n : needles) EXPECT_NE(r.body.find(n), std::string::npos) << n << " not in " << r.body;
  };
  json unique = Completion(1);
  unique["response_format"] = {
      {"type", "json_schema"},
      {"json_schema", {{"name", "s"}, {"schema", {{"type", "array"}, {"uniqueItems", true}}}, {"strict", true}}}};
  expect_error("/v1/completions", unique, {"response_format.json_schema.schema", "uniqueItems"});
  json guided = Chat(false);
  guided["guided_json"] = {{"type", "string"}, {"pattern", "^(?=a)"}};
  expect_error("/v1/chat/completions", guided, {"guided_json", "pattern"});
  json bad_regex = Completion(1);
  bad_regex["guided_regex"] = "(a";
  expect_error("/v1/completions", bad_regex, {"guided_regex"});
  json bad_grammar = Chat(false);
  bad_grammar["guided_grammar"] = "start ::= \"a\"";
  expect_error("/v1/chat/completions", bad_grammar, {"guided_grammar", "root"});
  json two = Completion(1);
  two["response_format"] = {{"type", "json_object"}};
  two["guided_choice"] = {"a", "b"};
  expect_error("/v1/completions", two, {"guided_choice", "response_format", "one output constraint per request"});
  json no_name = Chat(false);
  no_name["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"schema", PersonSchema()}}}};
  expect_error("/v1/chat/completions", no_name, {"response_format.json_schema.name"});
}

// gRPC's constraint oneof (json_schema / regex / grammar / json_object) goes through the same front
// door: the same seed gives the same text as over HTTP; refusals are INVALID_ARGUMENT naming the
// field (and the keyword).
TEST_F(OpenAiStructuredE2E, GrpcConstraintOneofAgreesWithHttp) {
  auto request = [](int seed) {
    v1::GenerateRequest r;
    r.set_text("A person, as JSON:");
    r.set_max_new_tokens(120);
    r.mutable_sampling()->set_temperature(0.8f);
    r.mutable_sampling()->set_seed(seed);
    return r;
  };
  // Under a sanitizer no glad starts (SetUp skips); saying so here keeps GCC from warning about the
  // null path it can see in that build.
  ASSERT_NE(glad_, nullptr);
  auto stub = glad_->stub();
  v1::GenerateRequest regex = request(2);
  regex.set_regex("[0-9]{3}-[0-9]{4}");
  grpc::ClientContext rctx;
  v1::GenerateResponse rresp;
  ASSERT_TRUE(stub->Generate(&rctx, regex, &rresp).ok());
  EXPECT_TRUE(std::regex_match(rresp.text(), std::regex("[0-9]{3}-[0-9]{4}"))) << rresp.text();
  EXPECT_EQ(rresp.finish_reason(), v1::FINISH_REASON_STOP);
  json http = Completion(2);
  http["guided_regex"] = "[0-9]{3}-[0-9]{4}";
  EXPECT_EQ(json::parse(Client().Post("/v1/completions", http.dump()).body)["choices"][0]["text"], rresp.text());

  // A JSON Schema, streamed; over HTTP as response_format, the same text.
  int stopped = 0;
  for (int seed = 1; seed <= 4; ++seed) {
    v1::GenerateRequest schema = request(seed);
    schema.set_json_schema(PersonSchema().dump());
    grpc::ClientContext sctx;
    auto reader = stub->GenerateStream(&sctx, schema);
    v1::GenerateStreamResponse m;
    std::string text;
    v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
    while (reader->Read(&m)) {
      text += m.text();
      if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) finish = m.finish_reason();
    }
    ASSERT_TRUE(reader->Finish().ok());
    // Complete: EOS sampled where the text may end, or nothing could follow (STOP).
    if (finish == v1::FINISH_REASON_STOP || finish == v1::FINISH_REASON_EOS) {
      ++stopped;
      std::string why;
      EXPECT_TRUE(IsPerson(text, &why)) << why << ": " << text;
    }
    json h = Completion(seed);
    h["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"name", "person"}, {"schema", PersonSchema()}}}};
    EXPECT_EQ(json::parse(Client().Post("/v1/completions", h.dump()).body)["choices"][0]["text"], text);
  }
  EXPECT_GE(stopped, 3);

  v1::GenerateRequest grammar = request(1);
  grammar.set_grammar(R"(root ::= ("up" | "down") " " [0-9])");
  grpc::ClientContext gctx;
  v1::GenerateResponse gresp;
  ASSERT_TRUE(stub->Generate(&gctx, grammar, &gresp).ok());
  EXPECT_TRUE(std::regex_match(gresp.text(), std::regex("(up|down) [0-9]"))) << gresp.text();

  v1::GenerateRequest object = request(1);
  object.set_json_object(true);
  grpc::ClientContext octx;
  v1::GenerateResponse oresp;
  ASSERT_TRUE(stub->Generate(&octx, object, &oresp).ok());
  if (oresp.finish_reason() != v1::FINISH_REASON_LENGTH) {
    EXPECT_TRUE(json::parse(oresp.text(), nullptr, false).is_object()) << oresp.text();
  }

  auto refused = [&](v1::GenerateRequest r, const std::vector<std::string>& needles) {
    grpc::ClientContext ctx;
    v1::GenerateResponse resp;
    const grpc::Status st = stub->Generate(&ctx, r, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    for (const std::string& n : needles) EXPECT_NE(st.error_message().find(n), std::string::npos) << st.error_message();
  };
  v1::GenerateRequest unique = request(1);
  unique.set_json_schema(R"({"type": "array", "uniqueItems": true})");
  refused(unique, {"json_schema: ", "uniqueItems"});
  v1::GenerateRequest not_json = request(1);
  not_json.set_json_schema("{");
  refused(not_json, {"json_schema: ", "not valid JSON"});
  v1::GenerateRequest bad_regex = request(1);
  bad_regex.set_regex("(a");
  refused(bad_regex, {"regex: "});
  v1::GenerateRequest bad_grammar = request(1);
  bad_grammar.set_grammar("start ::= \"a\"");
  refused(bad_grammar, {"grammar: ", "root"});
}

}  // namespace
}  // namespace gla
