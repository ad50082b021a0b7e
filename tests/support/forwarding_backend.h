// A Backend that hands every call to another one: tests derive from it to change one call (a device
// that cannot be bound, a step that waits for the test, a step that is watched) and keep the rest.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace gla::testing {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(Backend& inner) : inner_(inner) {}
  explicit ForwardingBackend(std::unique_ptr<Backend> owned) : owned_(std::move(owned)), inner_(*owned_) {}

  std::string name() const override { return inner_.name(); }
  std::string device() const override { return inner_.device(); }
  const GlaConfig& config() const override { return inner_.config(); }
  const Tokenizer* tokenizer() const override { return inner_.tokenizer(); }
  int64_t weight_bytes() const override { return inner_.weight_bytes(); }
  StatePool& pool() override { return inner_.pool(); }
  int64_t state_pool_bytes() const override { return inner_.state_pool_bytes(); }
  int64_t workspace_bytes() const override { return inner_.workspace_bytes(); }
  bool DeviceMemory(int64_t* used, int64_t* total) const override { return inner_.DeviceMemory(used, total); }
  absl::Status BindThread() override { return inner_.BindThread(); }
  bool supports_adapters() const override { return inner_.supports_adapters(); }
  int max_logit_rows() const override { return inner_.max_logit_rows(); }
  WeightFormat weight_format() const override { return inner_.weight_format(); }
  using Backend::Step;
  absl::Status Step(std::span<const StepItem> items, std::vector<SampledToken>* out,
                    const std::function<void()>& before_sampling) override {
    return inner_.Step(items, out, before_sampling);
  }

 protected:
  Backend& inner() { return inner_; }

 private:
  std::unique_ptr<Backend> owned_;  // set when this backend owns the one it forwards to
  Backend& inner_;
};

// Holds its first step until Release(): a test sees the scheduler's first step start
// (WaitForFirstStep), does what must happen while a request is mid-way (a cancel), then lets it go,
// so the order does not depend on how fast the machine runs the steps.
class FirstStepGate : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  using Backend::Step;
  absl::Status Step(std::span<const StepItem> items, std::vector<SampledToken>* out,
                    const std::function<void()>& before_sampling) override {
    {
      std::unique_lock lock(mu_);
      if (!entered_) {
        entered_ = true;
        cv_.notify_all();
        cv_.wait(lock, [&] { return released_; });
      }
    }
    return inner().Step(items, out, before_sampling);
  }
  void WaitForFirstStep() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return entered_; });
  }
  void Release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false, released_ = false;
};

}  // namespace gla::testing
