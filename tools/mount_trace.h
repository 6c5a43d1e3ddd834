// `ucrfs mount --record FILE` and `--prefetch FILE`: the read trace of a
// mount (index/trace.h) around the server's loop.
//
//   parent:  Prepare()  reads the trace to replay and checks where one is to
//                       be recorded: bad input fails the mount before
//                       anything is mounted;
//   server:  Serve()    the tree to serve (a RecordingTree when recording);
//            Start()    once the mount serves: the replay thread and the
//                       trace writer;
//            Finish()   after the loop: stops the replay, writes the trace.
//
// The replay reads through the image tree, not the recording one, so a mount
// that does both records the workload's reads only.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "ucrfs/common/error.h"
#include "ucrfs/index/trace.h"
#include "ucrfs/index/tree.h"

namespace ucrfs::cli {

class MountTraces {
 public:
  // `replay`: a trace file to replay, or "" for none. `record`: where to
  // write the trace, or "" for nowhere; its directory must exist.
  static Result<std::unique_ptr<MountTraces>> Prepare(const std::string& replay, const std::string& record);
  ~MountTraces();

  bool replaying() const { return replay_ != nullptr; }
  // Replays `trace` (one that came with the image's ucrfs index) unless a
  // trace file was given.
  void ReplayIfNone(index::Trace trace);

  std::shared_ptr<index::Tree> Serve(std::shared_ptr<index::Tree> tree);
  void Start();
  // Idempotent; a no-op unless started.
  void Finish();

  // The replay's progress, for `ucrfs stats` (keys trace*; none without a
  // trace to replay).
  void AddStats(nlohmann::json& stats) const;

 private:
  MountTraces() = default;
  void WriteLoop();
  void WriteTrace();

  std::unique_ptr<const index::Trace> replay_;
  std::string record_;  // absolute: the server runs in "/"
  std::shared_ptr<index::Tree> tree_;
  std::shared_ptr<index::RecordingTree> recorder_;

  std::atomic<bool> stop_{false};
  std::thread replayer_, writer_;
  std::mutex mu_;
  std::condition_variable cv_;       // wakes the writer when stopping
  uint64_t written_ = ~uint64_t{0};  // RecordedBlocks() last written; only the writer, then Finish()

  std::atomic<uint64_t> reads_{0}, bytes_{0}, missing_{0}, failed_{0};
  std::atomic<bool> done_{false};
};

// The replay line of `ucrfs stats` for stats JSON with trace keys.
void PrintTraceStats(const nlohmann::json& stats);

}  // namespace ucrfs::cli
