// Read traces: which file ranges a workload read first, in order, so that a
// later mount of the same image can fetch them ahead of the workload.
//
// Recording and replay work on the Tree interface, so they know nothing of
// layer formats: a RecordingTree sits between the FUSE server and the image
// tree and notes first reads; Replay() reads the ranges through a tree (the
// image tree of a new mount), which makes lazy layers fetch their chunks.
//
// File format (JSON, one object):
//   {"version":1,"reads":[{"path":"/usr/bin/python3.11","offset":0,"length":65536},...]}
// A path is absolute in the image. Names are bytes and JSON strings are
// UTF-8, so a path is written as its bytes, except that '%' and every byte
// that is not part of a well-formed UTF-8 sequence are written as %XX (two
// upper-case hex digits): "/caf\xe9" is "/caf%E9", "/100%" is "/100%25".
// Readers decode any %XX; a '%' not followed by two hex digits is malformed.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ucrfs/common/error.h"
#include "ucrfs/index/tree.h"

namespace ucrfs::index {

struct TraceRead {
  std::string path;  // absolute in the image, e.g. "/usr/bin/python3.11"
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const TraceRead&) const = default;
};

struct Trace {
  std::vector<TraceRead> reads;
  bool operator==(const Trace&) const = default;
};

// Recording granularity: a read notes the 64 KiB blocks it touches.
inline constexpr uint64_t kTraceBlock = 64 * 1024;
// Limits a trace must respect: ranges end below 2^53 (what every JSON reader
// holds exactly), paths are at most 4096 bytes with names of at most 255, at
// most 2^24 ranges, and a trace file is at most 256 MiB.
inline constexpr uint64_t kTraceMaxEnd = uint64_t{1} << 53;
inline constexpr size_t kTraceMaxReads = size_t{1} << 24;
inline constexpr uint64_t kTraceMaxFileBytes = uint64_t{256} << 20;

std::string SerializeTrace(const Trace& trace);
// kMalformed with a one-line reason naming the read at fault (e.g.
// "reads[3].path: '..' component in '/a/../b'") for input that is not JSON,
// a version other than 1, fields of the wrong type, paths that are relative
// or have empty, "." or ".." components, empty ranges or ranges beyond the
// limits. Unknown members are ignored.
Result<Trace> ParseTrace(std::string_view text);
// ParseTrace of a file; errors name the file.
Result<Trace> ReadTraceFile(const std::string& path);

// Wraps a Tree: passes every call through, and records the first read of
// each (inode, 64 KiB block) in the order the reads arrived (whatever their
// outcome: a read that failed was still wanted), with the file's path
// learned from the Lookup and ReadDir results that went through it (parent
// path + "/" + name; the first name of a hardlinked inode). Reads of inodes
// whose path it never saw are not recorded. Ranges are block-aligned and cut
// at the file's size; consecutive blocks of one file recorded in a row
// become one range.
//
// Thread-safe. A read of blocks already recorded takes one shared lock of
// one of 64 shards (by inode) and atomic loads; only a first read takes the
// lock of the log.
class RecordingTree final : public Tree {
 public:
  explicit RecordingTree(std::shared_ptr<Tree> inner);
  ~RecordingTree() override;
  RecordingTree(const RecordingTree&) = delete;
  RecordingTree& operator=(const RecordingTree&) = delete;

  // The trace so far.
  Trace Snapshot() const;
  // Blocks recorded so far: grows exactly when Snapshot() changes.
  uint64_t RecordedBlocks() const;

  Result<Attr> GetAttr(uint64_t ino) override;
  Result<Attr> Lookup(uint64_t parent, std::string_view name) override;
  Result<std::vector<DirEntry>> ReadDir(uint64_t ino) override;
  Result<std::string> ReadLink(uint64_t ino) override;
  Result<std::string> GetXattr(uint64_t ino, std::string_view name) override;
  Result<std::vector<std::string>> ListXattr(uint64_t ino) override;
  bool HasXattrs() override;
  Result<size_t> Read(uint64_t ino, uint64_t offset, char* buf, size_t len) override;
  uint64_t InodeCount() override;
  uint64_t TotalBytes() override;

 private:
  struct State;
  const std::shared_ptr<Tree> inner_;
  const std::unique_ptr<State> state_;
};

struct ReplayStats {
  uint64_t reads = 0;    // ranges read
  uint64_t bytes = 0;    // bytes read
  uint64_t missing = 0;  // ranges skipped: the path does not resolve to a regular file
  uint64_t failed = 0;   // ranges skipped at a read error
};

// Reads every range of the trace through `tree`, in order, discarding the
// bytes (it exists to make lazy layers fetch them), resolving paths by
// Lookup from the root. Paths that do not resolve or are not regular files
// are counted as missing and skipped; read errors are counted as failed and
// skipped. Returns early when `stop` becomes true (checked between reads of
// at most 1 MiB). `progress`, if set, is called after each range (with a
// lock held when parallel). `parallel` > 1: that many ranges in flight at
// once, started in trace order (range i starts once ranges < i have), so
// that fetches overlap their round trips.
ReplayStats Replay(Tree& tree, const Trace& trace, const std::atomic<bool>& stop,
                   const std::function<void(const ReplayStats&)>& progress = {}, size_t parallel = 1);

}  // namespace ucrfs::index
