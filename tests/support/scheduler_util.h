// Running requests through a Scheduler (or an EngineSet, which has its interface) in tests: submit
// and collect everything a request produced, and call the session functions synchronously.
#pragma once

#include <future>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/scheduler.h"

namespace gla::testing {

struct Collected {
  std::vector<int32_t> tokens;
  std::string text;
  FinishReason reason = FinishReason::kNone;
  absl::Status status;
  Usage usage;
  int updates = 0;
  std::vector<SampledToken> prompt_logprobs;
  std::vector<SampledToken> logprobs;  // of the generated tokens, when asked for
};

// The sink that fills `acc` and completes `promise` on the last update.
inline UpdateSink CollectInto(std::shared_ptr<std::promise<Collected>> promise, std::shared_ptr<Collected> acc) {
  return [promise, acc](GenerationUpdate&& u) {
    acc->tokens.insert(acc->tokens.end(), u.tokens.begin(), u.tokens.end());
    acc->text += u.text;
    acc->prompt_logprobs.insert(acc->prompt_logprobs.end(), u.prompt_logprobs.begin(), u.prompt_logprobs.end());
    acc->logprobs.insert(acc->logprobs.end(), u.logprobs.begin(), u.logprobs.end());
    ++acc->updates;
    if (u.finished) {
      acc->reason = u.reason;
      acc->status = u.status;
      acc->usage = u.usage;
      promise->set_value(*acc);
    }
  };
}

// Submits and returns a future that completes with everything the request produced.
template <typename Engine>  // a Scheduler, or an EngineSet
inline std::future<Collected> SubmitCollect(Engine& s, GenerationSpec spec, absl::Status* submit_status = nullptr,
                                            std::shared_ptr<RequestHandle>* handle = nullptr) {
  auto promise = std::make_shared<std::promise<Collected>>();
  auto h = s.Submit(std::move(spec), CollectInto(promise, std::make_shared<Collected>()));
  if (submit_status) *submit_status = h.status();
  if (handle && h.ok()) *handle = *h;
  if (!h.ok()) promise->set_value(Collected{});
  return promise->get_future();
}

// SubmitGroup, collecting each generation; on a refusal, *submit_status says why and no future is returned.
template <typename Engine>  // a Scheduler, or an EngineSet
inline std::vector<std::future<Collected>> SubmitGroupCollect(Engine& s, std::vector<GenerationSpec> specs,
                                                              absl::Status* submit_status = nullptr,
                                                              std::vector<std::shared_ptr<RequestHandle>>* handles = nullptr) {
  std::vector<std::future<Collected>> futures;
  std::vector<UpdateSink> sinks;
  for (size_t i = 0; i < specs.size(); ++i) {
    auto promise = std::make_shared<std::promise<Collected>>();
    futures.push_back(promise->get_future());
    sinks.push_back(CollectInto(promise, std::make_shared<Collected>()));
  }
  auto h = s.SubmitGroup(std::move(specs), std::move(sinks));
  if (submit_status) *submit_status = h.status();
  if (!h.ok()) return {};
  if (handles) *handles = *h;
  return futures;
}

// Token ids of a made-up text: n ids from `seed`, all above the special ids (of a 256+ vocabulary).
inline std::vector<int32_t> Text(int n, int seed) {
  std::vector<int32_t> t;
  for (int j = 0; j < n; ++j) t.push_back((j * 37 + seed * 101 + (j * j) % 13) % 250 + 3);
  return t;
}

// A greedy request of `max_new` tokens that ignores EOS (its length is known), continuing `session`.
inline GenerationSpec Greedy(std::vector<int32_t> prompt, int max_new, std::string session = "") {
  GenerationSpec s;
  s.prompt = std::move(prompt);
  s.max_new_tokens = max_new;
  s.ignore_eos = true;
  s.session = std::move(session);
  return s;
}

inline std::vector<int32_t> Cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

template <typename Engine>  // a Scheduler, or an EngineSet
inline absl::StatusOr<SessionInfo> CreateSession(Engine& s, std::string id = "", int64_t ttl_s = -1) {
  std::promise<absl::StatusOr<SessionInfo>> p;
  s.CreateSession(std::move(id), ttl_s, [&p](absl::StatusOr<SessionInfo> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

template <typename Engine>  // a Scheduler, or an EngineSet
inline absl::StatusOr<SessionInfo> ForkSession(Engine& s, std::string source, std::string id = "", int64_t ttl_s = -1) {
  std::promise<absl::StatusOr<SessionInfo>> p;
  s.ForkSession(std::move(source), std::move(id), ttl_s, [&p](absl::StatusOr<SessionInfo> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

template <typename Engine>  // a Scheduler, or an EngineSet
inline absl::Status DeleteSession(Engine& s, std::string id) {
  std::promise<absl::Status> p;
  s.DeleteSession(std::move(id), [&p](absl::Status r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

template <typename Engine>  // a Scheduler, or an EngineSet
inline absl::StatusOr<std::vector<SessionInfo>> ListSessionsOrError(Engine& s) {
  std::promise<absl::StatusOr<std::vector<SessionInfo>>> p;
  s.ListSessions([&p](absl::StatusOr<std::vector<SessionInfo>> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

template <typename Engine>  // a Scheduler, or an EngineSet
inline std::vector<SessionInfo> ListSessions(Engine& s) {
  auto r = ListSessionsOrError(s);
  return r.ok() ? *r : std::vector<SessionInfo>{};
}

}  // namespace gla::testing
