#include "ucrfs/common/log.h"

#include <spdlog/sinks/rotating_file_sink.h>
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

Status LogToFile(const std::string& path, size_t max_bytes) {
  auto level = spdlog::default_logger()->level();
  std::shared_ptr<spdlog::logger> logger;
  try {
    auto sink = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(path, max_bytes, 1, /*rotate_on_open=*/true);
    logger = std::make_shared<spdlog::logger>("ucrfs-file", std::move(sink));
  } catch (const spdlog::spdlog_ex& e) {
    return Error(Errc::kIo, fmt::format("log file {}: {}", path, e.what()));
  }
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %L [%P] %v");
  logger->set_level(level);
  logger->flush_on(spdlog::level::trace);  // read while the process runs
  spdlog::set_default_logger(logger);
  return Ok();
}

}  // namespace ucrfs
