// The one include of the libfuse3 low-level API, with the API version every
// ucrfs source uses. libfuse headers are C; keep -Wpedantic quiet about them
// without relaxing it for our own code.
#pragma once

#define FUSE_USE_VERSION 314

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#include <fuse_lowlevel.h>
#pragma GCC diagnostic pop
