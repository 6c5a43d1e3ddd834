// The user a container process runs as, resolved against the image's own
// /etc/passwd and /etc/group, as Docker (runc's user.GetExecUser) does:
//  * USER is a name in passwd, or a number (in passwd or not: a uid no file
//    knows still works, with gid 0 unless GROUP says otherwise);
//  * GROUP is a name in group, or a number;
//  * without GROUP, the primary gid is passwd's and the supplementary groups
//    are every group that lists the user's name; with GROUP, only it.
// Appc's user/group may also be an absolute path in the rootfs: its owner.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "ucrfs/common/error.h"

namespace ucrfs::isolator {

struct Credentials {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary
  std::string home = "/";     // passwd's home directory, "/" when unknown
};

struct PasswdEntry {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
};
struct GroupEntry {
  std::string name;
  gid_t gid = 0;
  std::vector<std::string> members;
};

// The files' entries; malformed lines (not enough fields, ids that are not
// numbers) are skipped, as libc does.
std::vector<PasswdEntry> ParsePasswd(std::string_view text);
std::vector<GroupEntry> ParseGroup(std::string_view text);

// Resolution over already-read files. A name found nowhere is kNotFound
// naming it ("user \"x\" is not in the image's /etc/passwd").
Result<Credentials> ResolveUser(const std::string& user, const std::string& group,
                                const std::vector<PasswdEntry>& passwd, const std::vector<GroupEntry>& groups);

// Reads <rootfs>/etc/passwd and /etc/group (missing files are empty)
// without leaving the rootfs, then resolves.
Result<Credentials> ResolveUserInRootfs(const std::string& rootfs, const std::string& user,
                                        const std::string& group);

}  // namespace ucrfs::isolator
