#include "engine/finetune/jobs.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "engine/finetune/confined_path.h"
#include "engine/finetune/job_output.h"
#include "engine/finetune/job_record.h"
#include "models/checkpoint.h"
#include "models/status_macros.h"

namespace gla {

namespace fs = std::filesystem;

const char* JobStateName(JobState s) {
  switch (s) {
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kSucceeded: return "succeeded";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
  }
  return "unknown";
}

struct FineTuneJobs::Job {
  // Set at creation, then read-only.
  std::string id;
  std::string adapter_name;
  TrainOptions options;
  int64_t documents = 0, data_tokens = 0;
  std::chrono::system_clock::time_point created;
  // The worker's only: handed to the Trainer (and freed) when the job starts.
  std::vector<std::vector<int32_t>> data;
  std::atomic<bool> cancel{false};
  // Guarded by FineTuneJobs::mu_.
  JobState state = JobState::kQueued;
  TrainProgress progress;
  std::string error, output_dir;
  std::optional<std::chrono::system_clock::time_point> started, ended;
  std::deque<JobEvent> events;
  size_t first_event = 0;  // index of events.front() (older ones were trimmed)
};

FineTuneJobs::FineTuneJobs(FineTuneJobsOptions options, GlaConfig config, AdapterRegistry& registry,
                           ComputeGate* gate)
    : options_(std::move(options)), config_(std::move(config)), registry_(registry), gate_(gate) {
  LoadRecords();
  worker_ = std::thread([this] { WorkerLoop(); });
}

void FineTuneJobs::LoadRecords() {
  if (options_.adapter_dir.empty()) return;
  for (JobInfo& info : ReadJobRecords(options_.adapter_dir, &refused_records_)) {
    auto job = std::make_shared<Job>();
    job->id = info.id;
    job->adapter_name = info.adapter_name;
    job->options = info.options;
    job->documents = info.documents;
    job->data_tokens = info.data_tokens;
    job->created = info.created;
    job->started = info.started;
    job->ended = info.ended;
    job->progress = info.progress;
    job->output_dir = info.output_dir;
    job->error = info.error;
    job->state = info.state;
    if (!IsFinal(job->state)) {  // queued or running when glad stopped: its data is gone
      job->state = JobState::kFailed;
      job->error = "interrupted: glad stopped before the job ended (its data is not kept; submit it again)";
      job->ended = std::chrono::system_clock::now();
      WriteJobRecord(options_.adapter_dir, Snapshot(*job)).IgnoreError();
    }
    JobEvent e;
    e.state = job->state;
    e.progress = job->progress;
    e.error = job->error;
    job->events.push_back(std::move(e));
    next_id_ = std::max<uint64_t>(next_id_, JobIdNumber(job->id));
    finished_.push_back(job->id);
    jobs_[job->id] = std::move(job);
  }
  Forget();
}

FineTuneJobs::~FineTuneJobs() { Shutdown(); }

void FineTuneJobs::Shutdown() {
  std::vector<std::shared_ptr<Job>> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& [id, job] : jobs_) job->cancel = true;
    cancelled.assign(queue_.begin(), queue_.end());
    queue_.clear();
    work_cv_.notify_all();
  }
  for (auto& job : cancelled) {
    JobEvent e;
    e.state = JobState::kCancelled;
    e.progress = job->progress;
    Publish(*job, std::move(e));
  }
  if (gate_ != nullptr) gate_->Wake();  // the running job may wait for its turn
  if (worker_.joinable() && std::this_thread::get_id() != worker_.get_id()) worker_.join();
  std::lock_guard<std::mutex> lock(mu_);
  event_cv_.notify_all();
}

JobInfo FineTuneJobs::Snapshot(const Job& job) {
  JobInfo info;
  info.id = job.id;
  info.adapter_name = job.adapter_name;
  info.state = job.state;
  info.options = job.options;
  info.progress = job.progress;
  info.error = job.error;
  info.output_dir = job.output_dir;
  info.cancel_requested = job.cancel;
  info.documents = job.documents;
  info.data_tokens = job.data_tokens;
  info.created = job.created;
  info.started = job.started;
  info.ended = job.ended;
  return info;
}

absl::StatusOr<JobInfo> FineTuneJobs::Create(FineTuneSpec spec) {
  if (options_.adapter_dir.empty())
    return absl::FailedPreconditionError("fine-tuning is off: the server was started without --adapter_dir");
  if (spec.options.method == TrainOptions::Method::kFull) {
    int64_t params = 0;
    for (const ExpectedTensor& t : ExpectedTensors(config_)) {
      int64_t n = 1;
      for (int64_t d : t.shape) n *= d;
      params += n;
    }
    if (params > options_.max_full_parameters)
      return absl::FailedPreconditionError(absl::StrCat("method FULL is for models of at most ",
                                                        options_.max_full_parameters, " parameters; this one has ",
                                                        params, " (use LORA)"));
  }
  RETURN_IF_ERROR(AdapterRegistry::ValidateName(spec.adapter_name));
  RETURN_IF_ERROR(ValidateTrainOptions(spec.options, config_));

  // The data: every id in the vocabulary, at most max_tokens in all, at least one document of two
  // tokens (one training target) once the shorter ones are skipped.
  int64_t tokens = 0;
  for (size_t d = 0; d < spec.documents.size(); ++d) {
    tokens += static_cast<int64_t>(spec.documents[d].size());
    if (tokens > options_.max_tokens)
      return absl::InvalidArgumentError(absl::StrCat("training data: more than ", options_.max_tokens,
                                                     " tokens (the server's --finetune_max_tokens)"));
    for (int32_t id : spec.documents[d])
      if (id < 0 || id >= config_.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat("training data: document ", d, " holds token id ", id,
                                                       ", outside the vocabulary [0, ", config_.vocab_size, ")"));
  }
  std::erase_if(spec.documents, [](const auto& doc) { return doc.size() < 2; });
  if (spec.documents.empty())
    return absl::InvalidArgumentError("training data: empty (no document of two or more tokens)");

  auto job = std::make_shared<Job>();
  job->adapter_name = spec.adapter_name;
  job->options = spec.options;
  job->options.lora.base_model = options_.model_dir;
  job->documents = static_cast<int64_t>(spec.documents.size());
  for (const auto& doc : spec.documents) job->data_tokens += static_cast<int64_t>(doc.size());
  job->data = std::move(spec.documents);
  job->created = std::chrono::system_clock::now();
  job->progress.total_steps = spec.options.max_steps;

  std::error_code ec;
  const bool dir_exists = fs::exists(fs::path(options_.adapter_dir) / spec.adapter_name, ec);
  JobInfo queued;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    if (registry_.Find(spec.adapter_name) != nullptr)
      return absl::AlreadyExistsError(absl::StrCat("an adapter named '", spec.adapter_name, "' is already loaded"));
    for (const auto& [id, other] : jobs_)
      if (!IsFinal(other->state) && other->adapter_name == spec.adapter_name)
        return absl::AlreadyExistsError(
            absl::StrCat("job ", id, " is already making an adapter named '", spec.adapter_name, "'"));
    if (dir_exists)
      return absl::AlreadyExistsError(absl::StrCat("adapter directory ", options_.adapter_dir, "/", spec.adapter_name,
                                                   " exists already (remove it or choose another name)"));
    if (static_cast<int>(queue_.size()) >= options_.max_queued)
      return absl::ResourceExhaustedError(
          absl::StrCat("fine-tune queue full (", options_.max_queued, " jobs waiting; --finetune_max_queued)"));
    job->id = absl::StrCat("ft-", ++next_id_);
    JobEvent e;
    e.state = JobState::kQueued;
    e.progress = job->progress;
    job->events.push_back(std::move(e));
    jobs_[job->id] = job;
    queued = Snapshot(*job);
  }
  // On disk before the client hears of it (a crash then shows it as interrupted, not unknown).
  if (absl::Status st = WriteJobRecord(options_.adapter_dir, queued); !st.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.erase(queued.id);
    return absl::UnavailableError(absl::StrCat("the job's record could not be written: ", st.message()));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      jobs_.erase(queued.id);
      RemoveJobRecord(options_.adapter_dir, queued.id);
      return absl::UnavailableError("the server is shutting down");
    }
    if (!IsFinal(job->state)) queue_.push_back(job);  // unless cancelled meanwhile
    work_cv_.notify_all();
  }
  return queued;
}

absl::StatusOr<AdapterInfo> FineTuneJobs::LoadAdapter(const std::string& name, const std::string& relative,
                                                      bool replace) {
  if (options_.adapter_dir.empty())
    return absl::FailedPreconditionError("the server was started without --adapter_dir (adapters load from inside it)");
  RETURN_IF_ERROR(AdapterRegistry::ValidateName(name));
  ASSIGN_OR_RETURN(const fs::path dir, ResolveInside(options_.adapter_dir, relative, "path",
                                                     "the server's adapter directory", PathKind::kDirectory));
  // The files too, not only the folder: a symbolic link inside it may lead anywhere. Each must
  // resolve inside the adapter directory to a regular file (no FIFO, no device).
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors"}) {
    std::error_code ec;
    if (fs::symlink_status(dir / file, ec).type() == fs::file_type::not_found) continue;  // the loader says so
    RETURN_IF_ERROR(ResolveInside(options_.adapter_dir, (fs::path(relative) / file).string(), "path",
                                  "the server's adapter directory", PathKind::kRegularFile)
                        .status());
  }
  auto loaded = LoadLoraAdapter(dir.string(), config_);
  if (!loaded.ok()) return absl::InvalidArgumentError(absl::StrCat("path '", relative, "': ", loaded.status().message()));
  const AdapterInfo info = DescribeAdapter(name, dir.string(), "load", *loaded);
  // Under the jobs' lock, so that no job for this name is created between the check and the add.
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, other] : jobs_)
    if (!IsFinal(other->state) && other->adapter_name == name)
      return absl::AlreadyExistsError(absl::StrCat("job ", id, " is making an adapter named '", name, "'"));
  RETURN_IF_ERROR(registry_.Add(info, std::make_shared<const LoraAdapter>(std::move(*loaded)), replace));
  return info;
}

absl::StatusOr<JobInfo> FineTuneJobs::Get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no fine-tune job '", id, "'"));
  return Snapshot(*it->second);
}

std::vector<JobInfo> FineTuneJobs::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<uint64_t, JobInfo>> out;
  for (const auto& [id, job] : jobs_) out.emplace_back(std::stoull(id.substr(3)), Snapshot(*job));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<JobInfo> infos;
  for (auto& [n, info] : out) infos.push_back(std::move(info));
  return infos;
}

absl::StatusOr<JobInfo> FineTuneJobs::Cancel(const std::string& id) {
  std::shared_ptr<Job> job;
  bool was_queued = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no fine-tune job '", id, "'"));
    job = it->second;
    if (IsFinal(job->state)) return Snapshot(*job);
    job->cancel = true;
    auto q = std::find(queue_.begin(), queue_.end(), job);
    if (q != queue_.end()) {
      queue_.erase(q);
      was_queued = true;
    }
  }
  if (was_queued) {
    JobEvent e;
    e.state = JobState::kCancelled;
    e.progress = job->progress;
    Publish(*job, std::move(e));
  } else if (gate_ != nullptr) {
    gate_->Wake();  // the running job may be waiting for its turn: let it see the cancel now
  }
  return Get(id);
}

void FineTuneJobs::Publish(Job& job, JobEvent event) {
  std::optional<JobInfo> ended, changed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const JobState before = job.state;
    if (!Append(job, std::move(event))) return;
    if (IsFinal(job.state) && options_.on_end) ended = Snapshot(job);
    if (job.state != before) changed = Snapshot(job);  // a state change, not a step: on disk too
  }
  // The record, written durably before anyone is told the job ended (Cancel answers from memory,
  // a crash right after it leaves the record a restart reads).
  if (changed && !options_.adapter_dir.empty()) WriteJobRecord(options_.adapter_dir, *changed).IgnoreError();
  if (ended) options_.on_end(*ended);
}

bool FineTuneJobs::Append(Job& job, JobEvent event) {
  if (IsFinal(job.state)) return false;  // e.g. cancelled while queued, by Cancel and Shutdown both
  const auto now = std::chrono::system_clock::now();
  if (event.state == JobState::kRunning && job.state == JobState::kQueued) job.started = now;
  job.state = event.state;
  job.progress = event.progress;
  if (event.state == JobState::kFailed) job.error = event.error;
  job.events.push_back(std::move(event));
  while (job.events.size() > std::max<size_t>(options_.max_events, 2)) {
    job.events.pop_front();
    ++job.first_event;
  }
  if (IsFinal(job.state)) {
    job.ended = now;
    finished_.push_back(job.id);
    Forget();
  }
  event_cv_.notify_all();
  return true;
}

void FineTuneJobs::Forget() {
  while (finished_.size() > options_.max_finished_jobs) {
    if (!options_.adapter_dir.empty()) RemoveJobRecord(options_.adapter_dir, finished_.front());
    jobs_.erase(finished_.front());  // watchers hold no reference across calls: they see NOT_FOUND
    finished_.pop_front();
  }
}

absl::StatusOr<FineTuneJobs::Events> FineTuneJobs::WaitForEvents(const std::string& id, size_t from,
                                                                 std::chrono::steady_clock::time_point deadline,
                                                                 const std::function<bool()>& stop) const {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no fine-tune job '", id, "'"));
  std::shared_ptr<Job> job = it->second;  // kept alive even if forgotten meanwhile
  Events out;
  for (;;) {
    const size_t end = job->first_event + job->events.size();
    if (from < end) {
      for (size_t i = std::max(from, job->first_event); i < end; ++i) out.events.push_back(job->events[i - job->first_event]);
      out.next = end;
      out.final = IsFinal(out.events.back().state);
      return out;
    }
    out.next = from;
    // Nothing new. A final job has nothing more to say; a server shutting down neither.
    if (IsFinal(job->state)) {
      out.final = true;
      return out;
    }
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline || (stop && stop())) return out;
    event_cv_.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(100)));
  }
}

void FineTuneJobs::WorkerLoop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = queue_.front();
      queue_.pop_front();
    }
    Run(*job);
  }
}

void FineTuneJobs::Run(Job& job) {
  // The server must outlive a failing job: whatever goes wrong (out of memory included) ends the
  // job as FAILED instead of the process.
  if (gate_ != nullptr) gate_->SetTrainingDemand(true);
  try {
    RunJob(job);
  } catch (const std::exception& e) {
    JobEvent ev;
    ev.state = JobState::kFailed;
    ev.progress = job.progress;
    ev.error = absl::StrCat("internal error: ", e.what());
    Publish(job, std::move(ev));
  }
  if (gate_ != nullptr) gate_->SetTrainingDemand(false);
  std::vector<std::vector<int32_t>>().swap(job.data);
  // The job's model copy, activations and optimizer state are freed; glibc keeps freed memory in
  // its arenas, and a soak run saw glad's RSS step up ~60 MiB with the first jobs and stay there.
  malloc_trim(0);
}

void FineTuneJobs::RunJob(Job& job) {
  JobEvent ev;
  ev.progress = job.progress;
  auto end = [&](JobState state, std::string error = "") {
    ev.state = state;
    ev.error = std::move(error);
    Publish(job, ev);
  };
  if (job.cancel) return end(JobState::kCancelled);
  ev.state = JobState::kRunning;
  Publish(job, ev);

  // The base weights, fresh from disk (a served model's checkpoint has handed its projections to
  // fused copies); freed once the trainer has copied them.
  std::unique_ptr<Trainer> trainer;
  {
    auto base = LoadCheckpoint(options_.model_dir);
    if (!base.ok()) return end(JobState::kFailed, absl::StrCat("loading the base model: ", base.status().message()));
    auto t = Trainer::Create(*base, job.options, std::move(job.data), options_.train_device);
    if (!t.ok()) return end(JobState::kFailed, std::string(t.status().message()));
    trainer = std::move(*t);
  }
  const auto stop = [&job] { return job.cancel.load(); };
  while (!trainer->done()) {
    if (job.cancel) return end(JobState::kCancelled);
    if (gate_ != nullptr && !gate_->BeginTraining(stop)) return end(JobState::kCancelled);
    // Between the layers of the step: serving waiting for the device goes first, and a cancel
    // (or SIGTERM) stops the step there. A failed yield leaves the gate untaken.
    bool holding = gate_ != nullptr;
    const auto yield = [&]() -> bool {
      if (job.cancel) return false;
      if (gate_ == nullptr) return true;
      holding = gate_->YieldToServing(stop);
      return holding;
    };
    absl::StatusOr<TrainProgress> p = trainer->Step(yield);
    if (holding) gate_->EndTraining();
    if (job.cancel) return end(JobState::kCancelled);
    if (!p.ok()) return end(JobState::kFailed, std::string(p.status().message()));
    ev.progress = *p;
    ev.state = JobState::kRunning;
    Publish(job, ev);
  }
  if (job.cancel) return end(JobState::kCancelled);  // cancelled after the last step: nothing saved
  absl::Status saved;
  if (job.options.method == TrainOptions::Method::kLora) {
    absl::StatusOr<LoraAdapter> adapter = trainer->adapter();
    trainer.reset();  // its optimizer state is no longer needed
    saved = adapter.ok() ? SaveAdapter(job, *adapter) : adapter.status();
  } else {
    absl::StatusOr<ModelWeights> weights = trainer->weights();
    trainer.reset();
    saved = weights.ok() ? SaveCheckpoint(job, *weights) : weights.status();
  }
  if (!saved.ok()) return end(JobState::kFailed, absl::StrCat("saving the result: ", saved.message()));
  end(JobState::kSucceeded);
}

absl::Status FineTuneJobs::SaveAdapter(Job& job, const LoraAdapter& adapter) {
  ASSIGN_OR_RETURN(const std::string dir,
                   WriteDirectoryAtomically(options_.adapter_dir, job.adapter_name, job.id,
                                            [&](const std::string& tmp) { return SaveLoraAdapter(tmp, adapter); }));
  // Serve what is on disk: a writer/reader mismatch shows up here, not in a client's generation.
  auto loaded = LoadLoraAdapter(dir, config_);
  if (!loaded.ok()) return absl::InternalError(absl::StrCat("reloading ", dir, ": ", loaded.status().message()));
  const AdapterInfo info = DescribeAdapter(job.adapter_name, dir, absl::StrCat("job:", job.id), *loaded);
  RETURN_IF_ERROR(registry_.Add(info, std::make_shared<const LoraAdapter>(std::move(*loaded))));
  std::lock_guard<std::mutex> lock(mu_);
  job.output_dir = dir;
  return absl::OkStatus();
}

absl::Status FineTuneJobs::SaveCheckpoint(Job& job, const ModelWeights& weights) {
  ASSIGN_OR_RETURN(const std::string dir,
                   WriteDirectoryAtomically(options_.adapter_dir, job.adapter_name, job.id, [&](const std::string& tmp) {
                     return WriteFullCheckpoint(tmp, options_.model_dir, config_, weights);
                   }));
  auto loaded = LoadCheckpoint(dir);  // a checkpoint glad --model can serve
  if (!loaded.ok()) return absl::InternalError(absl::StrCat("reloading ", dir, ": ", loaded.status().message()));
  std::lock_guard<std::mutex> lock(mu_);
  job.output_dir = dir;
  return absl::OkStatus();
}

}  // namespace gla
