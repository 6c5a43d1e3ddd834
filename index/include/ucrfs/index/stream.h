// Sequential byte streams: what layer indexers read a layer through.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ucrfs/common/error.h"

namespace ucrfs::index {

class ByteStream {
 public:
  virtual ~ByteStream() = default;
  // Reads up to n bytes; 0 means end of stream. Short reads are allowed.
  virtual Result<size_t> Read(char* buf, size_t n) = 0;
  // Skips n bytes (kMalformed if the stream ends first). The default reads
  // and discards.
  virtual Status Skip(uint64_t n);
  // Bytes consumed so far (the offset in the decoded stream).
  virtual uint64_t position() const = 0;
};

// Reads exactly n bytes or fails: kMalformed "unexpected end of stream".
Status ReadFull(ByteStream& s, char* buf, size_t n);

}  // namespace ucrfs::index
