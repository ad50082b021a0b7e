#include "engine/state_pool.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace gla {

StatePool::StatePool(int slots, int64_t state_floats) : state_floats_(state_floats), used_(slots, false) {
  free_.reserve(slots);
  for (int s = slots - 1; s >= 0; --s) free_.push_back(s);  // slot 0 is handed out first
}

std::optional<int> StatePool::Acquire() {
  if (free_.empty()) return std::nullopt;
  const int slot = free_.back();
  free_.pop_back();
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

HostStatePool::HostStatePool(int slots, int64_t state_floats)
    : StatePool(slots, state_floats), storage_(static_cast<size_t>(slots) * state_floats, 0.0f) {}

absl::Status HostStatePool::Zero(int slot) {
  if (slot < 0 || slot >= capacity()) return absl::OutOfRangeError(absl::StrCat("slot ", slot));
  std::fill_n(data(slot), state_floats_, 0.0f);
  return absl::OkStatus();
}

absl::Status HostStatePool::Copy(int src, int dst) {
  if (src < 0 || src >= capacity() || dst < 0 || dst >= capacity())
    return absl::OutOfRangeError(absl::StrCat("slot copy ", src, " -> ", dst));
  std::memcpy(data(dst), data(src), static_cast<size_t>(state_bytes()));
  return absl::OkStatus();
}

}  // namespace gla
