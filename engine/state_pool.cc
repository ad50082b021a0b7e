#include "engine/state_pool.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace gla {

StatePool::StatePool(int slots, int64_t state_values, StateDType dtype)
    : state_values_(state_values), state_words_(StateWords(state_values, dtype)), dtype_(dtype), used_(slots, false) {
  free_.reserve(slots);
  for (int s = slots - 1; s >= 0; --s) free_.push_back(s);  // slot 0 is handed out first
}

std::optional<int> StatePool::Acquire() {
  if (free_.empty()) return std::nullopt;
  // The most recently freed slot whose state no copy is still reading; else the top one (Zero
  // then orders itself after that copy).
  auto it = std::find_if(free_.rbegin(), free_.rend(), [&](int s) { return !CopyPending(s); });
  const auto pos = it != free_.rend() ? std::prev(it.base()) : std::prev(free_.end());
  const int slot = *pos;
  free_.erase(pos);
  used_[slot] = true;
  if (!Zero(slot).ok()) {  // storage failure: keep the slot out of circulation
    return std::nullopt;
  }
  return slot;
}

void StatePool::Release(int slot) {
  if (slot < 0 || slot >= static_cast<int>(used_.size()) || !used_[slot]) return;  // double release is a no-op
  used_[slot] = false;
  free_.push_back(slot);
}

absl::Status StatePool::CheckSlot(int slot, const char* what) const {
  if (slot < 0 || slot >= capacity()) return absl::OutOfRangeError(absl::StrCat(what, ": slot ", slot, " of ", capacity()));
  return absl::OkStatus();
}

namespace {

// Plain memory: copies are done when they return.
class PlainHostState : public HostState {
 public:
  explicit PlainHostState(std::vector<float> data) : HostState(static_cast<int64_t>(data.size())), data_(std::move(data)) {}
  float* data() override { return data_.data(); }
  bool Ready() override { return true; }
  absl::Status Wait() override { return absl::OkStatus(); }

 private:
  std::vector<float> data_;
};

}  // namespace

HostStatePool::HostStatePool(int slots, int64_t state_values, StateDType dtype)
    : StatePool(slots, state_values, dtype), storage_(static_cast<size_t>(slots) * state_words_, 0.0f) {}

absl::Status HostStatePool::Zero(int slot) {
  if (auto s = CheckSlot(slot, "zero"); !s.ok()) return s;
  std::fill_n(data(slot), state_words_, 0.0f);
  return absl::OkStatus();
}

absl::Status HostStatePool::Copy(int src, int dst) {
  if (auto s = CheckSlot(src, "copy from"); !s.ok()) return s;
  if (auto s = CheckSlot(dst, "copy to"); !s.ok()) return s;
  if (src != dst) std::memcpy(data(dst), data(src), static_cast<size_t>(state_bytes()));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<HostState>> HostStatePool::NewHostState() {
  try {
    return std::unique_ptr<HostState>(new PlainHostState(std::vector<float>(static_cast<size_t>(state_words_), 0.0f)));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("no host memory for a state of ", state_bytes(), " bytes"));
  }
}

absl::Status HostStatePool::SaveToHost(int slot, HostState& dst) {
  if (auto s = CheckSlot(slot, "save"); !s.ok()) return s;
  if (dst.words() != state_words_) return absl::InvalidArgumentError("save: host state of another size");
  std::memcpy(dst.data(), data(slot), static_cast<size_t>(state_bytes()));
  return absl::OkStatus();
}

absl::Status HostStatePool::LoadFromHost(HostState& src, int slot) {
  if (auto s = CheckSlot(slot, "load"); !s.ok()) return s;
  if (src.words() != state_words_) return absl::InvalidArgumentError("load: host state of another size");
  std::memcpy(data(slot), src.data(), static_cast<size_t>(state_bytes()));
  return absl::OkStatus();
}

}  // namespace gla
