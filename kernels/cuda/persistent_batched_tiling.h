// How the batched persistent decode kernel (persistent_decode_batched.cu) cuts a weight matrix into
// tiles and lays out its shared memory: plain arithmetic, host and device, so the host tests check
// its invariants (tests/unit/persistent_decode_shapes_test.cc) and the kernel uses the same code.
//
// A tile is a group of up to 16 rows of a matrix (gate|up: 8 gate rows and their 8 up rows) times one
// segment of K: at most kBatchedMaxSegBytes (2,048) of each row, a multiple of 128 bytes except the
// row's last, so a tile fills most of one stage whatever K is (2,048- and 1,024-wide bf16 rows fill it
// whole: 2 segments and 1). In the stage, row u starts at u * stride, stride =
// seg_bytes + 64: rows 64 mod 128 bytes apart, which keeps the mma operand loads (rows g and g + 1,
// 16-byte chunks t = 0-3 in one load phase) on 8 different bank groups. The input rows (one per
// sequence) are padded the same way.
#pragma once

#include "kernels/host_device.h"

namespace gla::cuda::persistent {

constexpr int kBatchedGroupRows = 16;  // the mma's m
constexpr int kBatchedPad = 64;
constexpr int kBatchedMaxSegBytes = 2048;
constexpr int kBatchedStageBytes = kBatchedGroupRows * (kBatchedMaxSegBytes + kBatchedPad);  // 33,792
constexpr int kBatchedMinStages = 2, kBatchedMaxStages = 6;
constexpr int kBatchedSmemLimit = 227 * 1024;  // sm_90's opt-in shared memory per block

GLA_HOST_DEVICE constexpr int RoundUpTo(int v, int to) { return (v + to - 1) / to * to; }

struct SegmentTiling {
  int group = kBatchedGroupRows;  // rows (gate|up: pairs) per group
  int seg_bytes = 0;              // bytes of a row in a full segment
  int segs = 1;                   // segments per row
  int stride = 0;                 // bytes between a tile's rows in a stage
  int row_bytes = 0;

  GLA_HOST_DEVICE int SegLen(int sg) const {
    const int rest = row_bytes - sg * seg_bytes;
    return rest < seg_bytes ? rest : seg_bytes;
  }
};

// The longest segment for PersistentDecodeParams::tile_bytes (0: kBatchedMaxSegBytes): a 16-row
// tile of at most tile_bytes, in 128-byte multiples, at least 128.
GLA_HOST_DEVICE inline int BatchedMaxSegBytes(int tile_bytes) {
  if (tile_bytes <= 0) return kBatchedMaxSegBytes;
  const int seg = tile_bytes / kBatchedGroupRows / 128 * 128;
  return seg < 128 ? 128 : seg > kBatchedMaxSegBytes ? kBatchedMaxSegBytes : seg;
}

// row_bytes: a multiple of 16, at least 16. Segments as even as 128-byte multiples allow, none
// longer than max_seg (a multiple of 128, at most kBatchedMaxSegBytes: BatchedMaxSegBytes).
GLA_HOST_DEVICE inline SegmentTiling MakeSegmentTiling(int row_bytes, bool pair, int max_seg = kBatchedMaxSegBytes) {
  SegmentTiling t;
  t.row_bytes = row_bytes;
  t.group = pair ? kBatchedGroupRows / 2 : kBatchedGroupRows;
  const int even = (row_bytes + max_seg - 1) / max_seg;
  const int per = RoundUpTo((row_bytes + even - 1) / even, 128);
  t.seg_bytes = per < max_seg ? per : max_seg;
  t.segs = (row_bytes + t.seg_bytes - 1) / t.seg_bytes;
  t.stride = t.seg_bytes + kBatchedPad;
  return t;
}

// The block's dynamic shared memory: `fixed_bytes` (barriers, partial sums, the state update's
// scratch, the residual rows), then `batch` input rows of the widest of D, I and H dv (bf16), then
// as many stages as fit, at most kBatchedMaxStages.
struct BatchedLayout {
  int row_stride = 0;  // bytes from one sequence's input row to the next
  int rows_offset = 0;
  int stages_offset = 0;
  int stages = 0;
  int bytes = 0;
};

GLA_HOST_DEVICE inline BatchedLayout MakeBatchedLayout(int widest, int batch, int fixed_bytes) {
  BatchedLayout l;
  l.row_stride = RoundUpTo(2 * widest, 128) + kBatchedPad;
  l.rows_offset = RoundUpTo(fixed_bytes, 128);
  l.stages_offset = RoundUpTo(l.rows_offset + batch * l.row_stride, 128);
  const int fit = (kBatchedSmemLimit - l.stages_offset) / kBatchedStageBytes;
  l.stages = fit < kBatchedMaxStages ? fit : kBatchedMaxStages;
  l.bytes = l.stages_offset + l.stages * kBatchedStageBytes;
  return l;
}

// The state update's items of a step: batch x H heads x cols 16-column slabs, numbered head-major
// (a head's items are the batch's sequences' slabs in turn), so a block's contiguous run of items
// mostly shares one (sequence, head). Item `it` -> its sequence (*seq) and its item within that
// sequence (head * cols + slab), as StateRows::LoadRows numbers them.
GLA_HOST_DEVICE inline int BatchedStateItem(int it, int cols, int batch, int* seq) {
  *seq = (it / cols) % batch;
  return it / (cols * batch) * cols + it % cols;
}

// Block b's run of the step's items: [*i0, *i1), the blocks' runs as even as whole items allow.
GLA_HOST_DEVICE inline void BatchedStateRun(int items, int b, int G, int* i0, int* i1) {
  *i0 = static_cast<int>(static_cast<long long>(items) * b / G);
  *i1 = static_cast<int>(static_cast<long long>(items) * (b + 1) / G);
}

}  // namespace gla::cuda::persistent
