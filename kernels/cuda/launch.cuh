// Programmatic dependent launch (Hopper): a kernel launched through LaunchDependent may be
// scheduled while the kernel before it in the stream is still finishing; it waits in
// WaitForPredecessor() — its first statement — until that kernel has completed and its writes are
// visible. Nothing of the kernel runs early, so ordering is as with a plain launch; what overlaps
// is the launch itself, which in a decode step (hundreds of short kernels, even inside a CUDA
// graph) is a large part of the time. On a kernel launched the plain way the wait is a no-op.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace gla::cuda {

__device__ __forceinline__ void WaitForPredecessor() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

template <typename... KernelArgs, typename... Args>
cudaError_t LaunchDependent(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace gla::cuda
