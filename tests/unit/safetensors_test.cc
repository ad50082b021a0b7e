// safetensors: the writer round-trips; every kind of corrupt header is refused by name.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "models/safetensors.h"
#include "models/tensor_store.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

std::string WriteRaw(const std::string& name, const std::string& header, size_t data_bytes,
                     uint64_t claimed_len = UINT64_MAX) {
  const std::string path = testing::MakeTempDir("st") + "/" + name;
  std::ofstream out(path, std::ios::binary);
  // Padded with spaces to a multiple of 8, as writers do (the data section starts aligned).
  const std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  const uint64_t len = claimed_len == UINT64_MAX ? padded.size() : claimed_len;
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(len >> (8 * i)));
  out << padded << std::string(data_bytes, '\0');
  return path;
}

std::string OpenError(const std::string& path) {
  auto f = SafetensorsFile::Open(path);
  return f.ok() ? "" : std::string(f.status().message());
}

TEST(Safetensors, WriteThenReadRoundTrips) {
  const std::string dir = testing::MakeTempDir("roundtrip");
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 5.0f, 6.0f};
  const std::vector<uint16_t> b = {FloatToBFloat16(1.0f), FloatToBFloat16(-0.5f), FloatToBFloat16(3.0f)};
  const std::vector<TensorToWrite> ts = {
      F32Tensor("a", {2, 3}, a),
      {"b", DType::kBF16, {3}, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(b.data()), 6)}};
  ASSERT_TRUE(WriteSafetensors(dir + "/x.safetensors", ts, {{"format", "pt"}}).ok());
  auto f = SafetensorsFile::Open(dir + "/x.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->metadata().at("format"), "pt");
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->Find("a")->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(*ToFloat32(*f->Find("a")), a);
  EXPECT_EQ(*ToFloat32(*f->Find("b")), (std::vector<float>{1.0f, -0.5f, 3.0f}));
  EXPECT_FALSE(ToInt64(*f->Find("a")).ok());  // a float tensor is not read as ids
}

TEST(Safetensors, HalfAndBFloat16Conversions) {
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7C00)));
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + 1.0f / 256)), 1.0f);  // ties to even
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(NAN))));
}

// FP8 E4M3 (fn), as torch.float8_e4m3fn defines it: bias 7, subnormals below 2^-6, no infinities,
// S.1111.111 the only NaNs, 448 the largest finite value.
TEST(Safetensors, Float8E4M3Conversions) {
  EXPECT_EQ(Float8E4M3ToFloat(0x38), 1.0f);
  EXPECT_EQ(Float8E4M3ToFloat(0xC0), -2.0f);
  EXPECT_EQ(Float8E4M3ToFloat(0x7E), 448.0f);
  EXPECT_EQ(Float8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(Float8E4M3ToFloat(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_TRUE(std::isnan(Float8E4M3ToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(Float8E4M3ToFloat(0xFF)));
  for (int c = 0; c < 256; ++c) {  // every finite code comes back as itself (and codes order their values)
    if ((c & 0x7F) == 0x7F) continue;
    EXPECT_EQ(FloatToFloat8E4M3(Float8E4M3ToFloat(static_cast<uint8_t>(c))), c) << c;
    if ((c & 0x7F) > 0 && (c & 0x7F) < 0x7E) {
      EXPECT_LT(std::fabs(Float8E4M3ToFloat(static_cast<uint8_t>(c))),
                std::fabs(Float8E4M3ToFloat(static_cast<uint8_t>(c + 1))));
    }
  }
  EXPECT_EQ(FloatToFloat8E4M3(1.0f + 1.0f / 16), 0x38);  // halfway between 1 and 1.125: to even (1)
  EXPECT_EQ(FloatToFloat8E4M3(1.0f + 3.0f / 16), 0x3A);  // halfway between 1.125 and 1.25: to even (1.25)
  EXPECT_EQ(FloatToFloat8E4M3(1.0f + 1.0f / 15), 0x39);  // nearer 1.125
  EXPECT_EQ(FloatToFloat8E4M3(1e9f), 0x7E);              // saturates
  EXPECT_EQ(FloatToFloat8E4M3(-1e9f), 0xFE);
  EXPECT_EQ(FloatToFloat8E4M3(std::numeric_limits<float>::infinity()), 0x7E);
  EXPECT_EQ(FloatToFloat8E4M3(NAN), 0x7F);
  EXPECT_EQ(FloatToFloat8E4M3(std::ldexp(1.0f, -11)), 0x00);  // a quarter of the smallest subnormal
  EXPECT_EQ(FloatToFloat8E4M3(-0.0f), 0x80);
}

TEST(Safetensors, ReadsTheReferenceCheckpoint) {
  auto f = SafetensorsFile::Open(testing::TinyModelDir() + "/model.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors().size(), 31u);
}

struct CorruptCase {
  const char* what;
  std::string header;
  size_t data_bytes;
  uint64_t claimed_len;
  const char* expect;  // a piece of the one-line message
};

class CorruptHeader : public ::testing::TestWithParam<CorruptCase> {};

TEST_P(CorruptHeader, IsRefusedWithItsReason) {
  const CorruptCase& c = GetParam();
  const std::string msg = OpenError(WriteRaw("bad.safetensors", c.header, c.data_bytes, c.claimed_len));
  EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << ": got '" << msg << "'";
  EXPECT_EQ(msg.find('\n'), std::string::npos);
}

const std::string kGood = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
INSTANTIATE_TEST_SUITE_P(
    Cases, CorruptHeader,
    ::testing::Values(
        CorruptCase{"huge header length", kGood, 8, uint64_t{1} << 40, "exceeds the limit"},
        CorruptCase{"header past end", kGood, 8, 4096, "runs past the end"},
        CorruptCase{"not json", "{\"w\": [", 0, UINT64_MAX, "not valid JSON"},
        CorruptCase{"not an object", "[1,2]", 0, UINT64_MAX, "not a JSON object"},
        CorruptCase{"offsets past end", kGood, 4, UINT64_MAX, "run past the end of the data section"},
        CorruptCase{"dtype x shape", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, UINT64_MAX,
                    "does not match"},
        CorruptCase{"wrong dtype", R"({"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8, UINT64_MAX,
                    "unknown dtype 'F33'"},
        CorruptCase{"negative dim", R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, UINT64_MAX,
                    "non-negative"},
        CorruptCase{"overflowing shape",
                    R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8,
                    UINT64_MAX, "overflows"},
        // Found by safetensors_fuzz: 2^32-1 x 2^32 fits uint64 but overflowed numel()'s int64 (UB),
        // though the trailing 0 makes the tensor empty.
        CorruptCase{"int64-overflowing partial shape",
                    R"({"w":{"dtype":"U8","shape":[4294967295,4294967296,0],"data_offsets":[0,0]}})", 0,
                    UINT64_MAX, "overflows"},
        CorruptCase{"reversed offsets", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, UINT64_MAX,
                    "invalid data_offsets"},
        CorruptCase{"overlap",
                    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    12, UINT64_MAX, "overlap"},
        CorruptCase{"duplicate",
                    R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    8, UINT64_MAX, "duplicate tensor name 'a'"},
        CorruptCase{"missing offsets", R"({"w":{"dtype":"F32","shape":[2]}})", 8, UINT64_MAX, "data_offsets"},
        // A header length cut inside the header's padding: the JSON still parses, and the data
        // section would start 8 bytes early (every tensor read off). Padded to 64 bytes here.
        CorruptCase{"length cut in the padding", kGood + std::string(64 - kGood.size(), ' '), 8, 56,
                    "the tensors cover 8 bytes of the 16-byte data section"},
        CorruptCase{"unaligned length", kGood + std::string(64 - kGood.size(), ' '), 8, 61, "not a multiple of 8"},
        CorruptCase{"gap between tensors",
                    R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                    12, UINT64_MAX, "bytes [4, 8) of the data section belong to no tensor"},
        CorruptCase{"bytes after the last tensor", kGood, 16, UINT64_MAX, "cover 8 bytes of the 16-byte"},
        CorruptCase{"data before the first tensor", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
                    UINT64_MAX, "bytes [0, 4)"}));

TEST(Safetensors, TruncatedAndEmptyFiles) {
  EXPECT_NE(OpenError(WriteRaw("empty", "", 0, 0)).find("not valid JSON"), std::string::npos);
  const std::string path = testing::MakeTempDir("trunc") + "/t.safetensors";
  std::ofstream(path, std::ios::binary) << "abc";
  EXPECT_NE(OpenError(path).find("shorter than"), std::string::npos);
  EXPECT_NE(OpenError("/nonexistent/x.safetensors").find("cannot open"), std::string::npos);
}

TEST(TensorStore, ShardedIndexIsFollowedAndChecked) {
  const std::string dir = testing::MakeTempDir("shards");
  const std::vector<float> a = {1, 2}, b = {3};
  const TensorToWrite ta = F32Tensor("a", {2}, a), tb = F32Tensor("b", {1}, b);
  ASSERT_TRUE(WriteSafetensors(dir + "/s1.safetensors", std::span(&ta, 1)).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/s2.safetensors", std::span(&tb, 1)).ok());
  auto write_index = [&](const std::string& text) { std::ofstream(dir + "/model.safetensors.index.json") << text; };
  write_index(R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  auto store = TensorStore::OpenDir(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*ToFloat32(*store->Find("b")), b);
  write_index(R"({"weight_map": {"a": "s2.safetensors", "b": "s2.safetensors"}})");
  EXPECT_NE(std::string(TensorStore::OpenDir(dir).status().message()).find("'a' is not in shard s2"), std::string::npos);
  write_index(R"({"weight_map": {"a": "../s1.safetensors"}})");
  EXPECT_NE(std::string(TensorStore::OpenDir(dir).status().message()).find("not a plain file name"), std::string::npos);
  const std::vector<TensorToWrite> both = {ta, F32Tensor("c", {1}, b)};
  ASSERT_TRUE(WriteSafetensors(dir + "/s3.safetensors", both).ok());
  write_index(R"({"weight_map": {"a": "s3.safetensors"}})");
  EXPECT_NE(std::string(TensorStore::OpenDir(dir).status().message()).find("'c' is in a shard but not in weight_map"),
            std::string::npos);
}

}  // namespace
}  // namespace gla
