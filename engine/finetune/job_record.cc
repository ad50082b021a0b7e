#include "engine/finetune/job_record.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "models/excerpt.h"
#include "models/file_io.h"
#include "nlohmann/json.hpp"

namespace gla {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kFormat = 1;

double UnixSeconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}
std::chrono::system_clock::time_point FromUnix(double s) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(s)));
}

std::optional<JobState> StateNamed(const std::string& name) {
  for (JobState s : {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                     JobState::kCancelled})
    if (name == JobStateName(s)) return s;
  return std::nullopt;
}

// The number of "ft-<n>" (0 when the id is not of that form).
uint64_t IdNumber(const std::string& id) {
  uint64_t n = 0;
  return id.rfind("ft-", 0) == 0 && absl::SimpleAtoi(id.substr(3), &n) ? n : 0;
}

}  // namespace

std::string JobRecordDir(const std::string& adapter_dir) { return (fs::path(adapter_dir) / ".jobs").string(); }

std::string JobRecordJson(const JobInfo& j) {
  const TrainOptions& o = j.options;
  json targets = json::array();
  for (LoraTarget t : o.lora.targets) targets.push_back(static_cast<int>(t));
  json r = {{"format", kFormat},
            {"id", j.id},
            {"adapter_name", j.adapter_name},
            {"state", JobStateName(j.state)},
            {"error", j.error},
            {"output_dir", j.output_dir},
            {"documents", j.documents},
            {"data_tokens", j.data_tokens},
            {"created", UnixSeconds(j.created)},
            {"progress",
             {{"step", j.progress.step},
              {"total_steps", j.progress.total_steps},
              {"loss", std::isfinite(j.progress.loss) ? j.progress.loss : 0.0},
              {"tokens", j.progress.tokens}}},
            {"options",
             {{"method", o.method == TrainOptions::Method::kFull ? "full" : "lora"},
              {"max_steps", o.max_steps},
              {"batch_sequences", o.batch_sequences},
              {"sequence_length", o.sequence_length},
              {"learning_rate", o.learning_rate},
              {"warmup_steps", o.warmup_steps},
              {"seed", o.seed},
              {"rank", o.lora.r},
              {"alpha", o.lora.alpha},
              {"dropout", o.lora.dropout},
              {"targets", targets}}}};
  if (j.started) r["started"] = UnixSeconds(*j.started);
  if (j.ended) r["ended"] = UnixSeconds(*j.ended);
  return r.dump(2) + "\n";
}

absl::StatusOr<JobInfo> ParseJobRecord(const std::string& text, const std::string& source) {
  const json r = json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& why) { return absl::DataLossError(absl::StrCat("job record ", source, ": ", why)); };
  if (!r.is_object() || r.value("format", 0) != kFormat) return bad("not a job record of format 1");
  JobInfo j;
  try {
    j.id = r.at("id").get<std::string>();
    j.adapter_name = r.at("adapter_name").get<std::string>();
    const auto state = StateNamed(r.at("state").get<std::string>());
    if (!state) return bad(absl::StrCat("unknown state ", Excerpt(r.at("state").dump())));
    j.state = *state;
    j.error = r.at("error").get<std::string>();
    j.output_dir = r.at("output_dir").get<std::string>();
    j.documents = r.at("documents").get<int64_t>();
    j.data_tokens = r.at("data_tokens").get<int64_t>();
    j.created = FromUnix(r.at("created").get<double>());
    if (r.contains("started")) j.started = FromUnix(r.at("started").get<double>());
    if (r.contains("ended")) j.ended = FromUnix(r.at("ended").get<double>());
    const json& p = r.at("progress");
    j.progress.step = p.at("step").get<int64_t>();
    j.progress.total_steps = p.at("total_steps").get<int64_t>();
    j.progress.loss = p.at("loss").get<double>();
    j.progress.tokens = p.at("tokens").get<int64_t>();
    const json& o = r.at("options");
    j.options.method = o.at("method").get<std::string>() == "full" ? TrainOptions::Method::kFull : TrainOptions::Method::kLora;
    j.options.max_steps = o.at("max_steps").get<int64_t>();
    j.options.batch_sequences = o.at("batch_sequences").get<int>();
    j.options.sequence_length = o.at("sequence_length").get<int>();
    j.options.learning_rate = o.at("learning_rate").get<double>();
    j.options.warmup_steps = o.at("warmup_steps").get<int64_t>();
    j.options.seed = o.at("seed").get<uint64_t>();
    j.options.lora.r = o.at("rank").get<int>();
    j.options.lora.alpha = o.at("alpha").get<double>();
    j.options.lora.dropout = o.at("dropout").get<double>();
    for (const json& t : o.at("targets")) {
      const int v = t.get<int>();
      if (v < 0 || v >= kNumLoraTargets) return bad(absl::StrCat("LoRA target ", v, " is unknown"));
      j.options.lora.targets.push_back(static_cast<LoraTarget>(v));
    }
  } catch (const json::exception& e) {
    return bad(absl::StrCat("a field is missing or of the wrong type (", Excerpt(e.what(), 120), ")"));
  }
  if (IdNumber(j.id) == 0) return bad(absl::StrCat("id '", Excerpt(j.id), "' is not ft-<n>"));
  return j;
}

absl::Status WriteJobRecord(const std::string& adapter_dir, const JobInfo& job) {
  std::error_code ec;
  fs::create_directories(JobRecordDir(adapter_dir), ec);
  if (ec) return absl::InternalError(absl::StrCat(JobRecordDir(adapter_dir), ": cannot create (", ec.message(), ")"));
  return WriteFileAtomically((fs::path(JobRecordDir(adapter_dir)) / (job.id + ".json")).string(), JobRecordJson(job));
}

void RemoveJobRecord(const std::string& adapter_dir, const std::string& id) {
  std::error_code ec;
  fs::remove(fs::path(JobRecordDir(adapter_dir)) / (id + ".json"), ec);
}

std::vector<JobInfo> ReadJobRecords(const std::string& adapter_dir, std::vector<std::string>* refused) {
  std::vector<JobInfo> out;
  std::error_code ec;
  const fs::path dir = JobRecordDir(adapter_dir);
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const fs::path& f = e.path();
    if (f.extension() != ".json") {
      if (f.extension() == ".tmp") fs::remove(f, ec);  // a write a crash cut short
      continue;
    }
    // Regular files only (a FIFO would block the read), and small ones.
    if (!fs::is_regular_file(fs::symlink_status(f, ec)) || fs::file_size(f, ec) > (1u << 20)) {
      refused->push_back(absl::StrCat("job record ", f.string(), ": not a regular file of at most 1 MiB"));
      continue;
    }
    auto text = ReadWholeFile(f.string());
    if (!text.ok()) {
      refused->push_back(std::string(text.status().message()));
      continue;
    }
    auto job = ParseJobRecord(*text, f.string());
    if (!job.ok()) {
      refused->push_back(std::string(job.status().message()));
      continue;
    }
    if (job->id != f.stem().string()) {
      refused->push_back(absl::StrCat("job record ", f.string(), ": holds job '", Excerpt(job->id), "'"));
      continue;
    }
    out.push_back(std::move(*job));
  }
  std::sort(out.begin(), out.end(), [](const JobInfo& a, const JobInfo& b) { return IdNumber(a.id) < IdNumber(b.id); });
  return out;
}

uint64_t JobIdNumber(const std::string& id) { return IdNumber(id); }

}  // namespace gla
