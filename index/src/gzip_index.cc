#include "ucrfs/index/gzip_index.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <optional>
#include <unordered_set>

#include <fmt/format.h>

#include "ucrfs/common/file.h"

namespace ucrfs::index {
namespace {

constexpr size_t kWindowSize = 32768;  // deflate's largest window
constexpr uint8_t kCheckpointVersion = 1;
constexpr size_t kIndexInBuf = 256 << 10;
constexpr size_t kReaderInBuf = 64 << 10;
constexpr uint64_t kChunk = GzipRandomReader::kChunk;
constexpr int kGzipOrZlib = 47;         // 15-bit window, detect gzip or zlib header
constexpr int kRaw = -15;
constexpr size_t kGzipTrailer = 8, kZlibTrailer = 4;
constexpr size_t kMaxParked = 8;  // each holds ~110 KiB (zlib state + input buffer)

Error Corrupt(const std::string& path, uint64_t in_off, const z_stream& s, int ret) {
  if (ret == Z_MEM_ERROR) return Error(Errc::kInternal, fmt::format("{}: out of memory inflating", path));
  const char* msg = s.msg ? s.msg : (ret == Z_NEED_DICT ? "needs a preset dictionary" : "inflate failed");
  return Error(Errc::kMalformed, fmt::format("{}: corrupt gzip data near offset {}: {}", path, in_off, msg));
}

Result<size_t> PreadSome(int fd, void* buf, size_t n, uint64_t off, const std::string& path) {
  for (;;) {
    ssize_t got = ::pread(fd, buf, n, static_cast<off_t>(off));
    if (got >= 0) return static_cast<size_t>(got);
    if (errno != EINTR) return ErrnoError(fmt::format("read {} at offset {}", path, off));
  }
}

// Up to n bytes at off from a CompressedInput, short only at its end.
Result<size_t> ReadFull(CompressedInput& in, char* buf, size_t n, uint64_t off) {
  size_t done = 0;
  while (done < n) {
    UCRFS_ASSIGN(size_t got, in.ReadSome(off + done, buf + done, n - done));
    if (got == 0) break;
    done += got;
  }
  return done;
}

// A file as a CompressedInput.
class FileInput final : public CompressedInput {
 public:
  static Result<std::shared_ptr<FileInput>> Open(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoError("open " + path);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat " + path);
    return std::make_shared<FileInput>(std::move(fd), path, static_cast<uint64_t>(st.st_size));
  }
  FileInput(UniqueFd fd, std::string path, uint64_t size) : fd_(std::move(fd)), path_(std::move(path)), size_(size) {}
  uint64_t size() const override { return size_; }
  const std::string& name() const override { return path_; }
  Result<size_t> ReadSome(uint64_t off, char* buf, size_t n) override { return PreadSome(fd_.get(), buf, n, off, path_); }
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  std::string path_;
  uint64_t size_;
};

// The compressed side of a z_stream: a buffer refilled from an input
// offset, so that offsets of consumed bytes are always known.
class Input {
 public:
  Input(CompressedInput& src, size_t cap) : src_(src), cap_(cap), buf_(new unsigned char[cap]) {}

  void Seek(z_stream& s, uint64_t off) {
    next_ = off;
    s.next_in = buf_.get();
    s.avail_in = 0;
  }
  // Loads more input once the buffer is used up; avail_in stays 0 at EOF.
  Status Refill(z_stream& s) {
    if (s.avail_in > 0) return Ok();
    UCRFS_ASSIGN(size_t got, src_.ReadSome(next_, reinterpret_cast<char*>(buf_.get()), cap_));
    s.next_in = buf_.get();
    s.avail_in = static_cast<uInt>(got);
    next_ += got;
    return Ok();
  }
  // Input offset of the next byte inflate will consume.
  uint64_t Consumed(const z_stream& s) const { return next_ - s.avail_in; }

 private:
  CompressedInput& src_;
  size_t cap_;
  std::unique_ptr<unsigned char[]> buf_;
  uint64_t next_ = 0;  // input offset of the byte after the buffer's content
};

// Whether a gzip member starts at `off`: true, false at a clean end of file,
// kMalformed for anything else.
Result<bool> MemberFollows(CompressedInput& in, uint64_t off) {
  unsigned char magic[2];
  UCRFS_ASSIGN(size_t got, ReadFull(in, reinterpret_cast<char*>(magic), 2, off));
  if (got == 0) return false;
  if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) return true;
  return Error(Errc::kMalformed, fmt::format("{}: trailing garbage at offset {}", in.name(), off));
}

Result<bool> StartsWithGzipMagic(CompressedInput& in) {
  unsigned char magic[2];
  UCRFS_ASSIGN(size_t got, ReadFull(in, reinterpret_cast<char*>(magic), 2, 0));
  return got == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

std::optional<uint64_t> GetVarint(std::string_view* in) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    auto b = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    if (shift == 63 && b > 1) return std::nullopt;
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  return std::nullopt;
}

uint32_t Crc(std::string_view data) {
  return static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
}

Error BadCheckpoint(std::string_view why) {
  return Error(Errc::kMalformed, fmt::format("corrupt gzip checkpoint: {}", why));
}

}  // namespace

// ---- Checkpoint ----------------------------------------------------------
//
// Layout: version byte, varint out_offset, varint in_offset, bits byte,
// varint window length, varint deflated length, deflated window, CRC-32 (LE)
// of everything before it. The CRC catches corruption the fields could not.

std::string Checkpoint::Serialize() const {
  std::string out;
  out.push_back(static_cast<char>(kCheckpointVersion));
  PutVarint(&out, out_offset);
  PutVarint(&out, in_offset);
  out.push_back(static_cast<char>(bits));
  PutVarint(&out, window.size());
  std::string z;
  if (!window.empty()) {
    uLongf zlen = compressBound(static_cast<uLong>(window.size()));
    z.resize(zlen);
    int ret = compress2(reinterpret_cast<Bytef*>(z.data()), &zlen, reinterpret_cast<const Bytef*>(window.data()),
                        static_cast<uLong>(window.size()), Z_BEST_SPEED);
    z.resize(ret == Z_OK ? zlen : 0);  // cannot fail with a compressBound buffer
  }
  PutVarint(&out, z.size());
  out += z;
  uint32_t crc = Crc(out);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  return out;
}

Result<Checkpoint> Checkpoint::Deserialize(std::string_view data) {
  if (data.size() < 5) return BadCheckpoint("too short");
  std::string_view body = data.substr(0, data.size() - 4);
  uint32_t crc = 0;
  for (int i = 0; i < 4; ++i) crc |= static_cast<uint32_t>(static_cast<uint8_t>(data[body.size() + i])) << (8 * i);
  if (crc != Crc(body)) return BadCheckpoint("CRC mismatch");
  if (static_cast<uint8_t>(body[0]) != kCheckpointVersion) {
    return Error(Errc::kUnsupported, fmt::format("gzip checkpoint version {}", static_cast<uint8_t>(body[0])));
  }
  body.remove_prefix(1);
  Checkpoint cp;
  auto out = GetVarint(&body), in = GetVarint(&body);
  if (!out || !in || body.empty()) return BadCheckpoint("bad offsets");
  cp.out_offset = *out;
  cp.in_offset = *in;
  cp.bits = static_cast<uint8_t>(body[0]);
  body.remove_prefix(1);
  auto wlen = GetVarint(&body), zlen = GetVarint(&body);
  if (cp.bits > 7 || !wlen || *wlen > kWindowSize || !zlen || *zlen != body.size() || (*wlen == 0) != (*zlen == 0)) {
    return BadCheckpoint("bad window fields");
  }
  if (*wlen > 0) {
    cp.window.resize(*wlen);
    uLongf got = static_cast<uLongf>(*wlen);
    int ret = uncompress(reinterpret_cast<Bytef*>(cp.window.data()), &got,
                         reinterpret_cast<const Bytef*>(body.data()), static_cast<uLong>(body.size()));
    if (ret != Z_OK || got != *wlen) return BadCheckpoint("window does not inflate");
  }
  return cp;
}

// ---- GzipIndexingStream --------------------------------------------------

struct GzipIndexingStream::Impl {
  std::string path;
  std::shared_ptr<FileInput> file;
  Input in;
  z_stream strm{};
  bool zinit = false;
  bool is_gzip = false;  // a zlib stream cannot have further members
  bool done = false;
  bool check_crc = true;
  uint64_t span;
  uint64_t out = 0;
  uint64_t last_cp_out = 0;
  std::vector<Checkpoint> cps;

  Impl(std::string p, std::shared_ptr<FileInput> f, uint64_t sp)
      : path(std::move(p)), file(std::move(f)), in(*file, kIndexInBuf), span(std::max<uint64_t>(sp, 1)) {}
  ~Impl() {
    if (zinit) inflateEnd(&strm);
  }

  void TakeCheckpoint() {
    Checkpoint cp;
    cp.out_offset = out;
    cp.in_offset = in.Consumed(strm);
    cp.bits = static_cast<uint8_t>(strm.data_type & 7);
    unsigned char w[kWindowSize];
    uInt len = 0;
    inflateGetDictionary(&strm, w, &len);
    cp.window.assign(reinterpret_cast<const char*>(w), len);
    cps.push_back(std::move(cp));
    last_cp_out = out;
  }

  // At the end of a member: the file ends, or another member starts (with a
  // checkpoint of its own, where the reader can parse its header afresh).
  Status EndOfMember() {
    uint64_t pos = in.Consumed(strm);
    if (!is_gzip) {
      if (strm.avail_in == 0) UCRFS_TRY(in.Refill(strm));
      if (strm.avail_in == 0) {
        done = true;
        return Ok();
      }
      return Error(Errc::kMalformed, fmt::format("{}: trailing garbage at offset {}", path, pos));
    }
    UCRFS_ASSIGN(bool more, MemberFollows(*file, pos));
    if (!more) {
      done = true;
      return Ok();
    }
    if (inflateReset(&strm) != Z_OK) return Error(Errc::kInternal, "inflateReset failed");
    if (!check_crc) inflateValidate(&strm, 0);
    if (cps.back().out_offset == out) cps.pop_back();  // an empty member: the new start is as good
    cps.push_back(Checkpoint{out, pos, 0, {}});
    last_cp_out = out;
    return Ok();
  }

  Result<size_t> Read(char* buf, size_t n) {
    if (done || n == 0) return size_t{0};
    strm.next_out = reinterpret_cast<Bytef*>(buf);
    strm.avail_out = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    uInt want = strm.avail_out;
    while (strm.avail_out > 0 && !done) {
      UCRFS_TRY(in.Refill(strm));
      if (strm.avail_in == 0) {
        return Error(Errc::kMalformed, fmt::format("{}: truncated gzip stream at offset {}", path, in.Consumed(strm)));
      }
      // Z_BLOCK (stop at block boundaries) only once a checkpoint is due:
      // inflate runs at full speed in between.
      bool due = out - last_cp_out >= span;
      uInt before = strm.avail_out;
      int ret = inflate(&strm, due ? Z_BLOCK : Z_NO_FLUSH);
      out += before - strm.avail_out;
      if (ret == Z_STREAM_END) {
        UCRFS_TRY(EndOfMember());
        continue;
      }
      if (ret != Z_OK && ret != Z_BUF_ERROR) return Corrupt(path, in.Consumed(strm), strm, ret);
      bool boundary = (strm.data_type & 128) && !(strm.data_type & 64);
      if (due && boundary && out > last_cp_out) TakeCheckpoint();
    }
    return static_cast<size_t>(want - strm.avail_out);
  }
};

GzipIndexingStream::GzipIndexingStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GzipIndexingStream::~GzipIndexingStream() = default;

Result<std::unique_ptr<GzipIndexingStream>> GzipIndexingStream::Open(const std::string& path, uint64_t span,
                                                                     bool check_crc) {
  UCRFS_ASSIGN(auto file, FileInput::Open(path));
  auto impl = std::make_unique<Impl>(path, std::move(file), span);
  UCRFS_ASSIGN(impl->is_gzip, StartsWithGzipMagic(*impl->file));
  if (inflateInit2(&impl->strm, kGzipOrZlib) != Z_OK) return Error(Errc::kInternal, "inflateInit2 failed");
  impl->zinit = true;
  impl->check_crc = check_crc;
  if (!check_crc) inflateValidate(&impl->strm, 0);
  impl->in.Seek(impl->strm, 0);
  impl->cps.push_back(Checkpoint{0, 0, 0, {}});
  return std::unique_ptr<GzipIndexingStream>(new GzipIndexingStream(std::move(impl)));
}

Result<size_t> GzipIndexingStream::Read(char* buf, size_t n) { return impl_->Read(buf, n); }
uint64_t GzipIndexingStream::position() const { return impl_->out; }
const std::vector<Checkpoint>& GzipIndexingStream::checkpoints() const { return impl_->cps; }

// ---- GzipRandomReader ----------------------------------------------------

namespace {

using ChunkPtr = std::shared_ptr<const std::string>;

// Inflates forward from one checkpoint, across member boundaries.
class Inflater {
 public:
  Inflater(CompressedInput& src, bool is_gzip) : src_(src), path_(src.name()), is_gzip_(is_gzip),
                                                 in_(src, kReaderInBuf) {}
  ~Inflater() {
    if (init_) inflateEnd(&strm_);
  }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  // A checkpoint with a window is mid-member (raw deflate); one without is a
  // member's first byte (a gzip header to parse).
  Status Start(const Checkpoint& cp) {
    raw_ = !cp.window.empty();
    if (inflateInit2(&strm_, raw_ ? kRaw : kGzipOrZlib) != Z_OK) return Error(Errc::kInternal, "inflateInit2 failed");
    init_ = true;
    in_.Seek(strm_, cp.in_offset);
    pos_ = cp.out_offset;
    if (cp.bits > 0) {
      unsigned char b = 0;
      UCRFS_ASSIGN(size_t got, ReadFull(src_, reinterpret_cast<char*>(&b), 1, cp.in_offset - 1));
      if (got != 1) return Error(Errc::kMalformed, fmt::format("{}: checkpoint past the end of the file", path_));
      inflatePrime(&strm_, cp.bits, b >> (8 - cp.bits));
    }
    if (raw_ && inflateSetDictionary(&strm_, reinterpret_cast<const Bytef*>(cp.window.data()),
                                     static_cast<uInt>(cp.window.size())) != Z_OK) {
      return Error(Errc::kInternal, "inflateSetDictionary failed");
    }
    return Ok();
  }

  uint64_t pos() const { return pos_; }

  // Decodes exactly n bytes; kMalformed if the compressed data ends first.
  Status Produce(char* out, size_t n) {
    strm_.next_out = reinterpret_cast<Bytef*>(out);
    strm_.avail_out = static_cast<uInt>(n);
    while (strm_.avail_out > 0) {
      UCRFS_TRY(in_.Refill(strm_));
      if (strm_.avail_in == 0) return Truncated();
      uInt before = strm_.avail_out;
      int ret = inflate(&strm_, Z_NO_FLUSH);
      pos_ += before - strm_.avail_out;
      if (ret == Z_STREAM_END) {
        if (strm_.avail_out > 0) UCRFS_TRY(NextMember());  // else the next call gets Z_STREAM_END again
      } else if (ret != Z_OK && ret != Z_BUF_ERROR) {
        return Corrupt(path_, in_.Consumed(strm_), strm_, ret);
      }
    }
    return Ok();
  }

 private:
  Error Truncated() const {
    return Error(Errc::kMalformed,
                 fmt::format("{}: gzip data ends at decoded offset {}, before the indexed size", path_, pos_));
  }

  // More output is needed past the end of a member: move to the next one.
  // Raw inflate (from a mid-member checkpoint) leaves the trailer unread.
  Status NextMember() {
    if (raw_) {
      for (size_t skip = is_gzip_ ? kGzipTrailer : kZlibTrailer; skip > 0;) {
        UCRFS_TRY(in_.Refill(strm_));
        if (strm_.avail_in == 0) return Truncated();
        uInt take = static_cast<uInt>(std::min<size_t>(skip, strm_.avail_in));
        strm_.next_in += take;
        strm_.avail_in -= take;
        skip -= take;
      }
    }
    uint64_t at = in_.Consumed(strm_);
    UCRFS_ASSIGN(bool more, is_gzip_ ? MemberFollows(src_, at) : Result<bool>(false));
    if (!more) return Truncated();
    raw_ = false;
    if (inflateReset2(&strm_, kGzipOrZlib) != Z_OK) return Error(Errc::kInternal, "inflateReset2 failed");
    return Ok();
  }

  CompressedInput& src_;
  const std::string& path_;
  bool is_gzip_;
  Input in_;
  z_stream strm_{};
  bool init_ = false;
  bool raw_ = false;
  uint64_t pos_ = 0;
};

}  // namespace

struct GzipRandomReader::Impl {
  std::shared_ptr<CompressedInput> input;
  bool is_gzip = false;
  std::vector<Checkpoint> cps;
  std::shared_ptr<WindowSource> windows;  // null: every checkpoint carries its window
  uint64_t decoded_size = 0;
  size_t cache_bytes = 0;

  std::mutex mu;
  std::condition_variable cv;  // signalled when a chunk leaves `inflight`
  std::list<uint64_t> lru;     // chunk numbers, most recent first
  struct Slot {
    ChunkPtr data;
    std::list<uint64_t>::iterator it;
  };
  std::unordered_map<uint64_t, Slot> cache;
  std::unordered_set<uint64_t> inflight;  // chunks some thread is inflating
  // Inflaters left where a read stopped: the next read of what follows
  // resumes there instead of at a checkpoint (sequential reads of a span
  // would otherwise inflate its start again for every chunk).
  std::vector<std::unique_ptr<Inflater>> parked;
  size_t cached = 0;

  uint64_t ChunkSize(uint64_t c) const { return std::min(kChunk, decoded_size - c * kChunk); }

  // The last checkpoint at or before `off`.
  size_t Best(uint64_t off) const {
    auto it = std::upper_bound(cps.begin(), cps.end(), off,
                               [](uint64_t o, const Checkpoint& cp) { return o < cp.out_offset; });
    return static_cast<size_t>(it - cps.begin()) - 1;  // cps[0] is at 0
  }

  // Starts inflating at checkpoint i, with its window from the WindowSource
  // when it is kept there (fetched only now: most checkpoints are never
  // started at).
  Status StartAt(Inflater& inf, size_t i) {
    const Checkpoint& cp = cps[i];
    if (!windows || !cp.window.empty() || windows->sizes()[i] == 0) return inf.Start(cp);
    Checkpoint with = cp;
    UCRFS_ASSIGN(with.window, windows->Window(i));
    if (with.window.size() != windows->sizes()[i]) {
      return Error(Errc::kMalformed, fmt::format("{}: window of gzip checkpoint {} has the wrong size", input->name(), i));
    }
    return inf.Start(with);
  }

  void InsertLocked(uint64_t c, ChunkPtr data) {
    if (auto it = cache.find(c); it != cache.end()) return;  // another thread got there first
    lru.push_front(c);
    cached += data->size();
    cache.emplace(c, Slot{std::move(data), lru.begin()});
    while (cached > cache_bytes && !lru.empty()) {
      auto victim = cache.find(lru.back());
      cached -= victim->second.data->size();
      cache.erase(victim);
      lru.pop_back();
    }
  }

  // A cached chunk, or nullptr after claiming it for the caller to inflate.
  // Waits while another thread inflates the same chunk.
  ChunkPtr LookupOrClaim(uint64_t c) {
    std::unique_lock lock(mu);
    for (;;) {
      if (auto it = cache.find(c); it != cache.end()) {
        lru.splice(lru.begin(), lru, it->second.it);
        return it->second.data;
      }
      if (!inflight.contains(c)) break;
      cv.wait(lock);
    }
    inflight.insert(c);
    return nullptr;
  }

  void Release(uint64_t c, ChunkPtr data) {
    std::lock_guard lock(mu);
    inflight.erase(c);
    if (data) InsertLocked(c, std::move(data));
    cv.notify_all();
  }

  // The parked inflater furthest along in [lo, hi], if any.
  std::unique_ptr<Inflater> TakeParked(uint64_t lo, uint64_t hi) {
    std::lock_guard lock(mu);
    auto best = parked.end();
    for (auto it = parked.begin(); it != parked.end(); ++it) {
      uint64_t p = (*it)->pos();
      if (p >= lo && p <= hi && (best == parked.end() || p > (*best)->pos())) best = it;
    }
    if (best == parked.end()) return nullptr;
    auto inf = std::move(*best);
    parked.erase(best);
    return inf;
  }

  std::optional<size_t> StartFor(uint64_t offset) {
    if (offset >= decoded_size) return std::nullopt;
    uint64_t c = offset / kChunk, start = c * kChunk;
    size_t best = Best(start);
    std::lock_guard lock(mu);
    if (cache.contains(c)) return std::nullopt;
    for (const auto& p : parked) {
      if (p->pos() >= cps[best].out_offset && p->pos() <= start) return std::nullopt;  // as TakeParked finds it
    }
    return best;
  }

  void Park(std::unique_ptr<Inflater> inf) {
    if (inf->pos() >= decoded_size) return;
    std::lock_guard lock(mu);
    if (parked.size() >= kMaxParked) parked.erase(parked.begin());  // the oldest
    parked.push_back(std::move(inf));
  }

  // Inflates chunk c, continuing `inf` or a parked inflater when one is on
  // the way (so reads spanning many chunks, and sequential reads, inflate
  // each byte once), else starting at the nearest checkpoint. Every whole
  // chunk passed on the way goes into the cache.
  Result<ChunkPtr> Inflate(uint64_t c, std::unique_ptr<Inflater>& inf) {
    uint64_t start = c * kChunk;
    size_t best = Best(start);
    const Checkpoint& cp = cps[best];
    if (!inf || inf->pos() > start || cp.out_offset > inf->pos()) {
      if (inf) Park(std::move(inf));
      inf = TakeParked(cp.out_offset, start);
    }
    if (!inf) {
      inf = std::make_unique<Inflater>(*input, is_gzip);
      UCRFS_TRY(StartAt(*inf, best));
    }
    while (inf->pos() < start) {
      uint64_t p = inf->pos();
      if (p % kChunk != 0) {  // a checkpoint inside a chunk: that chunk's head is not available here
        std::string scratch(kChunk - p % kChunk, '\0');
        UCRFS_TRY(inf->Produce(scratch.data(), scratch.size()));
        continue;
      }
      auto chunk = std::make_shared<std::string>(ChunkSize(p / kChunk), '\0');
      UCRFS_TRY(inf->Produce(chunk->data(), chunk->size()));
      std::lock_guard lock(mu);
      InsertLocked(p / kChunk, std::move(chunk));
    }
    auto chunk = std::make_shared<std::string>(ChunkSize(c), '\0');
    UCRFS_TRY(inf->Produce(chunk->data(), chunk->size()));
    return ChunkPtr(std::move(chunk));
  }

  Result<size_t> ReadAt(uint64_t offset, char* buf, size_t len) {
    if (offset >= decoded_size) return size_t{0};
    len = static_cast<size_t>(std::min<uint64_t>(len, decoded_size - offset));
    std::unique_ptr<Inflater> inf;
    size_t done = 0;
    while (done < len) {
      uint64_t pos = offset + done, c = pos / kChunk;
      ChunkPtr data = LookupOrClaim(c);
      if (!data) {
        auto r = Inflate(c, inf);
        if (!r.ok()) inf.reset();  // its state is unknown after an error
        Release(c, r.ok() ? *r : nullptr);
        if (!r.ok()) return r.error();
        data = std::move(*r);
      }
      size_t in_chunk = static_cast<size_t>(pos - c * kChunk);
      size_t take = std::min(len - done, data->size() - in_chunk);
      std::memcpy(buf + done, data->data() + in_chunk, take);
      done += take;
    }
    if (inf) Park(std::move(inf));
    return done;
  }
};

Status ValidateCheckpoints(const std::vector<Checkpoint>& cps, uint64_t decoded_size, uint64_t file_size,
                           const std::string& path, const std::vector<uint64_t>* window_sizes) {
  auto bad = [&](size_t i, std::string_view why) {
    return Error(Errc::kMalformed, fmt::format("{}: gzip checkpoint {}: {}", path, i, why));
  };
  if (cps.empty()) return decoded_size == 0 ? Ok() : bad(0, "none given");
  if (cps[0].out_offset != 0) return bad(0, "does not start at offset 0");
  if (window_sizes && window_sizes->size() != cps.size()) return bad(0, "windows kept elsewhere do not match");
  for (size_t i = 0; i < cps.size(); ++i) {
    const Checkpoint& cp = cps[i];
    uint64_t window = window_sizes ? (*window_sizes)[i] : cp.window.size();
    if (window_sizes && !cp.window.empty()) return bad(i, "a window both here and elsewhere");
    if (cp.bits > 7 || window > kWindowSize) return bad(i, "bad bits or window");
    if (cp.bits > 0 && (window == 0 || cp.in_offset == 0)) return bad(i, "bits without a window");
    if (cp.in_offset > file_size || cp.out_offset > decoded_size) return bad(i, "past the end");
    if (i > 0 && (cp.out_offset < cps[i - 1].out_offset || cp.in_offset < cps[i - 1].in_offset)) {
      return bad(i, "out of order");
    }
  }
  return Ok();
}


GzipRandomReader::GzipRandomReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GzipRandomReader::~GzipRandomReader() = default;

Result<std::unique_ptr<GzipRandomReader>> GzipRandomReader::Open(const std::string& path,
                                                                 std::vector<Checkpoint> checkpoints,
                                                                 uint64_t decoded_size, size_t cache_bytes) {
  UCRFS_ASSIGN(auto file, FileInput::Open(path));
  UCRFS_ASSIGN(bool is_gzip, StartsWithGzipMagic(*file));
  return Open(std::move(file), is_gzip, std::move(checkpoints), decoded_size, cache_bytes);
}

Result<std::unique_ptr<GzipRandomReader>> GzipRandomReader::Open(std::shared_ptr<CompressedInput> input, bool is_gzip,
                                                                 std::vector<Checkpoint> checkpoints,
                                                                 uint64_t decoded_size, size_t cache_bytes,
                                                                 std::shared_ptr<WindowSource> windows) {
  auto impl = std::make_unique<Impl>();
  UCRFS_TRY(ValidateCheckpoints(checkpoints, decoded_size, input->size(), input->name(),
                                windows ? &windows->sizes() : nullptr));
  impl->windows = std::move(windows);
  impl->is_gzip = is_gzip;
  impl->input = std::move(input);
  impl->cps = std::move(checkpoints);
  impl->decoded_size = decoded_size;
  impl->cache_bytes = cache_bytes;
  return std::unique_ptr<GzipRandomReader>(new GzipRandomReader(std::move(impl)));
}

Result<size_t> GzipRandomReader::ReadAt(uint64_t offset, char* buf, size_t len) {
  return impl_->ReadAt(offset, buf, len);
}

std::optional<size_t> GzipRandomReader::StartFor(uint64_t offset) { return impl_->StartFor(offset); }

}  // namespace ucrfs::index
