#include "zstd_stream.h"

#include <fcntl.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>

#include <fmt/format.h>

#include "ucrfs/common/file.h"

namespace ucrfs::index {

struct ZstdStream::Impl {
  std::string path;
  UniqueFd fd;
  ZSTD_DStream* ds = nullptr;
  std::unique_ptr<char[]> in_buf;
  size_t in_cap = 0;
  ZSTD_inBuffer in{nullptr, 0, 0};
  uint64_t in_off = 0;  // file offset after the buffered input
  bool eof = false;
  // The last ZSTD_decompressStream result: 0 once a frame is complete and
  // flushed. Starts non-zero so that an empty file counts as truncated.
  size_t hint = 1;
  uint64_t out = 0;

  ~Impl() { ZSTD_freeDStream(ds); }

  Status Refill() {
    for (;;) {
      ssize_t got = ::pread(fd.get(), in_buf.get(), in_cap, static_cast<off_t>(in_off));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return ErrnoError(fmt::format("read {} at offset {}", path, in_off));
      in = ZSTD_inBuffer{in_buf.get(), static_cast<size_t>(got), 0};
      in_off += static_cast<uint64_t>(got);
      eof = got == 0;
      return Ok();
    }
  }

  Result<size_t> Read(char* buf, size_t n) {
    if (n == 0) return size_t{0};
    for (;;) {
      if (in.pos == in.size && !eof) UCRFS_TRY(Refill());
      bool input_done = in.pos == in.size && eof;
      if (input_done && hint == 0) return size_t{0};  // every frame ended cleanly
      ZSTD_outBuffer ob{buf, n, 0};
      size_t r = ZSTD_decompressStream(ds, &ob, &in);
      if (ZSTD_isError(r)) {
        return Error(Errc::kMalformed, fmt::format("{}: corrupt zstd data near offset {}: {}", path,
                                                   in_off - (in.size - in.pos), ZSTD_getErrorName(r)));
      }
      hint = r;
      if (ob.pos > 0) {
        out += ob.pos;
        return ob.pos;
      }
      if (input_done) {  // nothing more will come, and the frame is not finished
        return Error(Errc::kMalformed, fmt::format("{}: truncated zstd stream at offset {}", path, in_off));
      }
    }
  }
};

ZstdStream::ZstdStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ZstdStream::~ZstdStream() = default;

Result<std::unique_ptr<ZstdStream>> ZstdStream::Open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!impl->fd.valid()) return ErrnoError("open " + path);
  impl->ds = ZSTD_createDStream();
  if (!impl->ds) return Error(Errc::kInternal, "ZSTD_createDStream failed");
  // The library's default window limit (128 MiB) stays in force: a frame
  // from a registry that asks for more fails as corrupt instead of making us
  // allocate it.
  size_t r = ZSTD_initDStream(impl->ds);
  if (ZSTD_isError(r)) return Error(Errc::kInternal, fmt::format("ZSTD_initDStream: {}", ZSTD_getErrorName(r)));
  impl->in_cap = ZSTD_DStreamInSize();
  impl->in_buf.reset(new char[impl->in_cap]);
  return std::unique_ptr<ZstdStream>(new ZstdStream(std::move(impl)));
}

Result<size_t> ZstdStream::Read(char* buf, size_t n) { return impl_->Read(buf, n); }
uint64_t ZstdStream::position() const { return impl_->out; }

}  // namespace ucrfs::index
