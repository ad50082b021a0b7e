// Threads that make a step's token masks (structured output, issue 21) while the device runs the
// step's forward pass: the scheduler hands them one job per constrained sequence, and the calling
// thread works on the same jobs, so a pool of 0 threads is the plain loop. One Run at a time.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gla {

class MaskWorkers {
 public:
  explicit MaskWorkers(int threads);
  ~MaskWorkers();
  MaskWorkers(const MaskWorkers&) = delete;
  MaskWorkers& operator=(const MaskWorkers&) = delete;

  int threads() const { return static_cast<int>(workers_.size()); }
  // Calls job(i) for every i in [0, n), spread over the workers and the caller; returns when all
  // have returned. Jobs must not throw.
  void Run(size_t n, const std::function<void(size_t)>& job);

 private:
  void Work();
  // Takes and runs jobs of the current Run until none is left.
  void Drain(std::unique_lock<std::mutex>& lock);

  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(size_t)>* job_ = nullptr;
  size_t n_ = 0, next_ = 0, finished_ = 0;
  unsigned generation_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace gla
