// SwiGLU's element: silu(a) * u, in fp32. One definition for the SwiGLU kernel and the decode-sized
// projection that applies it while loading its input (LinearSmallMSwiGlu), so the two agree to the bit.
#pragma once

#include <cuda_runtime.h>

namespace gla::cuda {

__device__ __forceinline__ float SwiGluOf(float a, float u) { return a / (1.f + __expf(-a)) * u; }

}  // namespace gla::cuda
