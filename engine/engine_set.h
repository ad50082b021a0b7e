// Every GPU of a host (issue 22, `glad --devices 0,1,...`): one scheduler per device, seen by the
// front door and the protocol adapters as one engine. What goes where:
//   - a session's requests and calls go to its home: the engine rendezvous hashing picks for its id
//     (HomeOf; as the clients pick a replica, over engine indices: a session keeps its home whatever
//     the load, and adding an engine moves only the sessions the new one wins). Without a state
//     store a session lives on its home engine alone, so one turn at a time holds as with one
//     engine; with --session_dir the engines share the directory and each loads the sessions it is
//     home to (a restart with another device count finds every session at its new home). With
//     --state_store each engine is a replica of the shared tier and can serve any session; the
//     home keeps its state hot, and a turn whose home has a request in flight on every state slot
//     goes to the least loaded engine instead when that one has a free slot (it leases the session
//     from the store as another replica would; SessionStats::turns_off_home counts them).
//   - a fork whose new id has another home: the source's engine copies the session out and the new
//     id's home makes the fork from the copy (Scheduler::ExportSession / ImportSession).
//   - everything else (requests without a session, n > 1 groups) goes to the engine with the fewest
//     requests in flight per state slot, counted here as they are submitted and finish (ties: the
//     next in turn), so a burst spreads at once.
// Listing merges the engines' sessions (with a store, one engine lists the store). Adapters are one
// registry for all (each backend keeps its own device copy); base-model prefix states are shared
// between the engines (SchedulerOptions::prefix_peers; or the store, with one) (docs/scale-out.md).
//
// Thread-safe, as the schedulers are; the schedulers must outlive the set (their requests' sinks
// keep the in-flight counts alive on their own).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/scheduler.h"

namespace gla {

// The engine (0 .. engines - 1) rendezvous hashing picks for a session: the highest FNV-1a 64 of
// "SESSION\nINDEX", mixed (MurmurHash3's finalizer).
int HomeOf(const std::string& session, int engines);

class EngineSet {
 public:
  // Not owned; at least one. `shared_store`: the schedulers' sessions are in one state store.
  EngineSet(std::vector<Scheduler*> engines, bool shared_store);

  int size() const { return static_cast<int>(engines_.size()); }
  Scheduler& engine(int i) { return *engines_[static_cast<size_t>(i)]; }
  // The first engine's backend: the model, its tokenizer and vocabulary (every engine serves the
  // same checkpoint).
  Backend& backend() { return engines_.front()->backend(); }

  // As Scheduler's, placed as above.
  absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(GenerationSpec spec, UpdateSink sink);
  absl::StatusOr<std::vector<std::shared_ptr<RequestHandle>>> SubmitGroup(std::vector<GenerationSpec> specs,
                                                                           std::vector<UpdateSink> sinks);
  void CreateSession(std::string id, int64_t ttl_s, Scheduler::SessionDone done);
  void ForkSession(std::string source, std::string id, int64_t ttl_s, Scheduler::SessionDone done);
  void DeleteSession(std::string id, std::function<void(absl::Status)> done);
  void ListSessions(std::function<void(absl::StatusOr<std::vector<SessionInfo>>)> done);

  // Every engine's, summed (slots, queue, sessions, prefix cache, counters).
  SchedulerStats stats() const;
  // One line per engine: "0: <device>; 1: <device>" (one engine: its device alone).
  std::string devices() const;
  // Summed over the engines' backends.
  int64_t weight_bytes() const;
  int64_t state_pool_bytes() const;
  int64_t workspace_bytes() const;
  bool DeviceMemory(int64_t* used, int64_t* total) const;
  // Every engine's refused session files.
  std::vector<std::string> refused_session_files() const;
  // Requests submitted through the set and not finished, per engine (what placement compares).
  std::vector<int> in_flight() const;

  // Every engine's Shutdown at once (so the grace is not paid once per engine).
  void Shutdown(std::chrono::milliseconds grace);

 private:
  int Home(const std::string& session) const { return HomeOf(session, size()); }
  int LeastLoaded();
  // Whether engine e has a request in flight on every state slot (what placement counts).
  bool Busy(int e) const;
  // The sinks, each made to count its request out of the engine's in-flight when it finishes.
  std::vector<UpdateSink> Counted(int engine, std::vector<UpdateSink> sinks);

  std::vector<Scheduler*> engines_;
  const bool shared_store_;
  std::shared_ptr<std::atomic<int>[]> in_flight_;
  std::atomic<uint32_t> turn_{0};
  std::atomic<uint64_t> turns_off_home_{0};
};

}  // namespace gla
