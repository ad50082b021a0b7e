// Which steps the persistent decode kernels take (kernels/persistent_decode.h): the shape check is
// host code, so it runs here, without a GPU. Batch 1 is the batch-1 kernel's; 2-8 the batched
// kernel's, whose sequences' input rows must fit its shared memory beside at least two weight stages.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "kernels/cuda/persistent_batched_tiling.h"
#include "kernels/cuda/persistent_decode_batched.h"
#include "kernels/persistent_decode.h"

namespace gla {
namespace {

// Pointers the check only compares with null or tests for alignment (never dereferenced).
template <typename T>
T* Fake(uintptr_t at) {
  return reinterpret_cast<T*>(at);
}

// gla-1.3B's decode step (D 2048, I 5632, 4 heads of dk 256 / dv 512, gate rank 16) on 132 SMs.
cuda::PersistentDecodeParams Gla13B(int batch) {
  cuda::PersistentDecodeParams p;
  p.layers = Fake<const cuda::PersistentDecodeLayer>(0x10000);
  p.num_layers = 24;
  p.D = 2048, p.I = 5632;
  p.H = p.Hkv = 4, p.dk = 256, p.dv = 512, p.rank = 16;
  p.q_off = 0, p.k_off = 1024, p.v_off = 2048, p.g_off = 4096, p.r_off = 6144;
  p.P = 6144 + 16;
  p.final_norm = Fake<const float>(0x20000);
  p.lm_head = Fake<const __nv_bfloat16>(0x30000);
  p.vocab = 32000;
  p.state.base = Fake<float>(0x40000);
  p.state.slot_stride = 24 * 4 * 256 * 512;
  p.slots = Fake<const int32_t>(0x50000);
  p.x = Fake<float>(0x60000);
  p.proj = Fake<float>(0x70000);
  p.o = Fake<float>(0x80000);
  p.o_sumsq = Fake<float>(0x88000);
  p.act = Fake<__nv_bfloat16>(0x90000);
  p.logits = Fake<float>(0xa0000);
  p.barrier = Fake<unsigned>(0xb0000);
  p.blocks = 132;
  p.batch = batch;
  return p;
}

TEST(PersistentDecodeShapes, EveryBatchFromOneToTheMostIsTakenAndNoOther) {
  for (int batch = 1; batch <= cuda::kPersistentMaxBatch; ++batch)
    EXPECT_TRUE(cuda::PersistentDecodeShapesSupported(Gla13B(batch))) << "batch " << batch;
  EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(Gla13B(0)));
  EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(Gla13B(-1)));
  EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(Gla13B(cuda::kPersistentMaxBatch + 1)));
}

TEST(PersistentDecodeShapes, TheWidestRowsStillFitEightSequences) {
  // Rows of 8,192 values (the most either kernel takes): 8 x 16 KiB of input rows leave two stages.
  cuda::PersistentDecodeParams p = Gla13B(cuda::kPersistentMaxBatch);
  p.D = p.I = 8192;
  p.H = p.Hkv = 16;
  p.q_off = 0, p.k_off = 4096, p.v_off = 8192, p.g_off = 16384, p.r_off = 24576;
  p.P = 24576 + 16;
  EXPECT_TRUE(cuda::PersistentDecodeShapesSupported(p));
  p.D = 8192 + 8;  // past what a shared-memory row holds
  EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p));
}

TEST(PersistentDecodeShapes, RefusalsHoldForEveryBatch) {
  for (int batch = 1; batch <= cuda::kPersistentMaxBatch; ++batch) {
    cuda::PersistentDecodeParams p = Gla13B(batch);
    p.blocks = 16;  // 128 residual rows a block: more than a block keeps
    EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p)) << "batch " << batch;
    p = Gla13B(batch);
    p.dk = 96;  // the state update takes dk 64, 128 or 256
    EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p)) << "batch " << batch;
    p = Gla13B(batch);
    p.dv = 1024;  // the gate norm keeps a head's row in a warp's registers: dv <= 512
    EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p)) << "batch " << batch;
    p = Gla13B(batch);
    p.slots = nullptr;
    EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p)) << "batch " << batch;
    p = Gla13B(batch);
    p.o_sumsq = nullptr;  // the batched kernel's gate norm needs it; batch 1 does not
    EXPECT_EQ(cuda::PersistentDecodeShapesSupported(p), batch == 1) << "batch " << batch;
  }
}

// The producer's cap on tiles in flight: 0 (the whole ring) up to the ring's stages; more would
// have it wait on a stage's phase that has already turned twice (a hang), less is no number.
TEST(PersistentDecodeShapes, TilesInFlightRangeFromZeroToTheRingsStages) {
  for (int batch = 1; batch <= cuda::kPersistentMaxBatch; ++batch) {
    cuda::PersistentDecodeParams p = Gla13B(batch);
    const int stages = cuda::PersistentDecodeStages(p);
    EXPECT_GE(stages, batch == 1 ? 6 : cuda::persistent::kBatchedMinStages) << "batch " << batch;
    for (int n = 0; n <= stages; ++n) {
      p.tiles_in_flight = n;
      EXPECT_TRUE(cuda::PersistentDecodeShapesSupported(p)) << "batch " << batch << ", " << n << " in flight";
    }
    p.tiles_in_flight = stages + 1;
    EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p)) << "batch " << batch;
    p.tiles_in_flight = -1;
    EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p)) << "batch " << batch;
  }
}

// The batched kernel's tiles (persistent_batched_tiling.h) for every row width either kernel takes,
// bf16 (2 bytes a weight) and one-byte rows, plain and gate|up, at the default segment cap and the
// finer ones PersistentDecodeParams::tile_bytes asks for: the segments cover each row exactly, full
// segments are 128-byte multiples no longer than the cap, every row of a tile starts 64 mod 128
// bytes after the one before (the bank-conflict-free loads), and the largest tile fits a stage.
TEST(PersistentDecodeShapes, BatchedTilesCoverEveryRowOnceAndFitAStage) {
  using namespace cuda::persistent;  // NOLINT
  for (const int tile_bytes : {0, 16384, 8192, 2048}) {
    const int max_seg = BatchedMaxSegBytes(tile_bytes);
    for (int k = 8; k <= 8192; k += 8)
      for (const int bytes_per_weight : {1, 2})
        for (const bool pair : {false, true}) {
          const int row_bytes = k * bytes_per_weight;
          if (row_bytes % 16 != 0) continue;  // one-byte rows come in 16-byte chunks (k % 16 == 0)
          const SegmentTiling t = MakeSegmentTiling(row_bytes, pair, max_seg);
          SCOPED_TRACE(testing::Message() << "row bytes " << row_bytes << (pair ? " gate|up" : "") << ", tile bytes "
                                          << tile_bytes);
          int covered = 0;
          for (int sg = 0; sg < t.segs; ++sg) {
            const int len = t.SegLen(sg);
            ASSERT_GT(len, 0);
            ASSERT_EQ(len % 16, 0);
            if (sg + 1 < t.segs) {
              ASSERT_EQ(len, t.seg_bytes);
            }
            covered += len;
          }
          EXPECT_EQ(covered, row_bytes);
          EXPECT_EQ(t.seg_bytes % 128, 0);
          EXPECT_LE(t.seg_bytes, max_seg);
          EXPECT_EQ(t.stride % 128, 64);
          EXPECT_EQ(t.group, pair ? 8 : 16);
          EXPECT_LE((kBatchedGroupRows - 1) * t.stride + t.seg_bytes, kBatchedStageBytes);  // up rows from 8 too
          if (tile_bytes > 0) {
            EXPECT_LE(kBatchedGroupRows * t.seg_bytes, tile_bytes);
          }
          // As even as 128-byte multiples allow: no more segments than whole ones would need.
          EXPECT_EQ(t.segs, (row_bytes + max_seg - 1) / max_seg);
        }
  }
  // The models' 2,048- and 1,024-wide bf16 rows fill whole stages (2 segments and 1 of 2,048 bytes).
  for (const int row_bytes : {4096, 2048}) {
    const SegmentTiling t = MakeSegmentTiling(row_bytes, false);
    EXPECT_EQ(t.seg_bytes, 2048) << row_bytes;
    EXPECT_EQ(t.segs, row_bytes / 2048) << row_bytes;
  }
  EXPECT_EQ(BatchedMaxSegBytes(0), kBatchedMaxSegBytes);
  EXPECT_EQ(BatchedMaxSegBytes(32768), kBatchedMaxSegBytes);
  EXPECT_EQ(BatchedMaxSegBytes(16384), 1024);
  EXPECT_EQ(BatchedMaxSegBytes(3072), 128);  // 192 a row: down to a 128-byte multiple
}

// PersistentDecodeParams::tile_bytes: 0 (the kernels' own tiles) or 2 KiB to 96 KiB in 1 KiB steps.
TEST(PersistentDecodeShapes, TileBytesAreZeroOrWholeKibibytesFromTwoToNinetySix) {
  for (int batch = 1; batch <= cuda::kPersistentMaxBatch; ++batch) {
    cuda::PersistentDecodeParams p = Gla13B(batch);
    for (const int bytes : {0, 2048, 3072, 16384, 32768, 33792, 65536, 98304}) {
      p.tile_bytes = bytes;
      p.tiles_in_flight = 1;
      EXPECT_TRUE(cuda::PersistentDecodeShapesSupported(p)) << "batch " << batch << ", " << bytes;
    }
    for (const int bytes : {-1, 1024, 2047, 2560, 65537, 99328, 131072}) {
      p.tile_bytes = bytes;
      EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p)) << "batch " << batch << ", " << bytes;
    }
  }
}

// Tiles above 32 KiB: the batch-1 kernel cuts its 192 KiB ring into stages of the cap (so fewer of
// them, and tiles_in_flight past them refused); the batched kernel keeps its own stages, its segments
// capped at 2 KiB whatever the cap.
TEST(PersistentDecodeShapes, LargerTilesMeanFewerBatchOneStages) {
  cuda::PersistentDecodeParams p = Gla13B(1);
  for (const auto& [bytes, stages] : {std::pair{0, 6}, std::pair{16384, 6}, std::pair{32768, 6}, std::pair{33792, 5},
                                      std::pair{49152, 4}, std::pair{65536, 3}, std::pair{98304, 2}}) {
    p.tile_bytes = bytes;
    EXPECT_EQ(cuda::PersistentDecodeStages(p), stages) << bytes;
    p.tiles_in_flight = stages;
    EXPECT_TRUE(cuda::PersistentDecodeShapesSupported(p)) << bytes;
    p.tiles_in_flight = stages + 1;
    EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p)) << bytes;
    p.tiles_in_flight = 0;
  }
  for (const int batch : {2, 8}) {
    cuda::PersistentDecodeParams q = Gla13B(batch);
    const int own = cuda::PersistentDecodeStages(q);
    q.tile_bytes = 98304;
    EXPECT_EQ(cuda::PersistentDecodeStages(q), own) << "batch " << batch;
  }
  EXPECT_EQ(cuda::persistent::BatchedMaxSegBytes(98304), cuda::persistent::kBatchedMaxSegBytes);
}

// Tagged exchanges (PersistentDecodeParams::tagged): D at most 2,048 (a consumer thread's eight
// values), D and I at least the blocks (each block writes some of every exchange), 8-byte words.
TEST(PersistentDecodeShapes, TaggedExchangesWantDUpTo2048AndEveryBlockAWriter) {
  cuda::PersistentDecodeParams p = Gla13B(1);  // D = 2,048, I = 5,632, 132 blocks
  EXPECT_TRUE(cuda::PersistentTaggedExchangeSupported(p));
  EXPECT_EQ(cuda::PersistentTaggedWords(p), 2048 + 5632);
  EXPECT_EQ(cuda::PersistentTaggedWords(Gla13B(8)), 8 * (2048 + 5632));  // x's and act's words per sequence
  p.tagged_proj = true;  // in_proj's values as tagged words need the tagged words
  EXPECT_EQ(cuda::PersistentTaggedWords(p), 2048 + 5632 + 6160);
  EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p));
  p.tagged = Fake<unsigned long long>(0x50000);
  EXPECT_TRUE(cuda::PersistentDecodeShapesSupported(p));
  p.tagged_residual = false;  // in_proj's values alone (x and act through barriers)
  EXPECT_TRUE(cuda::PersistentDecodeShapesSupported(p));
  p.tagged_proj = false;  // tagged words with nothing to carry
  EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p));
  p.tagged_residual = true;
  EXPECT_TRUE(cuda::PersistentDecodeShapesSupported(p));
  p.tagged = Fake<unsigned long long>(0x50004);  // not 8-byte aligned
  EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p));
  p.tagged = Fake<unsigned long long>(0x50000);
  p.D = 2048 + 8;  // past a thread's eight values
  EXPECT_FALSE(cuda::PersistentTaggedExchangeSupported(p));
  EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p));
  p.tagged = nullptr;  // without tagged words the same shapes are fine
  EXPECT_TRUE(cuda::PersistentDecodeShapesSupported(p));
  p = Gla13B(1);
  p.I = 64;  // fewer gate|up rows than blocks: a block would write none of the activations
  EXPECT_FALSE(cuda::PersistentTaggedExchangeSupported(p));
}

// The tagged exchanges' tags: within a step all distinct; no tag of a step equals one of the step
// before (a word's last tag), at the first steps and across the 32-bit wrap, for 1 to 48 layers; no
// tag is 0 (what zeroed words hold).
TEST(PersistentDecodeShapes, ExchangeTagsNeverRepeatAWordsLastTag) {
  for (const int layers : {1, 2, 24, 48, 49})
    for (const unsigned step : {0u, 1u, 2u, 1000u, 0x7fffffffu / static_cast<unsigned>(5 * layers + 8),
                                0xffffffffu / static_cast<unsigned>(5 * layers + 8), 0x80000000u, 0xffffffffu - 1,
                                0xffffffffu}) {
      std::set<unsigned> now, before;
      for (int l = 0; l < layers; ++l)
        for (int e = 0; e < 5; ++e) {
          now.insert(cuda::PersistentExchangeTag(step, layers, l, e));
          before.insert(cuda::PersistentExchangeTag(step - 1, layers, l, e));
        }
      EXPECT_EQ(now.size(), static_cast<size_t>(5 * layers)) << layers << " layers, step " << step;
      EXPECT_EQ(now.count(0u), 0u) << layers << " layers, step " << step;
      for (const unsigned t : now) EXPECT_EQ(before.count(t), 0u) << layers << " layers, step " << step << ", tag " << t;
    }
}

// A requested grid (CudaModelOptions::persistent_blocks): 0 for one block per SM, else 1-1024 (capped at
// the SMs by the caller); the shape check then wants each block's rows of the residual to fit.
TEST(PersistentDecodeShapes, GridsAreZeroOrUpTo1024AndOwnAtMost64ResidualRows) {
  EXPECT_TRUE(cuda::PersistentBlocksValid(0));
  EXPECT_TRUE(cuda::PersistentBlocksValid(1));
  EXPECT_TRUE(cuda::PersistentBlocksValid(cuda::kPersistentMaxBlocks));
  EXPECT_FALSE(cuda::PersistentBlocksValid(-1));
  EXPECT_FALSE(cuda::PersistentBlocksValid(cuda::kPersistentMaxBlocks + 1));
  for (const int batch : {1, 4}) {
    cuda::PersistentDecodeParams p = Gla13B(batch);  // D = 2048: 32 blocks own 64 rows each
    for (const int blocks : {32, 66, 132}) {
      p.blocks = blocks;
      EXPECT_TRUE(cuda::PersistentDecodeShapesSupported(p)) << "batch " << batch << ", " << blocks;
    }
    p.blocks = 31;
    EXPECT_FALSE(cuda::PersistentDecodeShapesSupported(p)) << "batch " << batch;
  }
}

// The batched kernel's state items: the blocks' runs cover every item of the step once, and the
// numbering reaches every (sequence, head, slab) once, a run's items mostly of one (sequence, head).
TEST(PersistentDecodeShapes, BatchedStateItemsAreEachUpdatedOnce) {
  using namespace cuda::persistent;  // NOLINT
  for (const int batch : {2, 3, 5, 8})
    for (const auto& [heads, cols] : {std::pair{4, 32}, std::pair{4, 16}, std::pair{2, 16}, std::pair{16, 4}}) {
      SCOPED_TRACE(testing::Message() << "batch " << batch << ", " << heads << " heads of " << cols << " slabs");
      const int items = batch * heads * cols;
      std::vector<int> seen(static_cast<size_t>(items), 0);
      int next = 0, head_changes = 0;
      for (int b = 0; b < 132; ++b) {
        int i0, i1;
        BatchedStateRun(items, b, 132, &i0, &i1);
        EXPECT_EQ(i0, next);  // contiguous, in order, no gap
        next = i1;
        int last = -1;
        for (int it = i0; it < i1; ++it) {
          int seq = -1;
          const int local = BatchedStateItem(it, cols, batch, &seq);
          ASSERT_GE(seq, 0);
          ASSERT_LT(seq, batch);
          ASSERT_GE(local, 0);
          ASSERT_LT(local, heads * cols);
          ++seen[static_cast<size_t>(seq) * heads * cols + local];
          const int pair = seq * heads + local / cols;
          head_changes += last >= 0 && pair != last;
          last = pair;
        }
      }
      EXPECT_EQ(next, items);
      for (int i = 0; i < items; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], 1) << "item " << i;
      // Consecutive items change (sequence, head) once per cols of them at most.
      EXPECT_LE(head_changes, items / cols);
    }
}

// The batched kernel's shared memory: gla-1.3B's input rows padded to 64 mod 128 bytes apart, the
// stages after them, within the limit; 3 stages at batch 8 (the 5,632-wide rows), more at batch 2.
TEST(PersistentDecodeShapes, BatchedLayoutsFitAndPadTheRows) {
  using namespace cuda::persistent;  // NOLINT
  for (int batch = 2; batch <= cuda::kPersistentMaxBatch; ++batch) {
    const BatchedLayout l = BatchedLayoutFor(Gla13B(batch));
    SCOPED_TRACE(testing::Message() << "batch " << batch);
    EXPECT_EQ(l.row_stride % 128, 64);
    EXPECT_GE(l.row_stride, 2 * 5632);
    EXPECT_EQ(l.rows_offset % 128, 0);
    EXPECT_EQ(l.stages_offset % 128, 0);
    EXPECT_GE(l.stages_offset, l.rows_offset + batch * l.row_stride);
    EXPECT_GE(l.stages, kBatchedMinStages);
    EXPECT_LE(l.stages, kBatchedMaxStages);
    EXPECT_EQ(l.bytes, l.stages_offset + l.stages * kBatchedStageBytes);
    EXPECT_LE(l.bytes, kBatchedSmemLimit);
  }
  EXPECT_EQ(BatchedLayoutFor(Gla13B(8)).stages, 3);
  EXPECT_EQ(BatchedLayoutFor(Gla13B(2)).stages, 5);
}

}  // namespace
}  // namespace gla
