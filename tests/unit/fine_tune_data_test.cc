// CreateFineTuneJob's data and options: a data_file confined to the data directory (absolute
// paths, '..', symbolic links out, look-alike sibling directories), line documents, and the
// hyper-parameter defaults the proto documents.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "server/fine_tune_data.h"
#include "server/fine_tune_service.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

namespace fs = std::filesystem;

void Write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

class DataFile : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir("finetune-data");
    dir_ = root_ + "/data";
    Write(dir_ + "/train.txt", "one\ntwo\n");
    Write(dir_ + "/sub/nested.txt", "three\n");
    Write(root_ + "/secret.txt", "outside\n");
    Write(root_ + "/data-other/x.txt", "sibling\n");  // shares the data dir's name as a prefix
    fs::create_symlink(root_ + "/secret.txt", dir_ + "/link-out.txt");
    fs::create_symlink(root_, dir_ + "/dir-out");
    fs::create_symlink("train.txt", dir_ + "/link-in.txt");
  }
  absl::StatusCode Code(const std::string& rel) { return ResolveDataFile(dir_, rel).status().code(); }
  std::string root_, dir_;
};

TEST_F(DataFile, ResolvesFilesInsideTheDirectory) {
  auto p = ResolveDataFile(dir_, "train.txt");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, fs::canonical(dir_ + "/train.txt"));
  EXPECT_TRUE(ResolveDataFile(dir_, "sub/nested.txt").ok());
  EXPECT_TRUE(ResolveDataFile(dir_, "./sub/nested.txt").ok());
  EXPECT_TRUE(ResolveDataFile(dir_ + "/", "train.txt").ok());
  auto in = ResolveDataFile(dir_, "link-in.txt");  // a link that stays inside is fine
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(*in, fs::canonical(dir_ + "/train.txt"));
}

TEST_F(DataFile, RefusesEverythingElse) {
  using absl::StatusCode;
  EXPECT_EQ(Code(""), StatusCode::kInvalidArgument);
  EXPECT_EQ(Code(root_ + "/secret.txt"), StatusCode::kInvalidArgument);  // absolute
  EXPECT_EQ(Code(dir_ + "/train.txt"), StatusCode::kInvalidArgument);    // absolute, even inside
  EXPECT_EQ(Code("../secret.txt"), StatusCode::kInvalidArgument);
  EXPECT_EQ(Code("sub/../../secret.txt"), StatusCode::kInvalidArgument);
  EXPECT_EQ(Code("sub/../train.txt"), StatusCode::kInvalidArgument);  // any '..' at all
  EXPECT_EQ(Code("../data-other/x.txt"), StatusCode::kInvalidArgument);
  EXPECT_EQ(Code("link-out.txt"), StatusCode::kInvalidArgument);        // symlink escaping
  EXPECT_EQ(Code("dir-out/secret.txt"), StatusCode::kInvalidArgument);  // through a linked directory
  EXPECT_EQ(Code("missing.txt"), StatusCode::kInvalidArgument);
  EXPECT_EQ(Code("sub"), StatusCode::kInvalidArgument);  // not a regular file
  EXPECT_EQ(Code(std::string("train.txt\0x", 11)), StatusCode::kInvalidArgument);
  const std::string msg(ResolveDataFile(dir_, "link-out.txt").status().message());
  EXPECT_NE(msg.find("data_file"), std::string::npos) << msg;
  EXPECT_NE(msg.find("outside"), std::string::npos) << msg;
  // No data directory: no data_file at all.
  EXPECT_EQ(ResolveDataFile("", "train.txt").status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(DataFile, ReadsOneDocumentPerLine) {
  Write(dir_ + "/lines.txt", "first line\r\n\nsecond\n  \nlast without newline");
  auto docs = ReadLineDocuments(dir_ + "/lines.txt", 1000);
  ASSERT_TRUE(docs.ok()) << docs.status();
  EXPECT_EQ(*docs, (std::vector<std::string>{"first line", "second", "  ", "last without newline"}));
  EXPECT_EQ(ReadLineDocuments(dir_ + "/lines.txt", 10).status().code(), absl::StatusCode::kInvalidArgument);
  Write(dir_ + "/bad.txt", "fine\nbad \xff byte\n");
  auto bad = ReadLineDocuments(dir_ + "/bad.txt", 1000);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("line 2"), std::string::npos) << bad.status();
}

TEST(FineTuneOptions, UnsetFieldsTakeTheDocumentedDefaults) {
  auto o = TrainOptionsFromProto(v1::FINE_TUNE_METHOD_UNSPECIFIED, {});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->method, TrainOptions::Method::kLora);
  EXPECT_EQ(o->lora.r, 8);
  EXPECT_EQ(o->lora.alpha, 16.0);
  EXPECT_EQ(o->lora.dropout, 0.0);
  EXPECT_EQ(o->lora.targets, (std::vector<LoraTarget>{LoraTarget::kQ, LoraTarget::kK, LoraTarget::kV, LoraTarget::kO}));
  EXPECT_EQ(o->max_steps, 100);
  EXPECT_EQ(o->batch_sequences, 4);
  EXPECT_EQ(o->sequence_length, 256);
  EXPECT_EQ(o->learning_rate, 1e-4);
  EXPECT_EQ(o->min_lr_ratio, 0.1);
  EXPECT_EQ(o->warmup_steps, 10);
  EXPECT_EQ(o->weight_decay, 0.0);
  EXPECT_EQ(o->max_grad_norm, 1.0);
  EXPECT_EQ(o->seed, 0u);

  v1::FineTuneHyperParameters hp;
  hp.set_max_steps(5);  // warmup follows a short run down
  EXPECT_EQ(TrainOptionsFromProto(v1::FINE_TUNE_METHOD_LORA, hp)->warmup_steps, 0);
  hp.set_max_steps(50);
  EXPECT_EQ(TrainOptionsFromProto(v1::FINE_TUNE_METHOD_LORA, hp)->warmup_steps, 5);
  hp.set_max_grad_norm(0.0);  // set to zero is not unset
  hp.set_warmup_steps(0);
  auto z = TrainOptionsFromProto(v1::FINE_TUNE_METHOD_LORA, hp);
  EXPECT_EQ(z->max_grad_norm, 0.0);
  EXPECT_EQ(z->warmup_steps, 0);
  EXPECT_EQ(TrainOptionsFromProto(v1::FINE_TUNE_METHOD_FULL, hp)->method, TrainOptions::Method::kFull);

  hp.add_target_modules("nope_proj");
  auto bad = TrainOptionsFromProto(v1::FINE_TUNE_METHOD_LORA, hp);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("target_modules"), std::string::npos);
  EXPECT_EQ(TrainOptionsFromProto(static_cast<v1::FineTuneMethod>(7), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gla
