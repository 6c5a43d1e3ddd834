// Logging: spdlog, to stderr. Nothing that carries a credential (an
// Authorization header, a token, a docker config "auth" value) is ever passed
// to a log call.
#pragma once

#include <string_view>

#include <spdlog/spdlog.h>

#include "ucrfs/common/error.h"

namespace ucrfs {

// Sets up the default logger at the given level: trace, debug, info, warn,
// error, critical or off.
Status SetupLogging(std::string_view level);

}  // namespace ucrfs
