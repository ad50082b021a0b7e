// One decode step of a whole GLA model, for one sequence (or 2-8: below), as one persistent kernel
// (issue 19, deliverable 2). The kernel-per-operation step spends most of a batch-1 step in ramps: each of
// ~150 kernels waits for its predecessor's last store, then needs two or three dependent trips to
// memory before its weight stream reaches full rate (docs/performance.md, the ncu profile).
//
// Here one block per SM runs the whole step. In each block a producer warp streams every weight
// matrix the block will need — in_proj, o_proj, gate|up, down of every layer, then lm_head — into a
// ring of shared-memory stages with bulk asynchronous copies (TMA, cp.async.bulk), as far ahead as
// the ring allows; weights do not depend on the step's activations, so the stream never waits for
// them. Eight consumer warps make each operation's input row in shared memory (the RMSNorm, the
// gate norm with the output gate, SwiGLU's output), multiply the streamed rows with it, and write
// their rows of the output. Operations are separated by a grid-wide barrier on a device counter
// (five per layer); while consumers wait at one, the ring keeps filling with the next operation's
// weights, so the memory system never idles at an operation boundary. The recurrent state update
// (with the forget gate made from its low-rank factors) runs between in_proj and o_proj; its state
// rows are loaded before the barrier that precedes it.
//
// The layers' four projections may be one-byte rows instead (issue 23: --weights fp8 / int8): FP8
// E4M3 or INT8 codes with an fp32 scale per output row, streamed as they lie (half the bytes of
// bf16), widened exactly in registers, each row's sum scaled once (cuda::LinearSmallMFp8's and
// LinearSmallMInt8's arithmetic); lm_head stays bf16.
//
// Numerics are the kernel-per-operation path's: bf16 weights and bf16 input rows, fp32
// accumulation, fp32 residual stream, projections and states (a bf16 pool's state widened on load and
// rounded on store, as the decode step does), the gate|up outputs rounded to bf16
// before SwiGLU, SwiGLU's output rounded to bf16; only the order of the sums differs.
// Batches of 2-8 sequences (PersistentDecodeParams::batch) run the same plan in a second kernel
// (kernels/cuda/persistent_decode_batched.cu) whose consumers multiply the streamed rows with every
// sequence's input row on tensor cores; PersistentDecodeStep picks it by the batch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/host_device.h"
#include "kernels/state_slots.h"

namespace gla::cuda {

// How the layers' projections are stored (PersistentDecodeParams::weights; lm_head is bf16 always).
enum class PersistentWeights : int {
  kBf16 = 0,
  kFp8 = 1,   // FP8 E4M3 codes, a scale per output row
  kInt8 = 2,  // INT8 codes, a scale per output row
};

// One layer's weights (device pointers; matrices row-major [out, in] in PersistentDecodeParams::
// weights' form, 16-byte aligned, the rest fp32) and where its state lies inside a sequence's slot.
struct PersistentDecodeLayer {
  const float* attn_norm = nullptr;  // [D]
  const void* in_proj = nullptr;     // [P, D]: q | k | v | g | gate low rank
  const float* gk1 = nullptr;        // [Hkv dk, rank]: the gate's second factor
  const float* gk1_bias = nullptr;   // [Hkv dk] or null
  const float* g_norm = nullptr;     // [dv]
  const void* o_proj = nullptr;      // [D, H dv]
  const float* mlp_norm = nullptr;   // [D]
  const void* gate_up = nullptr;     // [2 I, D]: gate rows, then up rows
  const void* down = nullptr;        // [D, I]
  int64_t state_offset = 0;          // values from the slot's start to this layer's [H, dk, dv]
  // One-byte weights only: each projection's scale per output row ([P], [D], [2 I], [D]).
  const float* in_proj_scale = nullptr;
  const float* o_proj_scale = nullptr;
  const float* gate_up_scale = nullptr;
  const float* down_scale = nullptr;
};

// The most sequences one step of the batched kernel takes (its input rows live in shared memory).
constexpr int kPersistentMaxBatch = 8;

// The tile options' ranges (PersistentDecodeParams::tiles_in_flight and tile_bytes), one rule for the
// shape check, the engine's options and the benchmarks' flags. A count above a ring's stages is
// for the engine to clamp (CudaModel) and for the shape check to refuse.
constexpr int kPersistentMaxTilesInFlight = 16;
constexpr bool PersistentTilesInFlightValid(int n) { return n >= 0 && n <= kPersistentMaxTilesInFlight; }
constexpr int kPersistentMaxTileBytes = 96 * 1024;
constexpr bool PersistentTileBytesValid(int bytes) {
  return bytes == 0 || (bytes >= 2048 && bytes <= kPersistentMaxTileBytes && bytes % 1024 == 0);
}
// A requested grid (CudaModelOptions::persistent_blocks, the benchmarks' --blocks): 0 for one block
// per SM, else a count the caller caps at the SMs (every block must be resident for the barrier).
constexpr int kPersistentMaxBlocks = 1024;
constexpr bool PersistentBlocksValid(int n) { return n >= 0 && n <= kPersistentMaxBlocks; }

struct PersistentDecodeParams {
  const PersistentDecodeLayer* layers = nullptr;  // device array of num_layers
  int num_layers = 0;
  PersistentWeights weights = PersistentWeights::kBf16;  // the layers' projections
  int D = 0, I = 0;                               // hidden, intermediate
  int P = 0;                                      // in_proj's width
  int q_off = 0, k_off = 0, v_off = 0, g_off = 0, r_off = 0;  // columns of in_proj's output
  int H = 0, Hkv = 0, dk = 0, dv = 0, rank = 0;
  bool output_gate = true;
  float scale = 1.f, eps = 1e-6f;
  float gate_inv_normalizer = 1.f;
  bool gate_has_clamp = false;
  float gate_clamp_min = 0.f;
  const float* final_norm = nullptr;        // [D]
  const __nv_bfloat16* lm_head = nullptr;   // [vocab, D]
  int vocab = 0;
  // The step's sequences: 1 (PersistentDecodeStep's batch-1 kernel) or 2 ... kPersistentMaxBatch
  // (the batched kernel); every buffer below holds a row per sequence, in this order.
  int batch = 1;
  // Sequence i's state: slot slots[i] of `state` (fp32 or bf16, kernels/state_slots.h), a layer's
  // [H, dk, dv] at its state_offset.
  CudaStateSlots state;
  const int32_t* slots = nullptr;
  // Workspace (device): x holds the embedding rows on entry and the residual stream after.
  float* x = nullptr;              // [batch, D]
  float* proj = nullptr;           // [batch, P]
  float* o = nullptr;              // [batch, H dv] (the batched kernel: o times the gate norm's factors)
  float* o_sumsq = nullptr;        // [batch, H, dv / 16]: the batched kernel's sums of o's squares
  __nv_bfloat16* act = nullptr;    // [batch, I]
  float* logits = nullptr;         // [batch, vocab], or null: no head this step
  unsigned* barrier = nullptr;     // one counter, zero at the launch (the caller clears it)
  int blocks = 0;                  // from PersistentDecodeBlocks
  // The producer's weight tiles in flight at once (issued, not yet landed), 1 up to the ring's
  // stages; 0: as many as the ring holds. Fewer keep the memory system's queues short, which is
  // what the consumers' own loads and the grid barriers' polls wait behind.
  int tiles_in_flight = 0;
  // A cap on a weight tile's bytes, for other tiles than the kernels' own (0: batch 1's 32 KiB of
  // whole rows, the batched kernel's 16 rows x 2 KiB segments); 2 KiB to 96 KiB in multiples of
  // 1 KiB. The batch-1 kernel takes as many whole rows as fit (at least one, at most 32) and above
  // 32 KiB cuts its 192 KiB ring into stages of the cap (64 KiB: 3 stages, 96 KiB: 2); the batched
  // kernel takes segments of tile_bytes / 16 (a multiple of 128, at least 128, at most its 2 KiB).
  int tile_bytes = 0;
  // Issue the block's first state item's loads (its state rows and gate factors) before in_proj's
  // tiles rather than after them. A grid barrier's release by the consumers' thread 0 waits for
  // warp 0's loads still outstanding; issued after in_proj, the item's loads are still in flight
  // (behind the weight stream) when the barrier after in_proj is reached (gla-1.3B batch 1 on an
  // H100 80GB HBM3, 2026-12-07: that barrier's waits 108 -> 64 us a step, the kernel 3% faster;
  // persistent_decode_bench --early_state 0,1, four rounds alternating).
  bool early_state_loads = false;
  // Optional: the residual stream after o_proj and after down, and the activations after gate|up,
  // exchanged as tagged words instead of through a grid barrier: each value travels with its
  // exchange's tag in one 64-bit word (the value's bits, the tag above them; relaxed 64-bit stores
  // and loads), and a reader reloads a word until its tag is the one it waits for, so the data and
  // the synchronisation come in one trip (three of the five grid barriers a layer go). x's words
  // [batch, D], then act's [batch, I], then (batch 1, tagged_proj) in_proj's P: at least
  // PersistentTaggedWords, zeroed when allocated and where a step reads past what the last one
  // wrote (PersistentTaggedWords); `step` must differ from the last step's launch
  // (PersistentExchangeTag). Null: grid barriers. Needs PersistentTaggedExchangeSupported: D <= 2,048,
  // and D >= blocks and I >= blocks (every block then writes some of each exchange, which is what
  // keeps a writer from overwriting a word a slower block still waits on). A word that has not come
  // after 2^24 reloads (seconds) traps the kernel (a failed launch, not a hung GPU). Both kernels
  // (H100 80GB HBM3, 2026-12-07: batch 1 level 1 level with the barriers, level 2 3-6% faster; the
  // batched kernel's level 1 22-32% slower at batch 2, its norm's warp per sequence waiting four
  // rounds a pass).
  unsigned long long* tagged = nullptr;
  unsigned step = 0;
  // With tagged, batch 1: in_proj's values too (its last P words), so the state update waits only
  // for the q, k, v and gate rank values of its own item, not for every block: four of the five
  // barriers a layer go (the one after the state update stays). The batched kernel ignores it.
  bool tagged_proj = false;
  // With tagged: x and act as tagged words (above). False, with tagged_proj: in_proj's values alone,
  // x and act through grid barriers (on the H100 an exchange of x as tagged words waited longer than
  // its barrier, while in_proj's made the state update faster; not yet run). The batched kernel then
  // keeps all its barriers.
  bool tagged_residual = true;
  // Optional (benchmarks): [5 num_layers + 2][blocks][2] times (ns, %globaltimer): entry 0 the
  // block's start, entry i the i-th grid barrier (when the block arrived, when it left; five per
  // layer, after in_proj, the state update, o_proj, gate|up and down), the last the block's end.
  unsigned long long* trace = nullptr;
};

// Whether the kernel takes these shapes (head dims, sizes of the shared-memory rows, rank; one-byte
// weights: D, H dv and I multiples of 16). The layers' pointers are device memory and not checked.
bool PersistentDecodeShapesSupported(const PersistentDecodeParams& p);

// Whether p's shapes and grid allow PersistentDecodeParams::tagged (whatever p.tagged holds): D at
// most 2,048 (a consumer thread's eight values), D and I at least p.blocks.
bool PersistentTaggedExchangeSupported(const PersistentDecodeParams& p);

// The tagged words a step of p writes, [0, this); every word it reads lies among them: x's D and
// act's I per sequence, and at batch 1 with tagged_proj in_proj's P. A word a step reads that the step
// before did not write may hold any older step's tag, which the tags' 31 bits do not keep apart
// forever: zero the words past what the last step wrote before a step that writes more (the engine
// does).
inline int64_t PersistentTaggedWords(const PersistentDecodeParams& p) {
  return int64_t{p.batch} * (int64_t{p.D} + p.I) + (p.batch == 1 && p.tagged_proj ? p.P : 0);
}

// The tag of step `step`'s exchange e (0-4, the five points a layer's grid barriers stand at) of
// layer l in a model of `layers` layers: unique within a step, never a tag of the step before (the
// tags of consecutive steps are 5 layers + 8 apart modulo 2^31, more than a step's spread, across the
// step counter's 32-bit wrap too), and never 0, which is what a zeroed word holds (the top bit is set):
// a word a step reads holds that step's tag, the step before's, or 0.
GLA_HOST_DEVICE constexpr unsigned PersistentExchangeTag(unsigned step, int layers, int l, int e) {
  return 0x80000000u |
         ((step * static_cast<unsigned>(5 * layers + 8) + static_cast<unsigned>(5 * l + e + 1)) & 0x7fffffffu);
}

// The weight ring's stages a step of p's batch and shapes has (the most tiles_in_flight takes).
int PersistentDecodeStages(const PersistentDecodeParams& p);

// The blocks to launch on `device` (one per SM, all resident at once), or 0 when the device cannot
// run the kernel (before Hopper, or not enough shared memory). Sets the kernel's shared-memory
// attribute; call once before the first PersistentDecodeStep.
int PersistentDecodeBlocks(int device);

// Enqueues the step (a cooperative launch of p.blocks blocks; the batched kernel for p.batch > 1). p.barrier must be zero when the
// kernel starts (clear it on the same stream first). cudaErrorInvalidValue: shapes not supported.
cudaError_t PersistentDecodeStep(const PersistentDecodeParams& p, cudaStream_t stream);

}  // namespace gla::cuda
