// Binary encoding of LMDB keys and values.
//
// Keys are big-endian fixed-width integers followed by raw bytes, so LMDB's
// byte order sorts them numerically (a cursor walks one directory, one layer,
// one tree in order). Values are little-endian varints and length-prefixed
// byte strings; a Decoder that runs off the end reports kMalformed rather than
// reading past the buffer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "ucrfs/common/error.h"

namespace ucrfs::index {

class Encoder {
 public:
  Encoder& U64BE(uint64_t v) {
    for (int i = 7; i >= 0; --i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  Encoder& Raw(std::string_view s) {
    out_.append(s);
    return *this;
  }
  Encoder& Var(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
    return *this;
  }
  Encoder& SVar(int64_t v) { return Var((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63)); }
  Encoder& Str(std::string_view s) {
    Var(s.size());
    out_.append(s);
    return *this;
  }
  const std::string& str() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  bool done() const { return in_.empty(); }
  uint64_t U64BE() {
    if (in_.size() < 8) return Fail();
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in_[i]);
    in_.remove_prefix(8);
    return v;
  }
  uint64_t Var() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (in_.empty()) return Fail();
      auto b = static_cast<unsigned char>(in_.front());
      in_.remove_prefix(1);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    return Fail();
  }
  int64_t SVar() {
    uint64_t u = Var();
    return static_cast<int64_t>((u >> 1) ^ (~(u & 1) + 1));
  }
  std::string_view Str() {
    uint64_t n = Var();
    if (!ok_ || n > in_.size()) {
      Fail();
      return {};
    }
    std::string_view s = in_.substr(0, n);
    in_.remove_prefix(n);
    return s;
  }
  std::string_view Rest() {
    std::string_view s = in_;
    in_ = {};
    return s;
  }
  // kMalformed naming `what` unless everything decoded cleanly.
  Status Check(std::string_view what) const {
    if (ok_) return Ok();
    return Error(Errc::kMalformed, std::string("store index: corrupt record: ") + std::string(what));
  }

 private:
  uint64_t Fail() {
    ok_ = false;
    in_ = {};
    return 0;
  }
  std::string_view in_;
  bool ok_ = true;
};

}  // namespace ucrfs::index
