// Error and Result<T>: how every ucrfs module reports failure.
//
// No exception crosses a module's API. A function that can fail returns
// Result<T> (or Status, which is Result<void>). An Error carries a code that
// says what kind of failure it is (callers branch on it, e.g. to decide on a
// retry) and a one-line message that names what was wrong, fit to be shown to
// a user as it is.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace ucrfs {

enum class Errc {
  kInvalidArgument,  // bad user input: a malformed reference, flag, path
  kNotFound,         // image, tag, blob or file does not exist
  kUnauthorized,     // 401: no or wrong credentials
  kForbidden,        // 403
  kDigestMismatch,   // content does not hash to the digest that names it
  kMalformed,        // a manifest, config, index or archive that does not parse
  kUnsupported,      // a media type, platform or format ucrfs does not handle
  kNetwork,          // DNS, connect, reset, timeout: worth a retry
  kTls,              // certificate or handshake failure: not worth a retry
  kTooManyRequests,  // 429
  kServer,           // 5xx
  kProtocol,         // an HTTP answer that breaks the registry protocol
  kIo,               // local filesystem failure
  kTooBig,           // over a size limit
  kCanceled,
  kBusy,             // the store is held by another process (a pull): try again
  kInternal,         // a bug
};

std::string_view ErrcName(Errc c);

class [[nodiscard]] Error {
 public:
  Error(Errc code, std::string message) : code_(code), message_(std::move(message)) {}

  Errc code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is "<context>: <message>".
  Error Wrap(std::string_view context) const;

 private:
  Errc code_;
  std::string message_;
};

// Error from errno, e.g. ErrnoError("open /x") -> "open /x: No such file...".
Error ErrnoError(std::string_view what, int err);
Error ErrnoError(std::string_view what);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { assert(!ok()); return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { assert(!ok_); return err_; }

 private:
  Error err_{Errc::kInternal, ""};
  bool ok_ = true;
};

using Status = Result<void>;

inline Status Ok() { return {}; }

}  // namespace ucrfs

// Propagates an error: UCRFS_TRY(status_expr);
#define UCRFS_TRY(expr)                             \
  do {                                              \
    auto&& ucrfs_try_r_ = (expr);                   \
    if (!ucrfs_try_r_.ok()) return ucrfs_try_r_.error(); \
  } while (0)

#define UCRFS_CONCAT_INNER_(a, b) a##b
#define UCRFS_CONCAT_(a, b) UCRFS_CONCAT_INNER_(a, b)
// Binds a value or propagates the error: UCRFS_ASSIGN(auto x, ResultExpr());
#define UCRFS_ASSIGN(decl, expr) \
  UCRFS_ASSIGN_IMPL_(UCRFS_CONCAT_(ucrfs_assign_r_, __LINE__), decl, expr)
#define UCRFS_ASSIGN_IMPL_(tmp, decl, expr) \
  auto tmp = (expr);                        \
  if (!tmp.ok()) return tmp.error();        \
  decl = std::move(tmp).value()
