// Read traces of a mount: see mount_trace.h.
#include "mount_trace.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include <fmt/format.h>

#include "ucrfs/common/file.h"
#include "ucrfs/common/log.h"

namespace ucrfs::cli {
namespace {

// How often a recording mount rewrites its trace while it serves (when it
// grew), so that a server that is killed leaves most of it behind. Until
// something is read the file is left alone: it may be the trace this mount
// replays, and a server killed early should not leave an empty one.
constexpr auto kWriteEvery = std::chrono::seconds(2);

// `record` made absolute, once its directory is known to exist.
Result<std::string> RecordPath(const std::string& record) {
  std::string path = record;
  if (path.empty() || path.back() == '/') {
    return Error(Errc::kInvalidArgument, fmt::format("--record {}: expected a file name", record));
  }
  if (path[0] != '/') {
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof cwd) == nullptr) return ErrnoError("--record: current directory");
    path = fmt::format("{}/{}", cwd, record);
  }
  size_t slash = path.rfind('/');
  const std::string dir = slash == 0 ? std::string("/") : path.substr(0, slash);
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return ErrnoError(fmt::format("--record {}: directory {}", record, dir));
  if (!S_ISDIR(st.st_mode)) {
    return Error(Errc::kInvalidArgument, fmt::format("--record {}: {} is not a directory", record, dir));
  }
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return Error(Errc::kInvalidArgument, fmt::format("--record {}: is a directory", record));
  }
  return path;
}

}  // namespace

Result<std::unique_ptr<MountTraces>> MountTraces::Prepare(const std::string& replay, const std::string& record) {
  std::unique_ptr<MountTraces> t(new MountTraces);
  if (!replay.empty()) {
    auto trace = index::ReadTraceFile(replay);
    if (!trace.ok()) return trace.error().Wrap("--prefetch (none, landmark, all or a trace file)");
    t->replay_ = std::make_unique<const index::Trace>(std::move(*trace));
  }
  if (!record.empty()) {
    UCRFS_ASSIGN(t->record_, RecordPath(record));
  }
  return t;
}

constexpr size_t kReplayParallel = 4;

MountTraces::~MountTraces() { Finish(); }

void MountTraces::ReplayIfNone(index::Trace trace) {
  if (replay_ == nullptr) replay_ = std::make_unique<const index::Trace>(std::move(trace));
}

std::shared_ptr<index::Tree> MountTraces::Serve(std::shared_ptr<index::Tree> tree) {
  tree_ = tree;
  if (record_.empty()) return tree;
  recorder_ = std::make_shared<index::RecordingTree>(std::move(tree));
  return recorder_;
}

void MountTraces::Start() {
  if (replay_ != nullptr && tree_ != nullptr) {
    replayer_ = std::thread([this] {
      auto progress = [this](const index::ReplayStats& s) {
        reads_ = s.reads;
        bytes_ = s.bytes;
        missing_ = s.missing;
        failed_ = s.failed;
      };
      // Four ranges in flight: a lazy layer's fetches overlap their round
      // trips (the replay is latency-bound at 100 Mbit/s otherwise).
      index::ReplayStats st = index::Replay(*tree_, *replay_, stop_, progress, kReplayParallel);
      progress(st);
      done_ = !stop_;
      spdlog::info("trace replayed: {} of {} ranges read ({} bytes), {} missing, {} failed", st.reads,
                   replay_->reads.size(), st.bytes, st.missing, st.failed);
    });
  }
  if (recorder_ != nullptr) writer_ = std::thread([this] { WriteLoop(); });
}

void MountTraces::Finish() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (replayer_.joinable()) replayer_.join();
  if (writer_.joinable()) {
    writer_.join();
    WriteTrace();  // the reads since the writer's last turn
  }
  recorder_.reset();
  tree_.reset();
}

void MountTraces::WriteLoop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    lock.unlock();
    if (recorder_->RecordedBlocks() > 0) WriteTrace();
    lock.lock();
    cv_.wait_for(lock, kWriteEvery, [this] { return stop_.load(); });
  }
}

void MountTraces::WriteTrace() {
  uint64_t blocks = recorder_->RecordedBlocks();
  if (blocks == written_) return;
  Status st = WriteFileAtomic(record_, index::SerializeTrace(recorder_->Snapshot()));
  if (st.ok()) {
    written_ = blocks;
  } else {
    spdlog::warn("--record: {}", st.error().message());
  }
}

void MountTraces::AddStats(nlohmann::json& stats) const {
  if (replay_ == nullptr) return;
  stats["traceRanges"] = replay_->reads.size();
  stats["traceReads"] = reads_.load();
  stats["traceBytes"] = bytes_.load();
  stats["traceMissing"] = missing_.load();
  stats["traceFailed"] = failed_.load();
  stats["traceDone"] = done_.load();
}

void PrintTraceStats(const nlohmann::json& j) {
  if (!j.contains("traceRanges")) return;
  fmt::print("trace replay:      {} of {} ranges read ({} bytes), {} missing, {} failed{}\n",
             j.value("traceReads", uint64_t{0}), j.value("traceRanges", uint64_t{0}),
             j.value("traceBytes", uint64_t{0}), j.value("traceMissing", uint64_t{0}),
             j.value("traceFailed", uint64_t{0}), j.value("traceDone", false) ? "; done" : "; running");
}

}  // namespace ucrfs::cli
