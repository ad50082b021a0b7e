// The batched persistent decode kernel's entry points (persistent_decode_batched.cu), for
// persistent_decode.cu's PersistentDecodeShapesSupported / PersistentDecodeBlocks /
// PersistentDecodeStep, which take batches of 2 ... kPersistentMaxBatch sequences here.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/cuda/persistent_batched_tiling.h"
#include "kernels/persistent_decode.h"

namespace gla::cuda::persistent {

// Whether the step's input rows and at least two weight stages fit the shared memory of one block
// (the shape checks common to both kernels are the caller's).
bool BatchedLayoutFits(const PersistentDecodeParams& p);

// Where the input rows and stages of this step's batch lie in the kernel's shared memory.
BatchedLayout BatchedLayoutFor(const PersistentDecodeParams& p);

// Sets the kernels' shared-memory attribute; false when the device cannot give it.
bool PrepareBatchedKernels();

// Enqueues the step (cooperative launch of p.blocks blocks); the caller has checked the shapes.
cudaError_t BatchedDecodeStep(const PersistentDecodeParams& p, cudaStream_t stream);

}  // namespace gla::cuda::persistent
