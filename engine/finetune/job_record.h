// A fine-tune job's record at rest: <adapter_dir>/.jobs/<id>.json, written (durably) when the job
// is queued, starts and ends, so that GetFineTuneJob / ListFineTuneJobs still answer for it after
// a restart or a crash. A job that was queued or running when glad stopped comes back FAILED
// ("interrupted"): its training data is not kept, so it cannot resume.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/finetune/jobs.h"

namespace gla {

// "<adapter_dir>/.jobs" (adapter names cannot start with '.', so no adapter is ever there).
std::string JobRecordDir(const std::string& adapter_dir);

absl::Status WriteJobRecord(const std::string& adapter_dir, const JobInfo& job);
void RemoveJobRecord(const std::string& adapter_dir, const std::string& id);

// Every record in the directory, oldest id first. Unreadable records are skipped and described
// in `refused` (one message per file, naming it).
std::vector<JobInfo> ReadJobRecords(const std::string& adapter_dir, std::vector<std::string>* refused);

// n of "ft-<n>" (0 for another form).
uint64_t JobIdNumber(const std::string& id);

// The parts, for tests and the fuzzers.
std::string JobRecordJson(const JobInfo& job);
absl::StatusOr<JobInfo> ParseJobRecord(const std::string& text, const std::string& source);

}  // namespace gla
