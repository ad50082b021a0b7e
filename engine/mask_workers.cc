#include "engine/mask_workers.h"

namespace gla {

MaskWorkers::MaskWorkers(int threads) {
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
}

MaskWorkers::~MaskWorkers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void MaskWorkers::Drain(std::unique_lock<std::mutex>& lock) {
  while (job_ != nullptr && next_ < n_) {
    const size_t i = next_++;
    const std::function<void(size_t)>* job = job_;
    lock.unlock();
    (*job)(i);
    lock.lock();
    if (++finished_ == n_) done_.notify_all();
  }
}

void MaskWorkers::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  unsigned seen = generation_;
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    Drain(lock);
  }
}

void MaskWorkers::Run(size_t n, const std::function<void(size_t)>& job) {
  if (n == 0) return;
  std::unique_lock<std::mutex> lock(mu_);
  job_ = &job;
  n_ = n;
  next_ = finished_ = 0;
  ++generation_;
  if (!workers_.empty() && n > 1) wake_.notify_all();
  Drain(lock);
  done_.wait(lock, [&] { return finished_ == n_; });
  job_ = nullptr;  // a worker woken late finds nothing to take
}

}  // namespace gla
