// Programmatic dependent launch (Hopper): a kernel launched through LaunchDependent may be
// scheduled while the kernel before it in the stream is still finishing; it waits in
// WaitForPredecessor() — its first statement — until that kernel has completed and its writes are
// visible. Nothing of the kernel runs early, so ordering is as with a plain launch; what overlaps
// is the launch itself, which in a decode step (hundreds of short kernels, even inside a CUDA
// graph) is a large part of the time. On a kernel launched the plain way the wait is a no-op.
//
// By default a dependent kernel is only scheduled once every block of its predecessor has exited.
// LetDependentsLaunch(), called right after the wait, lets the next kernel's blocks be scheduled
// while this one still runs, so they can issue the loads that do not depend on it (weights, the
// recurrent state) before their own wait. Called after the wait, not before: then at most two
// kernels are in flight, and everything before the predecessor is complete when a kernel's
// pre-wait part runs (the pre-wait part may read only what no kernel of the current step writes).
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace gla::cuda {

__device__ __forceinline__ void WaitForPredecessor() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void LetDependentsLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// With `smem` bytes of dynamic shared memory, the blocks in thread-block clusters of `cluster_x`
// consecutive blocks along x (1: no cluster).
template <typename... KernelArgs, typename... Args>
cudaError_t LaunchDependentClusters(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, int cluster_x,
                                    cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = static_cast<unsigned>(cluster_x);
  attr[1].val.clusterDim.y = 1;
  attr[1].val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = cluster_x > 1 ? 2 : 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

// With `smem` bytes of dynamic shared memory.
template <typename... KernelArgs, typename... Args>
cudaError_t LaunchDependentSmem(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                                cudaStream_t stream, Args&&... args) {
  return LaunchDependentClusters(kernel, grid, block, smem, 1, stream, std::forward<Args>(args)...);
}

template <typename... KernelArgs, typename... Args>
cudaError_t LaunchDependent(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
  return LaunchDependentSmem(kernel, grid, block, 0, stream, std::forward<Args>(args)...);
}

}  // namespace gla::cuda
