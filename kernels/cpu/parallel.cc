#include "kernels/cpu/parallel.h"

#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace gla::cpu {
namespace {

class Pool {
 public:
  static Pool& Get() {
    static Pool* pool = new Pool();  // never destroyed: workers may outlive static destruction order
    return *pool;
  }

  void SetThreads(int threads) {
    std::lock_guard<std::mutex> run(run_mu_);  // not while a job runs
    std::unique_lock<std::mutex> lock(mu_);
    wanted_ = threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    while (static_cast<int>(workers_.size()) < wanted_ - 1) {
      const int index = static_cast<int>(workers_.size());
      workers_.emplace_back([this, index] { Work(index); });
      workers_.back().detach();
    }
  }

  void Run(int64_t n, int64_t min_per_part, const std::function<void(int64_t, int64_t)>& fn) {
    int parts = 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      parts = static_cast<int>(std::min<int64_t>(wanted_, std::max<int64_t>(1, n / std::max<int64_t>(min_per_part, 1))));
    }
    std::unique_lock<std::mutex> run(run_mu_, std::try_to_lock);
    if (parts <= 1 || !run.owns_lock()) {  // small, or the pool is another caller's now
      fn(0, n);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      n_ = n;
      parts_ = parts;
      pending_ = parts - 1;
      ++generation_;
    }
    cv_.notify_all();
    fn(0, Bound(0));
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    fn_ = nullptr;
  }

 private:
  Pool() { SetThreads(0); }
  int64_t Bound(int part) const { return n_ * (part + 1) / parts_; }  // part p is [Bound(p - 1), Bound(p))

  void Work(int index) {
    uint64_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      const int part = index + 1;  // the caller takes part 0
      if (part >= parts_) continue;
      const auto* fn = fn_;
      const int64_t begin = n_ * part / parts_, end = Bound(part);
      lock.unlock();
      (*fn)(begin, end);
      lock.lock();
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  std::mutex run_mu_;  // held by the caller whose job the workers run
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  int wanted_ = 1;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int parts_ = 1, pending_ = 0;
  uint64_t generation_ = 0;
};

}  // namespace

void SetKernelThreads(int threads) { Pool::Get().SetThreads(threads); }

void ParallelFor(int64_t n, int64_t min_per_part, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  Pool::Get().Run(n, min_per_part, fn);
}

}  // namespace gla::cpu
