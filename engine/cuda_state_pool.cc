#include "engine/cuda_state_pool.h"

#include <algorithm>
#include <cstring>
#include <mutex>

namespace gla {

namespace {

bool EventDone(cudaEvent_t e) {
  const cudaError_t r = cudaEventQuery(e);
  if (r == cudaErrorNotReady) return false;
  cudaGetLastError();  // an error is reported by the next call that waits on it
  return true;
}

}  // namespace

// Page-locked buffers of one state, kept for reuse: cudaMallocHost of a 12-48 MiB state takes
// milliseconds and cudaFreeHost synchronizes the device, neither of which a swap on the
// scheduler's thread should pay. Shared by the pool and its HostStates (either may go first).
class PinnedRecycler {
 public:
  PinnedRecycler(size_t bytes, size_t keep) : bytes_(bytes), keep_(keep) {}
  size_t bytes() const { return bytes_; }
  absl::StatusOr<PinnedMemory> Get() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        PinnedMemory m = std::move(free_.back());
        free_.pop_back();
        return m;
      }
    }
    return PinnedMemory::Allocate(bytes_, "a state in host memory");
  }
  void Put(PinnedMemory m) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < keep_) free_.push_back(std::move(m));
  }

 private:
  const size_t bytes_, keep_;
  std::mutex mu_;
  std::vector<PinnedMemory> free_;
};

namespace {

// Page-locked host memory and the event of the last copy into or out of it.
class PinnedHostState : public HostState {
 public:
  static absl::StatusOr<std::unique_ptr<HostState>> Create(int64_t floats, std::shared_ptr<PinnedRecycler> recycler) {
    auto mem = recycler->Get();
    if (!mem.ok()) return mem.status();
    cudaEvent_t e = nullptr;
    GLA_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return std::unique_ptr<HostState>(new PinnedHostState(floats, std::move(*mem), e, std::move(recycler)));
  }
  ~PinnedHostState() override {
    if (copied_) cudaEventSynchronize(event_);  // a copy must not outlive its buffer
    cudaEventDestroy(event_);
    recycler_->Put(std::move(mem_));
  }
  float* data() override { return mem_.get<float>(); }
  bool Ready() override { return !copied_ || EventDone(event_); }
  absl::Status Wait() override {
    if (copied_) GLA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(event_));
    return absl::OkStatus();
  }
  absl::Status RecordCopy(cudaStream_t copy_stream) {
    GLA_CUDA_RETURN_IF_ERROR(cudaEventRecord(event_, copy_stream));
    copied_ = true;
    return absl::OkStatus();
  }

 private:
  PinnedHostState(int64_t floats, PinnedMemory mem, cudaEvent_t e, std::shared_ptr<PinnedRecycler> recycler)
      : HostState(floats), mem_(std::move(mem)), event_(e), recycler_(std::move(recycler)) {}
  PinnedMemory mem_;
  cudaEvent_t event_;
  bool copied_ = false;
  std::shared_ptr<PinnedRecycler> recycler_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GpuStatePool>> GpuStatePool::Create(int slots, int64_t state_values, StateDType dtype,
                                                                   cudaStream_t stream) {
  if (slots < 1) return absl::InvalidArgumentError("the state pool needs at least 1 slot");
  const size_t bytes = static_cast<size_t>(slots + 1) * static_cast<size_t>(StateWords(state_values, dtype)) * sizeof(float);
  auto storage = DeviceMemory::Allocate(bytes, absl::StrCat("the state pool (", slots, " slots + 1 scratch)").c_str());
  if (!storage.ok()) return storage.status();
  GLA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(storage->get(), 0, bytes, stream));
  std::unique_ptr<GpuStatePool> pool(new GpuStatePool(slots, state_values, dtype, std::move(*storage), stream));
  if (absl::Status s = pool->Init(); !s.ok()) return s;
  return pool;
}

absl::Status GpuStatePool::Init() {
  // Keep up to 1 GiB (at least 4 states) of freed host buffers for the next swaps, and fill it
  // with one buffer per slot (up to that) in the background: a session's first turns and first
  // swaps then find their buffers ready instead of waiting for cudaMallocHost.
  const size_t bytes = static_cast<size_t>(state_bytes());
  const size_t keep = std::max<size_t>(4, (size_t{1} << 30) / std::max<size_t>(bytes, 1));
  recycler_ = std::make_shared<PinnedRecycler>(bytes, keep);
  int device = 0;
  GLA_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  const size_t prefill = std::min<size_t>(keep, static_cast<size_t>(capacity()));
  prefill_ = std::thread([recycler = recycler_, device, prefill, stop = &stop_prefill_] {
    if (cudaSetDevice(device) != cudaSuccess) return;
    for (size_t i = 0; i < prefill && !stop->load(); ++i) {
      auto m = PinnedMemory::Allocate(recycler->bytes(), "a state in host memory");
      if (!m.ok()) return;  // no pinned memory to spare: swaps allocate when they need it
      recycler->Put(std::move(*m));
    }
  });
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  GLA_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&engine_mark_, cudaEventDisableTiming));
  for (SlotCopies& c : copies_) {
    GLA_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&c.out, cudaEventDisableTiming));
    GLA_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&c.in, cudaEventDisableTiming));
  }
  return absl::OkStatus();
}

GpuStatePool::~GpuStatePool() {
  stop_prefill_ = true;
  if (prefill_.joinable()) prefill_.join();
  if (copy_stream_ != nullptr) cudaStreamSynchronize(copy_stream_);
  for (SlotCopies& c : copies_) {
    if (c.out != nullptr) cudaEventDestroy(c.out);
    if (c.in != nullptr) cudaEventDestroy(c.in);
  }
  if (engine_mark_ != nullptr) cudaEventDestroy(engine_mark_);
  if (copy_stream_ != nullptr) cudaStreamDestroy(copy_stream_);
}

bool GpuStatePool::CopyPending(int slot) {
  SlotCopies& c = copies_[slot];
  if (c.out_pending && EventDone(c.out)) c.out_pending = false;
  return c.out_pending;
}

absl::Status GpuStatePool::OrderBeforeUse(int slot) {
  if (auto s = CheckSlot(slot, "use"); !s.ok()) return s;
  SlotCopies& c = copies_[slot];
  if (c.out_pending) {
    if (!EventDone(c.out)) GLA_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_, c.out, 0));
    c.out_pending = false;
  }
  if (c.in_pending) {
    if (!EventDone(c.in)) GLA_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_, c.in, 0));
    c.in_pending = false;
  }
  return absl::OkStatus();
}

absl::Status GpuStatePool::CopyAfterEngine() {
  GLA_CUDA_RETURN_IF_ERROR(cudaEventRecord(engine_mark_, stream_));
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(copy_stream_, engine_mark_, 0));
  return absl::OkStatus();
}

absl::Status GpuStatePool::Zero(int slot) {
  if (auto s = OrderBeforeUse(slot); !s.ok()) return s;
  GLA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(word(slot), 0, state_bytes(), stream_));
  return absl::OkStatus();
}

absl::Status GpuStatePool::Copy(int src, int dst) {
  if (auto s = OrderBeforeUse(src); !s.ok()) return s;
  if (auto s = OrderBeforeUse(dst); !s.ok()) return s;
  if (src == dst) return absl::OkStatus();
  GLA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(word(dst), word(src), state_bytes(),
                                           cudaMemcpyDeviceToDevice, stream_));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<HostState>> GpuStatePool::NewHostState() {
  return PinnedHostState::Create(state_words_, recycler_);
}

absl::Status GpuStatePool::SaveToHost(int slot, HostState& dst) {
  if (auto s = CheckSlot(slot, "save"); !s.ok()) return s;
  auto* pinned = dynamic_cast<PinnedHostState*>(&dst);
  if (pinned == nullptr || dst.words() != state_words_)
    return absl::InvalidArgumentError("save: not a host state of this pool");
  if (auto s = CopyAfterEngine(); !s.ok()) return s;
  GLA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst.data(), word(slot), state_bytes(),
                                           cudaMemcpyDeviceToHost, copy_stream_));
  if (auto s = pinned->RecordCopy(copy_stream_); !s.ok()) return s;
  GLA_CUDA_RETURN_IF_ERROR(cudaEventRecord(copies_[slot].out, copy_stream_));
  copies_[slot].out_pending = true;
  return absl::OkStatus();
}

absl::Status GpuStatePool::LoadFromHost(HostState& src, int slot) {
  if (auto s = CheckSlot(slot, "load"); !s.ok()) return s;
  auto* pinned = dynamic_cast<PinnedHostState*>(&src);
  if (pinned == nullptr || src.words() != state_words_)
    return absl::InvalidArgumentError("load: not a host state of this pool");
  if (auto s = CopyAfterEngine(); !s.ok()) return s;
  GLA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(word(slot), src.data(), state_bytes(),
                                           cudaMemcpyHostToDevice, copy_stream_));
  if (auto s = pinned->RecordCopy(copy_stream_); !s.ok()) return s;
  GLA_CUDA_RETURN_IF_ERROR(cudaEventRecord(copies_[slot].in, copy_stream_));
  copies_[slot].in_pending = true;
  return absl::OkStatus();
}

}  // namespace gla
