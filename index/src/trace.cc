// Read traces: the file format, the recording tree and replay (trace.h).
#include "ucrfs/index/trace.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tar_path.h"
#include "ucrfs/common/file.h"

namespace ucrfs::index {
namespace {

// ------------------------------------------------------------------ format

// The length of the well-formed UTF-8 sequence at s[i] (Unicode table 3-7:
// no overlong forms, no surrogates, nothing above U+10FFFF), or 0. As strict
// as nlohmann's encoder, which refuses anything else.
size_t Utf8SequenceAt(std::string_view s, size_t i) {
  auto at = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
  auto in = [](unsigned c, unsigned lo, unsigned hi) { return c >= lo && c <= hi; };
  unsigned c = at(0);
  if (c < 0x80) return 1;
  if (in(c, 0xC2, 0xDF)) return in(at(1), 0x80, 0xBF) ? 2 : 0;
  if (in(c, 0xE0, 0xEF)) {
    unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return in(at(1), lo, hi) && in(at(2), 0x80, 0xBF) ? 3 : 0;
  }
  if (in(c, 0xF0, 0xF4)) {
    unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return in(at(1), lo, hi) && in(at(2), 0x80, 0xBF) && in(at(3), 0x80, 0xBF) ? 4 : 0;
  }
  return 0;
}

std::string EscapePath(std::string_view p) {
  std::string out;
  out.reserve(p.size());
  for (size_t i = 0; i < p.size();) {
    size_t n = p[i] == '%' ? 0 : Utf8SequenceAt(p, i);
    if (n == 0) {
      out += fmt::format("%{:02X}", static_cast<unsigned char>(p[i]));
      ++i;
    } else {
      out.append(p, i, n);
      i += n;
    }
  }
  return out;
}

std::optional<std::string> UnescapePath(std::string_view p) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] != '%') {
      out += p[i];
      continue;
    }
    if (i + 2 >= p.size()) return std::nullopt;
    int hi = hex(p[i + 1]), lo = hex(p[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

Error Bad(std::string msg) { return Error(Errc::kMalformed, std::move(msg)); }

// Why a decoded path cannot name a file of an image, or "".
std::string PathProblem(std::string_view p) {
  if (p.empty()) return "empty path";
  if (p[0] != '/') return "relative path " + QuotePath(p);
  if (p.size() > 4096) return "path longer than 4096 bytes";
  if (p.find('\0') != std::string_view::npos) return "NUL byte in " + QuotePath(p);
  for (size_t start = 1;;) {
    size_t end = p.find('/', start);
    std::string_view name = p.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (name.empty()) return "empty name in " + QuotePath(p);
    if (name == "." || name == "..") return fmt::format("'{}' component in {}", name, QuotePath(p));
    if (name.size() > 255) return "name longer than 255 bytes in " + QuotePath(p);
    if (end == std::string_view::npos) return "";
    start = end + 1;
  }
}

// A member that must be a non-negative integer.
Result<uint64_t> Uint(const nlohmann::json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) return Bad(fmt::format("{}.{}: missing", where, key));
  if (!it->is_number_unsigned()) {
    return Bad(fmt::format("{}.{}: expected a non-negative integer, got {}", where, key, it->type_name()));
  }
  return it->get<uint64_t>();
}

// ------------------------------------------------------------------ recording

// Bytes of a file beyond this are not recorded: it bounds the per-file block
// bitmap at 2 MiB.
constexpr uint64_t kRecordLimit = uint64_t{1} << 40;
constexpr size_t kShards = 64;

}  // namespace

std::string SerializeTrace(const Trace& trace) {
  nlohmann::json reads = nlohmann::json::array();
  for (const TraceRead& r : trace.reads) {
    reads.push_back({{"path", EscapePath(r.path)}, {"offset", r.offset}, {"length", r.length}});
  }
  nlohmann::json j = {{"version", 1}, {"reads", std::move(reads)}};
  return j.dump() + "\n";
}

Result<Trace> ParseTrace(std::string_view text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return Bad(fmt::format("invalid JSON at byte {}", e.byte));
  } catch (const nlohmann::json::out_of_range&) {  // a number too large for a double
    return Bad("invalid JSON: a number out of range");
  }
  if (!j.is_object()) return Bad("not a JSON object");
  auto version = j.find("version");
  if (version == j.end()) return Bad("no version");
  if (!version->is_number_unsigned() || version->get<uint64_t>() != 1) {
    std::string v = version->dump();
    if (v.size() > 40) v = v.substr(0, 40) + "...";
    return Bad(fmt::format("version {} is not supported (1 is)", v));
  }
  auto reads = j.find("reads");
  if (reads == j.end()) return Bad("no reads");
  if (!reads->is_array()) return Bad(fmt::format("reads: expected an array, got {}", reads->type_name()));
  if (reads->size() > kTraceMaxReads) return Bad(fmt::format("more than {} reads", kTraceMaxReads));
  Trace trace;
  trace.reads.reserve(reads->size());
  for (size_t i = 0; i < reads->size(); ++i) {
    const nlohmann::json& e = (*reads)[i];
    const std::string where = fmt::format("reads[{}]", i);
    if (!e.is_object()) return Bad(fmt::format("{}: expected an object, got {}", where, e.type_name()));
    auto path = e.find("path");
    if (path == e.end()) return Bad(where + ".path: missing");
    if (!path->is_string()) return Bad(fmt::format("{}.path: expected a string, got {}", where, path->type_name()));
    const auto& raw = path->get_ref<const std::string&>();
    auto decoded = UnescapePath(raw);
    if (!decoded) return Bad(fmt::format("{}.path: bad %-escape in {}", where, QuotePath(raw)));
    if (std::string why = PathProblem(*decoded); !why.empty()) return Bad(fmt::format("{}.path: {}", where, why));
    UCRFS_ASSIGN(uint64_t offset, Uint(e, "offset", where));
    UCRFS_ASSIGN(uint64_t length, Uint(e, "length", where));
    if (length == 0) return Bad(where + ".length: 0");
    if (offset >= kTraceMaxEnd || length > kTraceMaxEnd - offset) {
      return Bad(fmt::format("{}: range at {} of {} bytes ends beyond 2^53", where, offset, length));
    }
    trace.reads.push_back(TraceRead{std::move(*decoded), offset, length});
  }
  return trace;
}

Result<Trace> ReadTraceFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError("trace " + path);
  if (!S_ISREG(st.st_mode)) return Error(Errc::kInvalidArgument, fmt::format("trace {} is not a regular file", path));
  if (static_cast<uint64_t>(st.st_size) > kTraceMaxFileBytes) {
    return Error(Errc::kTooBig, fmt::format("trace {} is {} bytes; at most {} are read", path, st.st_size,
                                            kTraceMaxFileBytes));
  }
  auto text = ReadFile(path);
  if (!text.ok()) return text.error().Wrap("trace");
  auto trace = ParseTrace(*text);
  if (!trace.ok()) return trace.error().Wrap("trace " + path);
  return trace;
}

// ------------------------------------------------------------------ RecordingTree

struct RecordingTree::State {
  // A directory or regular file whose path is known. Never removed, so the
  // log can point at it.
  struct Node {
    Node(std::string p, bool reg, uint64_t sz) : path(std::move(p)), regular(reg), size(sz) {}
    ~Node() { delete[] bits.load(); }
    const std::string path;  // "" for the root
    const bool regular;
    const uint64_t size;
    // One bit per block read, allocated at the first read.
    std::atomic<std::atomic<uint64_t>*> bits{nullptr};

    std::atomic<uint64_t>* Bits() {
      std::atomic<uint64_t>* b = bits.load(std::memory_order_acquire);
      if (b != nullptr) return b;
      uint64_t blocks = (std::min(size, kRecordLimit) + kTraceBlock - 1) / kTraceBlock;
      auto* fresh = new std::atomic<uint64_t>[(blocks + 63) / 64 + 1]();
      if (bits.compare_exchange_strong(b, fresh, std::memory_order_acq_rel)) return fresh;
      delete[] fresh;
      return b;
    }
  };

  struct Shard {
    mutable std::shared_mutex mu;
    std::unordered_map<uint64_t, std::unique_ptr<Node>> nodes;  // guarded by mu
  };

  // Blocks [first, first + count) of a file, recorded in a row.
  struct Entry {
    const Node* node;
    uint64_t first, count;
  };

  std::array<Shard, kShards> shards;
  mutable std::mutex log_mu;
  std::vector<Entry> log;  // guarded by log_mu
  std::atomic<uint64_t> recorded{0};

  Shard& ShardOf(uint64_t ino) { return shards[ino % kShards]; }

  Node* Find(uint64_t ino) {
    Shard& s = ShardOf(ino);
    std::shared_lock lock(s.mu);
    auto it = s.nodes.find(ino);
    return it == s.nodes.end() ? nullptr : it->second.get();
  }

  bool Known(uint64_t ino) { return Find(ino) != nullptr; }

  void Add(uint64_t ino, std::string path, const Attr& a) {
    auto node = std::make_unique<Node>(std::move(path), S_ISREG(a.mode), a.size);
    Shard& s = ShardOf(ino);
    std::unique_lock lock(s.mu);
    s.nodes.try_emplace(ino, std::move(node));
  }

  // Only directories (parents of what is read) and regular files (what is
  // read) need a path; "." and ".." would only name a known one again.
  static bool Wanted(std::string_view name, const Attr& a) {
    return (S_ISDIR(a.mode) || S_ISREG(a.mode)) && !name.empty() && name != "." && name != ".." &&
           name.find('/') == std::string_view::npos;
  }

  void Learn(uint64_t parent, std::string_view name, const Attr& a) {
    if (!Wanted(name, a) || Known(a.ino)) return;
    const Node* p = Find(parent);
    if (p == nullptr) return;
    Add(a.ino, p->path + "/" + std::string(name), a);
  }

  void Note(uint64_t ino, uint64_t offset, size_t len) {
    Node* n = Find(ino);
    if (n == nullptr || !n->regular) return;
    uint64_t limit = std::min(n->size, kRecordLimit);
    if (len == 0 || offset >= limit) return;
    uint64_t end = len > limit - offset ? limit : offset + len;
    uint64_t b = offset / kTraceBlock, last = (end - 1) / kTraceBlock;
    std::atomic<uint64_t>* bits = n->Bits();
    auto bit = [](uint64_t block) { return uint64_t{1} << (block % 64); };
    // Already recorded: no lock beyond the shard's.
    while (b <= last && (bits[b / 64].load(std::memory_order_relaxed) & bit(b)) != 0) ++b;
    if (b > last) return;
    // Blocks are claimed under the log's lock, so the log's order is the
    // order of the claims.
    std::lock_guard lock(log_mu);
    for (; b <= last; ++b) {
      if ((bits[b / 64].fetch_or(bit(b), std::memory_order_relaxed) & bit(b)) != 0) continue;
      if (!log.empty() && log.back().node == n && log.back().first + log.back().count == b) {
        ++log.back().count;
      } else {
        log.push_back(Entry{n, b, 1});
      }
      recorded.fetch_add(1, std::memory_order_relaxed);
    }
  }
};

RecordingTree::RecordingTree(std::shared_ptr<Tree> inner) : inner_(std::move(inner)), state_(new State) {
  Attr root;
  root.ino = kRootIno;
  root.mode = S_IFDIR | 0755;
  state_->Add(kRootIno, "", root);
}

RecordingTree::~RecordingTree() = default;

Trace RecordingTree::Snapshot() const {
  std::lock_guard lock(state_->log_mu);
  Trace t;
  t.reads.reserve(state_->log.size());
  for (const State::Entry& e : state_->log) {
    uint64_t off = e.first * kTraceBlock;
    uint64_t end = std::min(std::min(e.node->size, kRecordLimit), (e.first + e.count) * kTraceBlock);
    t.reads.push_back(TraceRead{e.node->path, off, end - off});
  }
  return t;
}

uint64_t RecordingTree::RecordedBlocks() const { return state_->recorded.load(std::memory_order_relaxed); }

Result<Attr> RecordingTree::GetAttr(uint64_t ino) { return inner_->GetAttr(ino); }

Result<Attr> RecordingTree::Lookup(uint64_t parent, std::string_view name) {
  auto r = inner_->Lookup(parent, name);
  if (r.ok()) state_->Learn(parent, name, *r);
  return r;
}

Result<std::vector<DirEntry>> RecordingTree::ReadDir(uint64_t ino) {
  auto r = inner_->ReadDir(ino);
  if (!r.ok()) return r;
  const State::Node* dir = state_->Find(ino);
  if (dir == nullptr) return r;
  for (const DirEntry& e : *r) {
    if (State::Wanted(e.name, e.attr) && !state_->Known(e.attr.ino)) {
      state_->Add(e.attr.ino, dir->path + "/" + e.name, e.attr);
    }
  }
  return r;
}

Result<std::string> RecordingTree::ReadLink(uint64_t ino) { return inner_->ReadLink(ino); }

Result<std::string> RecordingTree::GetXattr(uint64_t ino, std::string_view name) {
  return inner_->GetXattr(ino, name);
}

Result<std::vector<std::string>> RecordingTree::ListXattr(uint64_t ino) { return inner_->ListXattr(ino); }

bool RecordingTree::HasXattrs() { return inner_->HasXattrs(); }

Result<size_t> RecordingTree::Read(uint64_t ino, uint64_t offset, char* buf, size_t len) {
  state_->Note(ino, offset, len);
  return inner_->Read(ino, offset, buf, len);
}

uint64_t RecordingTree::InodeCount() { return inner_->InodeCount(); }

uint64_t RecordingTree::TotalBytes() { return inner_->TotalBytes(); }

// ------------------------------------------------------------------ replay

namespace {

// Paths to attributes by Lookup from the root, each path (and each parent)
// looked up once: a trace names one file many times.
class Resolver {
 public:
  explicit Resolver(Tree& tree) : tree_(tree) {}

  std::optional<Attr> Resolve(const std::string& path) {
    if (path.empty()) {
      Attr root;
      root.ino = kRootIno;
      root.mode = S_IFDIR;
      return root;
    }
    if (auto it = cache_.find(path); it != cache_.end()) return it->second;
    size_t slash = path.rfind('/');
    std::optional<Attr> found;
    if (slash != std::string::npos) {
      std::optional<Attr> parent = Resolve(path.substr(0, slash));
      if (parent && S_ISDIR(parent->mode)) {
        auto r = tree_.Lookup(parent->ino, std::string_view(path).substr(slash + 1));
        if (r.ok()) found = *r;
      }
    }
    cache_.emplace(path, found);
    return found;
  }

 private:
  Tree& tree_;
  std::unordered_map<std::string, std::optional<Attr>> cache_;
};

}  // namespace

namespace {

// Replays range `r` with `resolver`, adding to `st` (a range `stop` cut
// short counts as neither read nor failed).
void ReplayOne(Tree& tree, Resolver& resolver, const TraceRead& r, const std::atomic<bool>& stop, std::string& buf,
               ReplayStats& st) {
  std::optional<Attr> a = resolver.Resolve(r.path);
  if (!a || !S_ISREG(a->mode)) {
    ++st.missing;
    return;
  }
  bool failed = false, eof = false;
  uint64_t pos = r.offset, end = r.offset + r.length;
  while (pos < end && !eof && !stop) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - pos));
    auto n = tree.Read(a->ino, pos, buf.data(), want);
    if (!n.ok()) {
      failed = true;
      break;
    }
    st.bytes += *n;
    pos += *n;
    eof = *n < want;
  }
  if (failed) {
    ++st.failed;
  } else if (pos >= end || eof) {
    ++st.reads;
  }
}

}  // namespace

ReplayStats Replay(Tree& tree, const Trace& trace, const std::atomic<bool>& stop,
                   const std::function<void(const ReplayStats&)>& progress, size_t parallel) {
  constexpr size_t kPiece = 1 << 20;
  if (parallel <= 1) {
    ReplayStats st;
    Resolver resolver(tree);
    std::string buf(kPiece, '\0');
    for (const TraceRead& r : trace.reads) {
      if (stop) break;
      ReplayOne(tree, resolver, r, stop, buf, st);
      if (progress) progress(st);
    }
    return st;
  }
  // Ranges are taken in trace order, `parallel` of them in flight at once:
  // a lazy layer's fetches overlap their round trips, and no range starts
  // before every earlier one has.
  std::atomic<size_t> next{0};
  std::mutex mu;
  ReplayStats total;
  auto worker = [&] {
    Resolver resolver(tree);  // its cache is per worker: no lock on lookups
    std::string buf(kPiece, '\0');
    for (size_t i; !stop && (i = next.fetch_add(1)) < trace.reads.size();) {
      ReplayStats one;
      ReplayOne(tree, resolver, trace.reads[i], stop, buf, one);
      std::lock_guard<std::mutex> l(mu);
      total.reads += one.reads;
      total.bytes += one.bytes;
      total.missing += one.missing;
      total.failed += one.failed;
      if (progress) progress(total);
    }
  };
  std::vector<std::thread> threads;
  for (size_t k = 0; k < parallel; ++k) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  return total;
}

}  // namespace ucrfs::index
