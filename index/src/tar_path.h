// Tar path normalization, shared with the TOC parser: a lazy layer's TOC
// names files exactly as its tar does, so it must be normalized and refused
// by the same rules (see tar.h).
#pragma once

#include <string>
#include <string_view>

#include "ucrfs/common/error.h"

namespace ucrfs::index {

// Relative, without "." components, duplicate or trailing slashes; "" for the
// root ("/" or "./"). kMalformed for empty names, NUL bytes, absolute paths
// and ".." components.
Result<std::string> NormalizeTarPath(std::string_view raw);

// A path for a one-line message: quoted, unprintable bytes escaped, cut
// after 200 bytes (paths may be many KiB).
std::string QuotePath(std::string_view s);

}  // namespace ucrfs::index
