// Running requests through a Scheduler in tests: submit and collect everything a request produced,
// and call the scheduler's session functions synchronously.
#pragma once

#include <future>
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
};

// Submits and returns a future that completes with everything the request produced.
inline std::future<Collected> SubmitCollect(Scheduler& s, GenerationSpec spec, absl::Status* submit_status = nullptr,
                                            std::shared_ptr<RequestHandle>* handle = nullptr) {
  auto promise = std::make_shared<std::promise<Collected>>();
  auto acc = std::make_shared<Collected>();
  auto h = s.Submit(std::move(spec), [promise, acc](GenerationUpdate&& u) {
    acc->tokens.insert(acc->tokens.end(), u.tokens.begin(), u.tokens.end());
    acc->text += u.text;
    ++acc->updates;
    if (u.finished) {
      acc->reason = u.reason;
      acc->status = u.status;
      acc->usage = u.usage;
      promise->set_value(*acc);
    }
  });
  if (submit_status) *submit_status = h.status();
  if (handle && h.ok()) *handle = *h;
  if (!h.ok()) promise->set_value(Collected{});
  return promise->get_future();
}

inline absl::StatusOr<SessionInfo> CreateSession(Scheduler& s, std::string id = "", int64_t ttl_s = -1) {
  std::promise<absl::StatusOr<SessionInfo>> p;
  s.CreateSession(std::move(id), ttl_s, [&p](absl::StatusOr<SessionInfo> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

inline absl::StatusOr<SessionInfo> ForkSession(Scheduler& s, std::string source, std::string id = "", int64_t ttl_s = -1) {
  std::promise<absl::StatusOr<SessionInfo>> p;
  s.ForkSession(std::move(source), std::move(id), ttl_s, [&p](absl::StatusOr<SessionInfo> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

inline absl::Status DeleteSession(Scheduler& s, std::string id) {
  std::promise<absl::Status> p;
  s.DeleteSession(std::move(id), [&p](absl::Status r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

inline std::vector<SessionInfo> ListSessions(Scheduler& s) {
  std::promise<absl::StatusOr<std::vector<SessionInfo>>> p;
  s.ListSessions([&p](absl::StatusOr<std::vector<SessionInfo>> r) { p.set_value(std::move(r)); });
  auto r = p.get_future().get();
  return r.ok() ? *r : std::vector<SessionInfo>{};
}

}  // namespace gla::testing
