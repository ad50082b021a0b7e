// A fixed set of worker threads for the CPU kernels that BLAS does not run (the INT8 projections,
// kernels/linear_int8.h). ParallelFor(n, fn) calls fn(begin, end) on equal parts of [0, n), the
// calling thread taking one part; a call made while another is running (two engines in one
// process, say) runs on its caller alone rather than wait. Internal to kernels/cpu.
#pragma once

#include <cstdint>
#include <functional>

namespace gla::cpu {

// Threads (the caller included) a ParallelFor uses from now on; 0: one per core. Set by
// SetLinearThreads (kernels/linear.h), so BLAS and these kernels use the same number.
void SetKernelThreads(int threads);

// `min_per_part`: the smallest part worth a thread (small n runs on the caller alone).
void ParallelFor(int64_t n, int64_t min_per_part, const std::function<void(int64_t begin, int64_t end)>& fn);

}  // namespace gla::cpu
