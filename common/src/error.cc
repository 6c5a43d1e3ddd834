#include "ucrfs/common/error.h"

#include <cstring>

namespace ucrfs {

std::string_view ErrcName(Errc c) {
  switch (c) {
    case Errc::kInvalidArgument: return "invalid argument";
    case Errc::kNotFound: return "not found";
    case Errc::kUnauthorized: return "unauthorized";
    case Errc::kForbidden: return "forbidden";
    case Errc::kDigestMismatch: return "digest mismatch";
    case Errc::kMalformed: return "malformed";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kNetwork: return "network error";
    case Errc::kTls: return "TLS error";
    case Errc::kTooManyRequests: return "too many requests";
    case Errc::kServer: return "server error";
    case Errc::kProtocol: return "protocol error";
    case Errc::kIo: return "I/O error";
    case Errc::kTooBig: return "too big";
    case Errc::kCanceled: return "canceled";
    case Errc::kBusy: return "busy";
    case Errc::kInternal: return "internal error";
  }
  return "unknown";
}

Error Error::Wrap(std::string_view context) const {
  std::string m(context);
  m += ": ";
  m += message_;
  return Error(code_, std::move(m));
}

Error ErrnoError(std::string_view what, int err) {
  std::string m(what);
  m += ": ";
  m += std::strerror(err);
  return Error(err == ENOENT ? Errc::kNotFound : Errc::kIo, std::move(m));
}

Error ErrnoError(std::string_view what) { return ErrnoError(what, errno); }

}  // namespace ucrfs
