// The GLA operator in its three forms. Framework-free: plain pointers, strides and sizes.
//
//   S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t        S [dk, dv] per head, fp32
//   o_t = (scale * q_t) S_t
//
// Layouts (row = one token): q [T, H, dk], k and g [T, Hkv, dk], v [T, Hkv, dv], o [T, H, dv];
// `*_stride` is the distance in floats between consecutive tokens, so the operator can read
// straight out of a fused projection buffer. GQA: head h reads kv head h / (H / Hkv).
// g is the log forget gate (<= 0), already through logsigmoid / normalizer / clamp.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#if defined(GLA_HAVE_CUDA)
#include <cuda_runtime_api.h>

#include "kernels/state_slots.h"
#endif

namespace gla {

// Where the operator's inputs and output live: row = one token (or one sequence's token in a
// decode step); `*_stride` = floats between consecutive rows.
struct GlaRows {
  const float* q = nullptr;
  int64_t q_stride = 0;
  const float* k = nullptr;
  int64_t k_stride = 0;
  const float* v = nullptr;
  int64_t v_stride = 0;
  const float* g = nullptr;
  int64_t g_stride = 0;
  float* o = nullptr;
  int64_t o_stride = 0;
};

struct GlaSeqParams : GlaRows {
  int T = 0, H = 0, Hkv = 0, dk = 0, dv = 0;
  float* state = nullptr;  // [H, dk, dv]: the initial state on entry, the final state on return
  float scale = 1.0f;      // usually dk^-1/2
};

// One token for each of N sequences; sequence n's state is states[n] ([H, dk, dv], in place).
// The rows are indexed by n.
struct GlaDecodeParams : GlaRows {
  int N = 0, H = 0, Hkv = 0, dk = 0, dv = 0;
  float* const* states = nullptr;
  float scale = 1.0f;
};

// Gradients of one sequence's GLA (for fine-tuning), from the upstream gradients of every output
// row and of the final state. Layouts as the forward's (row = token, `*_stride` floats apart).
struct GlaSeqGrads {
  const float* d_o = nullptr;  // [T, H, dv]
  int64_t d_o_stride = 0;
  const float* d_ht = nullptr;  // [H, dk, dv]; nullptr = the final state is not used downstream
  float* dq = nullptr;          // [T, H, dk]
  int64_t dq_stride = 0;
  float* dk = nullptr;  // [T, Hkv, dk]  (GQA: summed over the heads that share a kv head)
  int64_t dk_stride = 0;
  float* dv = nullptr;  // [T, Hkv, dv]
  int64_t dv_stride = 0;
  float* dg = nullptr;  // [T, Hkv, dk]  gradient of the log forget gate g
  int64_t dg_stride = 0;
  float* dh0 = nullptr;  // [H, dk, dv]  gradient of the initial state
};

namespace cpu {

// The definition: one token after another.
void GlaRecurrentNaive(const GlaSeqParams& p);

// Chunkwise form (paper, section 4): chunks of `chunk` tokens carry the state recurrently;
// inside a chunk, sub-chunks of `sub_chunk` tokens interact through matmuls whose gate factors
// are taken relative to a reference row between them (so every exp() argument is <= 0), and
// pairs inside one sub-chunk use exact pairwise gate differences. Returns false (doing nothing)
// unless 0 < sub_chunk <= chunk and chunk % sub_chunk == 0.
bool GlaChunkwise(const GlaSeqParams& p, int chunk, int sub_chunk);

// Recurrent decode step for a batch of sequences (the serving path).
void GlaDecodeStep(const GlaDecodeParams& p);

// The definition's backward: the forward states are recomputed and kept (T + 1 of them per
// head, in double), then walked back: dS_T = d_ht; per t: dS += scale q_t^T do_t,
// dq_t = scale S_t do_t, dk_t = dS v_t, dv_t = dS^T k_t, dg_t = rowsum(dS * exp(g_t) * S_{t-1}),
// dS = diag(exp(g_t)) dS; dh0 = dS. p.state is the initial state h0 (read, not changed);
// p.o is not used. The reference for the chunkwise backward kernels.
void GlaBackwardNaive(const GlaSeqParams& p, const GlaSeqGrads& grads);

// The chunkwise backward in fp32 (the CPU fine-tune path): chunk-start states and state
// gradients from two scans, then every chunk's gradients from in-chunk products. Equals
// GlaBackwardNaive up to fp32 rounding. Returns false (doing nothing) unless chunk >= 1.
bool GlaBackwardChunkwise(const GlaSeqParams& p, const GlaSeqGrads& grads, int chunk);

}  // namespace cpu

#if defined(GLA_HAVE_CUDA)
// The forget gate made inside an operator's kernel from its low-rank factors instead of read from
// g (a launch and a round trip of g fewer): g of key j = logsigmoid(bias[j] + lowrank[t] . w1[j]) /
// normalizer (then the clamp), as LowRankGate computes it, to the bit (kernels/cuda/forget_gate.cuh).
// lowrank: row t at lowrank + t * lowrank_stride, [rank] floats; w1 [Hkv * dk, rank] fp32; bias
// may be null. Null lowrank: g is read.
struct GlaGateFactors {
  const float* lowrank = nullptr;
  int64_t lowrank_stride = 0;
  const float* w1 = nullptr;
  const float* bias = nullptr;
  int rank = 0;
  float inv_normalizer = 1.0f;
  bool has_clamp = false;
  float clamp_min = 0.0f;
};

// Whether a kernel can make the gate from `f`: none given (g is read), or a second factor, a rank in
// [1, max_rank], a stride that is not negative and a finite 1 / normalizer and clamp. The kernels
// that take factors refuse anything else with cudaErrorInvalidValue.
inline bool GateFactorsUsable(const GlaGateFactors& f, int max_rank) {
  return f.lowrank == nullptr || (f.w1 != nullptr && f.rank >= 1 && f.rank <= max_rank && f.lowrank_stride >= 0 &&
                                  std::isfinite(f.inv_normalizer) && std::isfinite(f.clamp_min));
}

// One token for each of N sequences on the GPU, states updated in place in a state pool:
// sequence n's state for this layer is values [slots[n] * slot_stride, + H dk dv) of `state`
// (head h's [dk, dv] at h dk dv), fp32 or bf16 (kernels/state_slots.h).
// The rows (q/k/v/g/o) are fp32 device arrays indexed by n.
struct GlaDecodeCudaParams : GlaRows {
  int N = 0, H = 0, Hkv = 0, dk = 0, dv = 0;
  CudaStateSlots state;            // this layer's states (the pool seen at the layer's offset)
  const int32_t* slots = nullptr;  // [N] device array
  float scale = 1.0f;
  // Optional: the forget gate made here instead of read from g (one launch fewer per decode layer;
  // rank <= 64), row n of the factors for sequence n.
  GlaGateFactors gate;
};

// Prefill of many sequences packed in one launch: sequence n's tokens are rows
// [cu_seqlens[n], cu_seqlens[n+1]) of q/k/v/g/o; it starts from the state in slot slots[n]
// (slots == nullptr: from zero, and the final state is not stored) and leaves its final state
// there. No per-token or per-chunk states are written.
struct GlaPrefillCudaParams : GlaRows {
  int num_seqs = 0, H = 0, Hkv = 0, dk = 0, dv = 0;
  const int32_t* cu_seqlens = nullptr;  // [num_seqs + 1] device array
  CudaStateSlots state;                 // this layer's states, as GlaDecodeCudaParams's
  const int32_t* slots = nullptr;       // [num_seqs] device array, or nullptr
  float scale = 1.0f;
  // Used by GlaPrefillChunk only (GlaPrefillRecurrent ignores them): a host copy of
  // cu_seqlens[num_seqs] (or an upper bound), and a device workspace of at least
  // GlaPrefillChunkWorkspaceBytes(*this, total_tokens) bytes, 256-byte aligned.
  int total_tokens = 0;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // GlaPrefillChunk only, optional: a host copy of cu_seqlens [num_seqs + 1]. With it the plan's own
  // cut (plan_segments 0) sizes segments so that an uneven step's main blocks fit one wave of the
  // GPU (from the average length alone, a 4,096- and a 16-token prompt at gla-1.3B heads take 160
  // main blocks for 132 SMs). It only ever lengthens the segments the totals give, so the
  // workspace GlaPrefillChunkWorkspaceBytes sizes from the totals still holds, and a copy that does
  // not match the device's array costs speed, never correctness.
  const int32_t* host_cu_seqlens = nullptr;
  // GlaPrefillChunk only (GlaPrefillRecurrent and GlaBackwardChunk refuse it): the forget gate made
  // in the chunkwise prep kernel from its factors (rank <= kChunkPrepMaxGateRank, row t of the
  // factors for token row t) instead of read from g: a gate launch fewer per layer, and g's rows
  // neither written nor read.
  GlaGateFactors gate;
  // GlaPrefillChunk only, for benchmarks that sweep its plan (0 = the plan's own choice, what the
  // engine uses): segments a sequence is cut into (1 = none, at most kChunkMaxSegments), and the
  // prep kernel as clusters of one block per 64-column slice of dk (1 = no, 2 = yes). The workspace
  // size depends on them: GlaPrefillChunkWorkspaceBytes must see the same values.
  int plan_segments = 0;
  int plan_split_prep = 0;
};
inline constexpr int kChunkMaxSegments = 64;

// Backward of the chunkwise operator for many sequences packed in one launch (fine-tuning): the
// gradients of every row and of the initial states, from the upstream gradients of every output row
// (d_o) and of the final states (d_ht). Sequence n is rows [cu_seqlens[n], cu_seqlens[n+1]), as in
// GlaPrefillCudaParams; states are [num_seqs, H, dk, dv] arrays (no pool slots: training owns them).
// Per sequence it equals cpu::GlaBackwardNaive: GQA gradients of k, v, g are summed over the heads
// of a group. The forward's output o is not needed (nor read).
struct GlaBackwardCudaParams : GlaPrefillCudaParams {
  // From the forward's params (the base): the input rows q [T, H, dk], k and g [T, Hkv, dk],
  // v [T, Hkv, dv] (o is not used), num_seqs, heads, cu_seqlens, scale; and total_tokens (a host
  // copy of cu_seqlens[num_seqs], or an upper bound) with a device workspace of at least
  // GlaBackwardChunkWorkspaceBytes(*this, total_tokens) bytes, 256-byte aligned. state and slots
  // are not used: training owns its states (h0 below).
  const float* h0 = nullptr;  // [num_seqs, H, dk, dv] initial states; nullptr = zero
  // Upstream gradients.
  const float* d_o = nullptr;  // [T, H, dv]
  int64_t d_o_stride = 0;
  const float* d_ht = nullptr;  // [num_seqs, H, dk, dv]; nullptr = the final states are not used
  // Outputs (fp32, every valid row written; none is read).
  float* d_q = nullptr;  // [T, H, dk]
  int64_t d_q_stride = 0;
  float* d_k = nullptr;  // [T, Hkv, dk]
  int64_t d_k_stride = 0;
  float* d_v = nullptr;  // [T, Hkv, dv]
  int64_t d_v_stride = 0;
  float* d_g = nullptr;  // [T, Hkv, dk]  gradient of the log forget gate
  int64_t d_g_stride = 0;
  float* d_h0 = nullptr;  // [num_seqs, H, dk, dv]; nullptr = not wanted
  // A training step's shortcut: true when the last GlaPrefillChunk on this workspace ran on the same
  // q, k, g, cu_seqlens, H, Hkv, dk, scale and total_tokens (the step's forward). Both plans begin
  // with the prep's outputs (bf16 gated q/k, the intra-chunk matrix, the chunk decays), so the
  // backward reads them instead of recomputing them (~10% of its time at gla-1.3B heads).
  bool reuse_forward_prep = false;
};

namespace cuda {
// Fused-recurrent prefill: the state stays in registers while the kernel walks the tokens
// (the simple GPU form; the tensor-core chunkwise kernel is tested against it). Unsupported
// shapes (dk > 512, dv % 4 != 0, H % Hkv != 0) are cudaErrorInvalidValue with no launch.
cudaError_t GlaPrefillRecurrent(const GlaPrefillCudaParams& p, cudaStream_t stream);

// Tensor-core chunkwise prefill (kernels/cuda/gla_prefill_chunk.cu): same semantics as
// GlaPrefillRecurrent, bf16 matmuls with fp32 accumulation and an fp32 state (relative error
// ~1e-3 against the fp32 definition). Chunks of 64 tokens, sub-chunks of 16; no per-chunk states
// are written: the workspace holds bf16 gated q/k, the intra-chunk attention matrix, per-chunk
// decays and, when few sequences are packed, the states of sequence segments run in parallel.
// Supported: dk in {64, 128, 256}, dv % 4 == 0 (tiles of 64 columns), H % Hkv == 0, q/k/g/v/o
// 16-byte aligned with strides % 4 == 0; anything else is cudaErrorInvalidValue with no launch,
// as is a workspace smaller than GlaPrefillChunkWorkspaceBytes(p, p.total_tokens).
cudaError_t GlaPrefillChunk(const GlaPrefillCudaParams& p, cudaStream_t stream);
// The largest gate rank GlaPrefillChunk makes the gate for itself (GlaPrefillCudaParams::gate): its
// factors are staged in shared memory the prep kernel has free while it loads (fla's GLA
// checkpoints use 16); a larger rank is cudaErrorInvalidValue.
constexpr int kChunkPrepMaxGateRank = 32;
// Workspace bytes GlaPrefillChunk needs for this shape and at most total_tokens packed tokens on
// the current device (the plan depends on its multiprocessor count).
size_t GlaPrefillChunkWorkspaceBytes(const GlaPrefillCudaParams& p, int total_tokens);
// The plan GlaPrefillChunk takes for p and total_tokens (its own, or the one plan_* forces), for
// benchmarks to print: tokens a segment (0 when sequences are not cut) and the prep kernel in clusters.
struct GlaChunkPlanInfo {
  int64_t segment_tokens = 0;
  bool split_prep = false;
};
GlaChunkPlanInfo GlaPrefillChunkPlan(const GlaPrefillCudaParams& p, int total_tokens);
// Whether the chunkwise kernels (forward and backward) take head dimension dk: 64, 128 or 256.
bool GlaChunkHeadDimSupported(int dk);

// Tensor-core chunkwise backward (kernels/cuda/gla_backward_chunk.cu): chunks of 64, sub-chunks of
// 16, bf16 mma.sync with fp32 accumulation, fp32 gradients out (relative error ~2e-3 against the
// fp32 definition; dg, a long reverse cumsum of cancelling terms, ~1e-2). The chunk-boundary
// states and their gradients are recomputed from q/k/v/g by two scans (the forward saves none) and
// stored in bf16 in the workspace for the parallel per-chunk gradient kernels.
// Supported: dk in {64, 128, 256} (the forward's prep kernel and the 64-column tiles), dv % 64 == 0
// (64-column tiles, no column masking), H % Hkv == 0, every row array 16-byte aligned with strides
// % 4 == 0 (float4 access); anything else, or a workspace smaller than
// GlaBackwardChunkWorkspaceBytes(p, p.total_tokens), is cudaErrorInvalidValue with no launch.
cudaError_t GlaBackwardChunk(const GlaBackwardCudaParams& p, cudaStream_t stream);
// Workspace bytes GlaBackwardChunk needs for this shape and at most total_tokens packed tokens:
// the forward's prep outputs, two bf16 states per chunk and head (~4 dk dv bytes per 64 tokens and
// head: most of it), bf16 copies of v and d_o, the intra-chunk gradient, per-head dg partial sums,
// and per-head k/v gradients when H > Hkv.
size_t GlaBackwardChunkWorkspaceBytes(const GlaBackwardCudaParams& p, int total_tokens);

// cudaErrorInvalidValue (and no launch) for shapes it does not support: dv % 4 != 0, dk > 1024,
// H % Hkv != 0. Otherwise the launch's own status.
cudaError_t GlaDecodeStep(const GlaDecodeCudaParams& p, cudaStream_t stream);
}  // namespace cuda
#endif  // GLA_HAVE_CUDA

}  // namespace gla
