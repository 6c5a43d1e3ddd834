#include "ucrfs/common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <fmt/format.h>

namespace ucrfs {

Status SetupLogging(std::string_view level) {
  auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") {
    return Error(Errc::kInvalidArgument, fmt::format("unknown log level '{}'", level));
  }
  auto logger = spdlog::stderr_color_mt("ucrfs");
  logger->set_pattern("%^%L%$ %H:%M:%S.%e %v");
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
  return Ok();
}

}  // namespace ucrfs
