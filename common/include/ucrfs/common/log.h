// Logging: spdlog, to stderr (a daemon: to a file). Nothing that carries a
// credential (an Authorization header, a token, a docker config "auth" value)
// is ever passed to a log call.
#pragma once

#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "ucrfs/common/error.h"

namespace ucrfs {

// Sets up the default logger at the given level: trace, debug, info, warn,
// error, critical or off.
Status SetupLogging(std::string_view level);

// From now on the default logger (same level) writes to `path` instead,
// each line with its date and the process id: for a process that has left
// its terminal. An existing file there becomes `path` minus its extension
// plus ".1" and the extension (x.log -> x.1.log), replacing any before it; the
// file is kept under `max_bytes` the same way.
Status LogToFile(const std::string& path, size_t max_bytes = 1 << 20);

}  // namespace ucrfs
