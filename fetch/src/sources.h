// Factories of the concrete image sources (private to fetch/).
#pragma once

#include <memory>
#include <string>

#include "ucrfs/fetch/source.h"

namespace ucrfs::fetch {

Result<std::unique_ptr<ImageSource>> OpenRegistrySource(const Reference& ref, const SourceOptions& opts);
Result<std::unique_ptr<ImageSource>> OpenOciLayoutSource(const std::string& dir, const std::string& tag);
// ref: which image of the archive; nullptr takes the only one.
Result<std::unique_ptr<ImageSource>> OpenDockerArchiveSource(const std::string& file, const Reference* ref);

// Copies a local file into a sink, checking it has `expected_size` bytes
// when that is >= 0.
Status StreamFile(const std::string& path, int64_t expected_size, BlobSink& sink);

}  // namespace ucrfs::fetch
