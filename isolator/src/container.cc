#include "ucrfs/isolator/container.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include "ucrfs/common/file.h"
#include "ucrfs/isolator/launcher.h"

namespace ucrfs::isolator {

using json = nlohmann::json;

std::string ContainersDir(const std::string& work_dir) { return work_dir + "/isolator/containers"; }
std::string ContainerDir(const std::string& work_dir, const std::string& id) {
  return ContainersDir(work_dir) + "/" + id;
}

std::string NewContainerId() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof(b)) != 1) {
    // Never expected; the time and pid still make a unique enough id.
    auto t = std::chrono::steady_clock::now().time_since_epoch().count();
    return fmt::format("{:016x}-{}", static_cast<uint64_t>(t), ::getpid());
  }
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  std::string hex;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) hex += '-';
    hex += fmt::format("{:02x}", b[i]);
  }
  return hex;
}

Status WriteRecord(const std::string& work_dir, const ContainerRecord& r) {
  json j = {{"id", r.id},           {"pid", r.pid},
            {"pid_start", r.pid_start}, {"init_pid", r.init_pid},
            {"init_start", r.init_start}, {"sandbox", r.sandbox},
            {"sandbox_owned", r.sandbox_owned}, {"image", r.image}};
  const std::string dir = ContainerDir(work_dir, r.id);
  if (PathExists(dir)) return WriteFileAtomic(dir + "/container.json", j.dump() + "\n");
  // The directory appears with its record in it: recovery never finds a
  // container directory it cannot tell the owner of.
  const std::string tmp = ContainersDir(work_dir) + "/." + r.id + ".new";
  UCRFS_TRY(MakeDirs(tmp, 0700));
  UCRFS_TRY(WriteFileAtomic(tmp + "/container.json", j.dump() + "\n"));
  if (::rename(tmp.c_str(), dir.c_str()) != 0) return ErrnoError("rename " + tmp + " to " + dir);
  return Ok();
}

Result<std::vector<ContainerRecord>> ListRecords(const std::string& work_dir) {
  std::vector<ContainerRecord> out;
  DIR* d = ::opendir(ContainersDir(work_dir).c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    return ErrnoError("open " + ContainersDir(work_dir));
  }
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;  // ".", "..", and records being written
    ContainerRecord r;
    r.id = name;
    auto body = ReadFile(ContainerDir(work_dir, name) + "/container.json");
    if (body.ok()) {
      json j = json::parse(*body, nullptr, false);
      if (j.is_object()) {
        r.pid = j.value("pid", 0);
        r.pid_start = j.value("pid_start", uint64_t{0});
        r.init_pid = j.value("init_pid", 0);
        r.init_start = j.value("init_start", uint64_t{0});
        r.sandbox = j.value("sandbox", "");
        r.sandbox_owned = j.value("sandbox_owned", false);
        r.image = j.value("image", "");
      }
    }
    out.push_back(std::move(r));
  }
  ::closedir(d);
  return out;
}

bool RunnerAlive(const ContainerRecord& rec) {
  return rec.pid > 0 && rec.pid_start != 0 && ProcessStartTime(rec.pid) == rec.pid_start;
}

Status KillContainer(const ContainerRecord& rec) {
  if (rec.init_pid <= 0 || rec.init_start == 0) return Ok();
  if (ProcessStartTime(rec.init_pid) != rec.init_start) return Ok();
  if (::kill(rec.init_pid, SIGKILL) != 0 && errno != ESRCH)
    return ErrnoError(fmt::format("kill the init {} of container {}", rec.init_pid, rec.id));
  // Not our child: wait for /proc to say it is gone (its new parent reaps it).
  for (int i = 0; i < 1000; ++i) {
    if (ProcessStartTime(rec.init_pid) != rec.init_start) return Ok();
    auto stat = ReadFile(fmt::format("/proc/{}/stat", rec.init_pid));
    if (stat.ok() && stat->find(") Z") != std::string::npos) return Ok();  // a zombie: dead
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Error(Errc::kBusy, fmt::format("the init {} of container {} did not die within 10 s", rec.init_pid, rec.id));
}

Status RemoveContainerDir(const std::string& work_dir, const std::string& id) {
  return RemoveAll(ContainerDir(work_dir, id));
}

Result<std::vector<std::string>> RecoverContainers(const std::string& work_dir,
                                                   const std::function<Status(const std::string&)>& destroy) {
  UCRFS_ASSIGN(auto records, ListRecords(work_dir));
  std::vector<std::string> cleaned;
  std::optional<Error> first;
  for (const auto& r : records) {
    if (RunnerAlive(r)) continue;
    Status st = KillContainer(r);
    if (st.ok()) st = destroy(r.id);
    if (st.ok()) st = RemoveContainerDir(work_dir, r.id);
    if (!st.ok()) {
      spdlog::warn("container {}: {}", r.id, st.error().message());
      if (!first) first = st.error();
      continue;
    }
    cleaned.push_back(r.id);
  }
  if (first) return *first;
  return cleaned;
}

}  // namespace ucrfs::isolator
