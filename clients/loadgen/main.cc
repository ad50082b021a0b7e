// gla-loadgen: sweeps concurrency against a running glad with streaming requests and reports
// requests/s, generated tokens/s, time to first token and inter-token latency percentiles.
//
//   gla-loadgen --addr HOST:PORT [--concurrency 1,8,64] [--requests 64] [--prompt-len 128]
//               [--max-new-tokens 64] [--seed 1] [--finetune none|lora]
//               [--finetune-batch 1] [--finetune-seq-len 64] [--system-prompt-len 0] [--json-schema FILE]
//   gla-loadgen conversation --addr HOST:PORT [--conversations 1,8] [--turns 5] [--turn-len 200]
//               [--max-new-tokens 64] [--seed 1] [--rounds 5]
//
// --system-prompt-len N puts one shared N-token prefix (a system prompt) before every request's
// own prompt-len tokens: run it against glad with and without its prefix-state cache
// (--prefix_cache_mb 0) to see what the cache saves.
//
// `conversation` runs conversations of --turns turns (each turn: turn-len new prompt tokens, then
// max-new-tokens generated), all conversations at once, twice: resending the whole history every
// turn (what a stateless server needs), then through a session (each turn sends only its new
// tokens). It prints the median time to first token of every turn for both: the resent prompt
// grows with the conversation, the session's does not. Run it against glad --prefix_cache_mb 0 to
// compare sessions with plain resending (the prefix cache also shortens resent histories: a
// conversation's earlier prompt is a prefix of its next).
//
// Each level runs `requests` streams (at least one per worker) with random token-id prompts and
// ignore_eos, so every request generates exactly max-new-tokens tokens. With --finetune lora each
// level runs twice: alone, then while a LoRA fine-tune job trains on the server (created before
// the level through gla.v1.FineTune with random token documents, cancelled after it; the server
// needs --adapter_dir; --finetune-batch windows of --finetune-seq-len tokens a step), reporting the training steps and tokens/s the job made meanwhile: what
// serving costs while a job shares the device, and what the job gets. With --json-schema FILE
// every request carries that schema as its constraint (gRPC `constraint.json_schema`; over HTTP,
// `response_format` json_schema): what structured output costs a step. A constrained output may
// end before max-new-tokens (a complete text that nothing can continue ends there), so compare
// tokens/s, not requests/s.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "clients/common/args.h"
#include "clients/common/usage.h"
#include "clients/loadgen/http_stream.h"
#include "gla/v1/gla.grpc.pb.h"
#include "models/status_macros.h"
#include "nlohmann/json.hpp"

namespace gla {
namespace {

using Clock = std::chrono::steady_clock;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

struct LevelResult {
  int ok = 0, failed = 0;  // ok: finished by length/eos/stop; failed: an error or finish_reason CANCELLED
  int64_t tokens = 0;
  double seconds = 0;
  std::vector<double> ttft, itl;
  std::string first_error;
};

// One streaming request: its tokens, time to first token and inter-token gaps.
struct Streamed {
  grpc::Status status;
  bool cancelled = false;
  std::vector<int32_t> ids;
  std::vector<double> ttft, itl;
};

Streamed StreamOne(v1::Gla::Stub& stub, const v1::GenerateRequest& req) {
  Streamed out;
  grpc::ClientContext ctx;
  const auto t0 = Clock::now();
  auto reader = stub.GenerateStream(&ctx, req);
  v1::GenerateStreamResponse m;
  auto last = t0;
  while (reader->Read(&m)) {
    out.cancelled = out.cancelled || m.finish_reason() == v1::FINISH_REASON_CANCELLED;
    if (m.token_ids_size() == 0) continue;
    const auto now = Clock::now();
    const double dt = std::chrono::duration<double>(now - last).count();
    if (out.ids.empty()) out.ttft.push_back(dt);
    else for (int k = 0; k < m.token_ids_size(); ++k) out.itl.push_back(dt / m.token_ids_size());
    out.ids.insert(out.ids.end(), m.token_ids().begin(), m.token_ids().end());
    last = now;
  }
  out.status = reader->Finish();
  return out;
}

// Where the requests go: gRPC GenerateStream, or (http_port > 0) the OpenAI HTTP API's streamed
// /v1/completions with the same prompt ids, greedy, EOS ignored (what --http measures).
struct HttpTarget {
  std::string host;
  int port = 0;
  std::string model;
};

// What every request of a level carries besides its prompt.
struct RequestShape {
  std::string json_schema;  // a JSON Schema's text, or empty: no constraint
};

LevelResult RunLevel(v1::Gla::Stub& stub, int concurrency, int requests, int prompt_len, int max_new, int vocab,
                     uint64_t seed, const std::vector<int32_t>& system_prompt, const RequestShape& shape,
                     const HttpTarget& http = {}) {
  LevelResult r;
  std::mutex mu;
  std::atomic<int> next{0};
  const int total = std::max(requests, concurrency);
  const auto start = Clock::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&, w] {
      std::mt19937_64 rng(seed * 1000003 + w);
      std::unique_ptr<HttpStreamClient> client;
      if (http.port > 0) client = std::make_unique<HttpStreamClient>(http.host, http.port);
      // One request's outcome, whichever protocol carried it, into the level's totals.
      auto record = [&](const std::string& error, int64_t tokens, const std::vector<double>& ttft,
                        const std::vector<double>& itl) {
        std::lock_guard<std::mutex> lock(mu);
        if (error.empty()) {
          ++r.ok;
          r.tokens += tokens;
          r.ttft.insert(r.ttft.end(), ttft.begin(), ttft.end());
          r.itl.insert(r.itl.end(), itl.begin(), itl.end());
        } else {
          ++r.failed;
          if (r.first_error.empty()) r.first_error = error;
        }
      };
      for (int i = next++; i < total; i = next++) {
        std::vector<int32_t> prompt = system_prompt;
        for (int t = 0; t < prompt_len; ++t) prompt.push_back(static_cast<int32_t>(rng() % vocab));
        if (client != nullptr) {
          nlohmann::json body = {{"model", http.model}, {"prompt", prompt},     {"max_tokens", max_new},
                                 {"temperature", 0},    {"ignore_eos", true}, {"stream", true},
                                 {"return_token_ids", true}};
          if (!shape.json_schema.empty())
            body["response_format"] = {{"type", "json_schema"},
                                       {"json_schema", {{"name", "loadgen"}, {"strict", true},
                                                        {"schema", nlohmann::json::parse(shape.json_schema)}}}};
          const HttpStreamed one = client->Stream("/v1/completions", body.dump());
          record(one.error, one.tokens, one.ttft, one.itl);
          continue;
        }
        v1::GenerateRequest req;
        req.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
        req.set_max_new_tokens(max_new);
        req.set_ignore_eos(true);
        if (!shape.json_schema.empty()) req.set_json_schema(shape.json_schema);
        const Streamed one = StreamOne(stub, req);
        const std::string error = one.status.ok() && !one.cancelled ? ""
                                  : one.status.ok()                ? "cancelled by the server (shutting down?)"
                                                                   : one.status.error_message();
        record(error, static_cast<int64_t>(one.ids.size()), one.ttft, one.itl);
      }
    });
  }
  for (auto& t : workers) t.join();
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return r;
}

// A LoRA job that outlasts a level: random token documents, many steps; started before the level
// (once RUNNING), cancelled after it. Progress is read before and after to count its steps.
class BackgroundJob {
 public:
  static absl::StatusOr<BackgroundJob> Start(v1::FineTune::Stub* stub, int vocab, int level, uint64_t seed, int batch,
                                             int sequence_length) {
    v1::CreateFineTuneJobRequest req;
    req.set_adapter_name(absl::StrCat("loadgen-", level, "-", std::chrono::system_clock::now().time_since_epoch().count()));
    req.set_method(v1::FINE_TUNE_METHOD_LORA);
    req.mutable_hyperparameters()->set_max_steps(1000000);
    req.mutable_hyperparameters()->set_batch_sequences(batch);
    req.mutable_hyperparameters()->set_sequence_length(sequence_length);
    std::mt19937_64 rng(seed);
    for (int d = 0; d < std::max(16, 2 * batch); ++d) {  // at least two batches of full windows
      auto* ids = req.mutable_token_sequences()->add_sequences();
      for (int t = 0; t <= sequence_length; ++t) ids->add_ids(static_cast<int32_t>(rng() % vocab));
    }
    BackgroundJob job;
    job.stub_ = stub;
    v1::FineTuneJob j;
    grpc::ClientContext ctx;
    const grpc::Status st = stub->CreateFineTuneJob(&ctx, req, &j);
    if (!st.ok()) return absl::FailedPreconditionError(absl::StrCat("CreateFineTuneJob: ", st.error_message()));
    job.id_ = j.id();
    for (int i = 0; i < 600; ++i) {  // until it runs and has made a step (up to a minute)
      ASSIGN_OR_RETURN(j, job.Get());
      if (j.state() == v1::FINE_TUNE_JOB_STATE_RUNNING && j.progress().step() > 0) break;
      if (j.state() > v1::FINE_TUNE_JOB_STATE_RUNNING)
        return absl::InternalError(absl::StrCat("fine-tune job ended before the level: ", j.error()));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    job.start_step_ = j.progress().step();
    job.start_time_ = Clock::now();
    return job;
  }
  absl::StatusOr<v1::FineTuneJob> Get() const {
    v1::GetFineTuneJobRequest req;
    req.set_job_id(id_);
    v1::FineTuneJob j;
    grpc::ClientContext ctx;
    const grpc::Status st = stub_->GetFineTuneJob(&ctx, req, &j);
    if (!st.ok()) return absl::UnavailableError(absl::StrCat("GetFineTuneJob: ", st.error_message()));
    return j;
  }
  // Steps made since Start, their rate, and the job's own training tokens/s; then cancels it.
  absl::StatusOr<std::string> StopAndReport(int tokens_per_step) {
    ASSIGN_OR_RETURN(v1::FineTuneJob j, Get());
    const double s = std::chrono::duration<double>(Clock::now() - start_time_).count();
    const int64_t steps = j.progress().step() - start_step_;
    v1::CancelFineTuneJobRequest req;
    req.set_job_id(id_);
    grpc::ClientContext ctx;
    v1::FineTuneJob ignored;
    stub_->CancelFineTuneJob(&ctx, req, &ignored);
    for (int i = 0; i < 600; ++i) {  // wait for it to stop, so the next level starts alone
      ASSIGN_OR_RETURN(j, Get());
      if (j.state() > v1::FINE_TUNE_JOB_STATE_RUNNING) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return absl::StrCat(steps, " steps, ", static_cast<int64_t>(steps * tokens_per_step / s), " training tok/s");
  }

 private:
  v1::FineTune::Stub* stub_ = nullptr;
  std::string id_;
  int64_t start_step_ = 0;
  Clock::time_point start_time_;
};

void PrintLevel(int c, const LevelResult& r, const std::string& job) {
  std::printf("| %d | %s | %d | %d | %d | %.2f | %.2f | %.1f | %.1f | %.1f | %.2f | %.2f |\n", c, job.c_str(),
              r.ok + r.failed, r.ok, r.failed, r.seconds, r.ok / r.seconds, r.tokens / r.seconds,
              1e3 * Percentile(r.ttft, 0.5), 1e3 * Percentile(r.ttft, 0.99), 1e3 * Percentile(r.itl, 0.5),
              1e3 * Percentile(r.itl, 0.99));
  if (!r.first_error.empty()) std::printf("  first error: %s\n", r.first_error.c_str());
  std::fflush(stdout);
}

// Conversations of `turns` turns, all at once; per turn, the TTFT of every conversation.
absl::StatusOr<std::vector<std::vector<double>>> RunConversations(v1::Gla::Stub& stub, bool use_session, int conversations,
                                                                  int turns, int turn_len, int max_new, int vocab,
                                                                  uint64_t seed) {
  std::vector<std::vector<double>> ttft(turns);
  std::mutex mu;
  std::string first_error;
  std::vector<std::thread> workers;
  for (int c = 0; c < conversations; ++c) {
    workers.emplace_back([&, c] {
      std::mt19937_64 rng(seed * 7919 + c);
      std::string session;
      if (use_session) {
        grpc::ClientContext ctx;
        v1::CreateSessionRequest req;
        v1::Session s;
        const grpc::Status st = stub.CreateSession(&ctx, req, &s);
        if (!st.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          if (first_error.empty()) first_error = "CreateSession: " + st.error_message();
          return;
        }
        session = s.session_id();
      }
      std::vector<int32_t> history;
      for (int t = 0; t < turns; ++t) {
        std::vector<int32_t> turn;
        for (int i = 0; i < turn_len; ++i) turn.push_back(static_cast<int32_t>(rng() % vocab));
        v1::GenerateRequest req;
        if (use_session) {
          req.set_session(session);
          req.mutable_token_ids()->mutable_ids()->Add(turn.begin(), turn.end());
        } else {
          req.mutable_token_ids()->mutable_ids()->Add(history.begin(), history.end());
          req.mutable_token_ids()->mutable_ids()->Add(turn.begin(), turn.end());
        }
        req.set_max_new_tokens(max_new);
        req.set_ignore_eos(true);
        const Streamed one = StreamOne(stub, req);
        std::lock_guard<std::mutex> lock(mu);
        if (!one.status.ok() || one.ttft.empty()) {
          if (first_error.empty()) first_error = one.status.ok() ? "no tokens" : one.status.error_message();
          return;
        }
        ttft[t].push_back(one.ttft[0]);
        history.insert(history.end(), turn.begin(), turn.end());
        history.insert(history.end(), one.ids.begin(), one.ids.end());
      }
      if (use_session) {
        grpc::ClientContext ctx;
        v1::DeleteSessionRequest req;
        req.set_session_id(session);
        v1::DeleteSessionResponse resp;
        stub.DeleteSession(&ctx, req, &resp);
      }
    });
  }
  for (auto& w : workers) w.join();
  if (!first_error.empty()) return absl::InternalError(first_error);
  return ttft;
}

absl::Status Conversation(const ParsedArgs& a, v1::Gla::Stub& stub, const v1::ModelInfoResponse& info) {
  ASSIGN_OR_RETURN(int turns, a.Int("turns", 5, 1));
  ASSIGN_OR_RETURN(int turn_len, a.Int("turn-len", 200, 1));
  ASSIGN_OR_RETURN(int max_new, a.Int("max-new-tokens", 64, 1));
  ASSIGN_OR_RETURN(int seed, a.Int("seed", 1, 0));
  ASSIGN_OR_RETURN(int rounds, a.Int("rounds", 5, 1));
  ASSIGN_OR_RETURN(std::vector<int32_t> levels, ParseIdList(a.Has("conversations") ? a.flags.at("conversations") : "1,8"));
  std::printf("server: %s backend=%s device=\"%s\"  %d turns of %d new prompt tokens + %d generated; %d rounds "
              "of each way per level\n",
              info.model_dir().c_str(), info.backend().c_str(), info.device().c_str(), turns, turn_len, max_new, rounds);
  std::printf("| conversations | turn | prompt tokens prefilled: resend / session | TTFT p50 ms: resend | TTFT p50 ms: session | ratio |\n");
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  const int vocab = info.config().vocab_size();
  // Warm-up, not measured: the first requests of a fresh server pay for CUDA graph capture and
  // first-touch allocations.
  for (bool use_session : {false, true})
    RETURN_IF_ERROR(RunConversations(stub, use_session, 2, 2, turn_len, max_new, vocab, seed + 77).status());
  for (int c : levels) {
    if (c < 1) return absl::InvalidArgumentError("--conversations levels must be >= 1");
    // Rounds alternate between the two ways, so drift (clocks, other load) hits both alike. The
    // session rounds use other tokens (same lengths): the server's prefix cache, if on, must not
    // serve them states the resend rounds left behind.
    std::vector<std::vector<double>> resend(turns), session(turns);
    for (int round = 0; round < rounds; ++round) {
      const uint64_t s = seed + 1000 * static_cast<uint64_t>(round);
      ASSIGN_OR_RETURN(auto r, RunConversations(stub, false, c, turns, turn_len, max_new, vocab, s));
      ASSIGN_OR_RETURN(auto q, RunConversations(stub, true, c, turns, turn_len, max_new, vocab, s + 1000003));
      for (int t = 0; t < turns; ++t) {
        resend[t].insert(resend[t].end(), r[t].begin(), r[t].end());
        session[t].insert(session[t].end(), q[t].begin(), q[t].end());
      }
    }
    for (int t = 0; t < turns; ++t) {
      const double r = 1e3 * Percentile(resend[t], 0.5), s = 1e3 * Percentile(session[t], 0.5);
      std::printf("| %d | %d | %d / %d | %.1f | %.1f | %.2fx |\n", c, t + 1, t * (turn_len + max_new) + turn_len,
                  turn_len + (t > 0 ? 1 : 0), r, s, r / s);
    }
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

absl::Status Main(const ParsedArgs& a) {
  ASSIGN_OR_RETURN(std::string addr, a.Required("addr"));
  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  auto stub = v1::Gla::NewStub(channel);
  v1::ModelInfoResponse info;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status st = stub->ModelInfo(&ctx, {}, &info);
    if (!st.ok()) return absl::UnavailableError(absl::StrCat(addr, ": ", st.error_message()));
  }
  if (a.command == "conversation") return Conversation(a, *stub, info);
  ASSIGN_OR_RETURN(int requests, a.Int("requests", 64, 1));
  ASSIGN_OR_RETURN(int prompt_len, a.Int("prompt-len", 128, 1));
  ASSIGN_OR_RETURN(int system_len, a.Int("system-prompt-len", 0, 0));
  ASSIGN_OR_RETURN(int max_new, a.Int("max-new-tokens", 64, 1));
  ASSIGN_OR_RETURN(int seed, a.Int("seed", 1, 0));
  ASSIGN_OR_RETURN(std::vector<int32_t> levels, ParseIdList(a.Has("concurrency") ? a.flags.at("concurrency") : "1,8,64"));
  const std::string finetune = a.Has("finetune") ? a.flags.at("finetune") : "none";
  ASSIGN_OR_RETURN(const int ft_batch, a.Int("finetune-batch", 1, 1));
  ASSIGN_OR_RETURN(const int ft_seq_len, a.Int("finetune-seq-len", 64, 1));
  if (finetune != "none" && finetune != "lora")
    return absl::InvalidArgumentError(absl::StrCat("--finetune ", finetune, ": none or lora"));
  auto ft_stub = v1::FineTune::NewStub(channel);
  std::printf("server: %s backend=%s device=\"%s\" slots=%u  prompt %d tokens (+ a shared %d-token prefix), %d new "
              "tokens per request\n",
              info.model_dir().c_str(), info.backend().c_str(), info.device().c_str(), info.slots(), prompt_len,
              system_len, max_new);
  const int vocab = info.config().vocab_size();
  HttpTarget http;
  if (a.Has("http")) {  // the same load through the OpenAI HTTP API (ModelInfo above came over gRPC)
    const std::string hp = a.flags.at("http");
    const size_t colon = hp.rfind(':');
    if (colon == std::string::npos || !absl::SimpleAtoi(hp.substr(colon + 1), &http.port) || http.port <= 0)
      return absl::InvalidArgumentError(absl::StrCat("--http ", hp, ": want HOST:PORT"));
    http.host = hp.substr(0, colon);
    const auto models = nlohmann::json::parse(HttpStreamClient(http.host, http.port).Get("/v1/models"), nullptr, false);
    if (!models.is_object() || !models.contains("data") || models["data"].empty())
      return absl::UnavailableError(absl::StrCat("--http ", hp, ": GET /v1/models did not answer"));
    http.model = models["data"][0]["id"].get<std::string>();
    std::printf("requests over HTTP: POST http://%s/v1/completions (model \"%s\", streamed)\n", hp.c_str(),
                http.model.c_str());
  }
  RequestShape shape;
  if (a.Has("json-schema")) {
    const std::string path = a.flags.at("json-schema");
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    if (!in.good() && !in.eof()) return absl::InvalidArgumentError(absl::StrCat("--json-schema ", path, ": cannot read"));
    shape.json_schema = text.str();
    if (!nlohmann::json::accept(shape.json_schema))
      return absl::InvalidArgumentError(absl::StrCat("--json-schema ", path, ": not JSON"));
    std::printf("every request constrained by the JSON Schema in %s\n", path.c_str());
  }
  std::vector<int32_t> system_prompt;
  std::mt19937_64 sys_rng(seed + 17);
  for (int t = 0; t < system_len; ++t) system_prompt.push_back(static_cast<int32_t>(sys_rng() % vocab));
  std::printf("| concurrency | fine-tune job | requests | ok | failed | seconds | requests/s | tokens/s | TTFT p50 ms | "
              "TTFT p99 ms | ITL p50 ms | ITL p99 ms |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (int c : levels) {
    if (c < 1) return absl::InvalidArgumentError("--concurrency levels must be >= 1");
    PrintLevel(c, RunLevel(*stub, c, requests, prompt_len, max_new, vocab, seed, system_prompt, shape, http), "none");
    if (finetune == "lora") {
      ASSIGN_OR_RETURN(BackgroundJob job, BackgroundJob::Start(ft_stub.get(), vocab, c, seed, ft_batch, ft_seq_len));
      const LevelResult r = RunLevel(*stub, c, requests, prompt_len, max_new, vocab, seed, system_prompt, shape);
      ASSIGN_OR_RETURN(std::string made, job.StopAndReport(ft_batch * ft_seq_len));
      PrintLevel(c, r, absl::StrCat("LoRA running: ", made));
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace gla

int main(int argc, char** argv) {
  const gla::FlagSpec addr = {"addr", "HOST:PORT", "glad's address (plaintext)", ""};
  const gla::FlagSpec max_new = {"max-new-tokens", "N", "tokens generated per request (EOS ignored)", "64"};
  const gla::FlagSpec seed = {"seed", "S", "seed of the random prompts", "1"};
  // The command word is optional: `gla-loadgen --addr ...` reads as `gla-loadgen sweep --addr ...`.
  const gla::ProgramSpec program = {
      "gla-loadgen",
      "load a running glad with streaming requests; report throughput and latency percentiles",
      {{"sweep",
        "requests at each concurrency level: requests/s, tokens/s, time to first token, inter-token latency",
        {addr,
         {"concurrency", "LIST", "comma-separated concurrency levels", "1,8,64"},
         {"requests", "N", "requests per level (at least one per worker)", "64"},
         {"prompt-len", "N", "random prompt tokens per request", "128"},
         max_new,
         seed,
         {"system-prompt-len", "N", "a shared prefix of N tokens before every prompt", "0"},
         {"finetune", "none|lora", "lora: run each level again while a LoRA job trains on glad", "none"},
         {"finetune-batch", "B", "that job's sequences per step", "1"},
         {"finetune-seq-len", "L", "that job's tokens per sequence", "64"},
         {"http", "HOST:PORT", "send the requests to glad's OpenAI HTTP API there (streamed /v1/completions) instead of gRPC",
          ""},
         {"json-schema", "FILE", "constrain every request's output by this JSON Schema (structured output's cost)", ""}}},
       {"conversation",
        "conversations resent whole each turn vs through a session: median time to first token per turn",
        {addr,
         {"conversations", "LIST", "comma-separated numbers of simultaneous conversations", "1,8"},
         {"turns", "N", "turns per conversation", "5"},
         {"turn-len", "N", "new prompt tokens per turn", "200"},
         max_new,
         seed,
         {"rounds", "N", "rounds of each way per level (they alternate)", "5"}}}},
      "sweep"};
  int exit_code = 0;
  const std::optional<gla::ParsedArgs> parsed = gla::ParseCommandLine(program, argc, argv, &exit_code);
  if (!parsed) return exit_code;
  const absl::Status st = gla::Main(*parsed);
  if (!st.ok()) {
    std::fprintf(stderr, "gla-loadgen: error: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
