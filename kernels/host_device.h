// GLA_HOST_DEVICE: a function of a header shared by host code and CUDA kernels (plain C++ to the
// host compiler, __host__ __device__ to nvcc).
#pragma once

#if defined(__CUDACC__)
#define GLA_HOST_DEVICE __host__ __device__
#else
#define GLA_HOST_DEVICE
#endif
