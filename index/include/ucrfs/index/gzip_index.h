// Random access into gzip streams without unpacking them: zlib's zran method.
//
// While a gzip layer is inflated once (for indexing), a checkpoint is taken at
// a deflate block boundary every `span` bytes of output: the output and input
// offsets, the bit offset inside the input byte, and the last 32 KiB of output
// (the window). To read at any output offset later, inflation restarts at the
// nearest checkpoint before it: prime the bits, set the window as dictionary,
// inflate forward. Concatenated gzip members are handled.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ucrfs/index/stream.h"

namespace ucrfs::index {

struct Checkpoint {
  uint64_t out_offset = 0;  // offset in the decoded stream
  uint64_t in_offset = 0;   // offset in the gzip file of the first byte to feed
  uint8_t bits = 0;         // bits of the byte before in_offset still to use (0-7)
  std::string window;       // up to 32 KiB of output preceding out_offset (empty at a member start)

  // Compact binary form for the store (the window is deflated).
  std::string Serialize() const;
  static Result<Checkpoint> Deserialize(std::string_view data);
};

// Inflates a gzip file as a ByteStream, taking checkpoints as it goes. The
// first checkpoint is at offset 0. Errors (bad header, corrupt data, a
// truncated stream, trailing garbage that is not another gzip member) are
// kMalformed.
class GzipIndexingStream final : public ByteStream {
 public:
  // check_crc false skips zlib's CRC-32 and length check of each member (a
  // sixth of the CPU): only for a blob whose digest was verified already,
  // which the store's blobs always are.
  static Result<std::unique_ptr<GzipIndexingStream>> Open(const std::string& path, uint64_t span = 4 << 20,
                                                          bool check_crc = true);
  ~GzipIndexingStream() override;
  Result<size_t> Read(char* buf, size_t n) override;
  uint64_t position() const override;
  // Checkpoints taken so far (all of them once the stream hit its end).
  const std::vector<Checkpoint>& checkpoints() const;

 private:
  struct Impl;
  explicit GzipIndexingStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Checks checkpoints from the store or from elsewhere (an index fetched from a
// registry) before anything inflates from them: the first at 0, in order,
// inside the decoded and compressed sizes, sane bits and windows.
// window_sizes: when the windows are kept elsewhere (a WindowSource), the
// length of each checkpoint's window (0: none, a member start); the
// checkpoints' own windows are then empty.
Status ValidateCheckpoints(const std::vector<Checkpoint>& cps, uint64_t decoded_size, uint64_t compressed_size,
                           const std::string& what, const std::vector<uint64_t>* window_sizes = nullptr);

// Windows of checkpoints that do not carry their own (a lazy gzip layer
// indexed from a v2 ucrfs index keeps them in a separate blob, fetched only
// when inflation starts at that checkpoint).
class WindowSource {
 public:
  virtual ~WindowSource() = default;
  // The length of checkpoint i's window, 0 when it has none.
  virtual const std::vector<uint64_t>& sizes() const = 0;
  // Checkpoint i's window, exactly sizes()[i] bytes, verified.
  virtual Result<std::string> Window(size_t i) = 0;
};

// The compressed bytes a GzipRandomReader inflates: a local file, or a lazy
// layer's spans fetched on demand.
class CompressedInput {
 public:
  virtual ~CompressedInput() = default;
  virtual uint64_t size() const = 0;
  // Names the input in messages.
  virtual const std::string& name() const = 0;
  // Reads up to n bytes at off: at least one unless off is at the end, and
  // possibly fewer than asked (a lazy input stops at the end of a span, so
  // that inflating never fetches more than it needs).
  virtual Result<size_t> ReadSome(uint64_t off, char* buf, size_t n) = 0;
};

// Serves reads at any decoded offset of one gzip file from its checkpoints.
// Decoded data is cached in aligned chunks (LRU, bounded), so sequential reads
// inflate each span once. Thread-safe.
class GzipRandomReader {
 public:
  // The unit of inflation and of the decoded-data cache: a read inflates the
  // whole chunks it touches, from the last checkpoint before the first.
  static constexpr uint64_t kChunk = 64 << 10;

  static Result<std::unique_ptr<GzipRandomReader>> Open(const std::string& path, std::vector<Checkpoint> checkpoints,
                                                        uint64_t decoded_size, size_t cache_bytes = 64 << 20);
  // is_gzip: gzip members (false: one zlib stream). windows: where the
  // checkpoints' windows are when they do not carry them.
  static Result<std::unique_ptr<GzipRandomReader>> Open(std::shared_ptr<CompressedInput> input, bool is_gzip,
                                                        std::vector<Checkpoint> checkpoints, uint64_t decoded_size,
                                                        size_t cache_bytes = 64 << 20,
                                                        std::shared_ptr<WindowSource> windows = nullptr);
  ~GzipRandomReader();
  // Reads len bytes at decoded offset `offset` (fewer only at the end).
  Result<size_t> ReadAt(uint64_t offset, char* buf, size_t len);
  // The checkpoint a read at `offset` would start inflating from, or nullopt
  // when its decoded chunk is cached or a parked inflation will continue to
  // it. A hint (other reads may change either meanwhile): lazy layers fetch
  // that checkpoint's window while the compressed bytes come.
  std::optional<size_t> StartFor(uint64_t offset);

 private:
  struct Impl;
  explicit GzipRandomReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ucrfs::index
