// The ucrfs command: flags and dispatch. The commands live in *_cmds.cc.
#include <algorithm>
#include <cstdio>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "ucrfs/common/log.h"

namespace ucrfs::cli {
namespace {

void AddGlobalFlags(CLI::App& app, GlobalFlags& g) {
  app.add_option("--store,--docker-store-dir", g.store, "Store directory")->capture_default_str();
  app.add_option("--log-level", g.log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str();
  app.add_option("--insecure-registry", g.insecure_registries,
                 "Registry HOST[:PORT] to reach over plain HTTP or unverified TLS (repeatable)")
      ->take_all();
  app.add_option("--registry-ca", g.registry_ca, "PEM file of CA certificates trusted for registries");
  app.add_option("--docker-config", g.docker_config,
                 "Docker config.json with registry credentials (default: $DOCKER_CONFIG/config.json, "
                 "else ~/.docker/config.json)");
  app.add_option("--docker-registry", g.docker_registry,
                 "Registry for names without one (URL or HOST[:PORT]; default registry-1.docker.io), or a "
                 "directory of docker save archives DIR/NAME[:TAG].tar");
  app.add_option("--sandbox-directory", g.sandbox_directory, "Where a container sees its sandbox")
      ->capture_default_str();
  app.add_option("--platform", g.platform,
                 "Platform to pick from multi-platform images, os/arch[/variant] (default: this machine's)");
  app.add_option("--work-dir", g.work_dir,
                 "Where containers' rootfses and scratch directories live (default: STORE/work)");
  app.add_option("--appc-simple-discovery-uri-prefix", g.appc_simple_discovery_uri_prefix,
                 "Where appc: images are found: PREFIX{name}-{version}-{os}-{arch}.aci, PREFIX http://, https://, "
                 "file:// or a directory path (default: https://)");
}

int Main(int argc, char** argv) {
  CLI::App app{
      "ucrfs: container root filesystems from Docker, OCI and Appc images.\n\n"
      "IMAGE is docker://REF or a bare REF ([REGISTRY[:PORT]/]NAME[:TAG|@DIGEST]),\n"
      "oci:DIR[:TAG] (an OCI image layout), docker-archive:FILE[:REF] (docker save), or\n"
      "appc:NAME[,LABEL=VALUE]...[@sha512-ID] (an Appc image by simple discovery)."};
  app.require_subcommand(1);
  GlobalFlags g;
  AddGlobalFlags(app, g);

  std::string image, mountpoint;
  bool json = false, lazy = false;
  MountFlags mf;
  auto* pull = app.add_subcommand("pull", "Fetch an image's manifest, config and layers into the store; print "
                                          "the image manifest digest");
  pull->add_option("IMAGE", image, "Image to pull")->required();
  auto* inspect = app.add_subcommand("inspect", "Show an image's digest, platform, layers and runtime config "
                                                "(from the store if pulled, else from its source)");
  inspect->add_option("IMAGE", image, "Image to inspect")->required();
  inspect->add_flag("--json", json, "One JSON object: digest, layers [{digest, mediaType, size}], config");
  auto* images = app.add_subcommand("images", "List the images in the store");
  images->add_flag("--json", json, "A JSON array of {reference, digest, platform, layers, size, indexed}");
  auto* mount = app.add_subcommand("mount", "Mount an image's merged root filesystem read-only at MOUNTPOINT "
                                            "(pulling and indexing what is missing); returns once it serves");
  mount->add_option("IMAGE", image, "Image to mount")->required();
  mount->add_option("MOUNTPOINT", mountpoint, "An existing directory")->required();
  mount->add_flag("--foreground", mf.foreground, "Keep the server attached until the filesystem is unmounted");
  mount->add_option("--prefetch", mf.prefetch,
                    "Lazy layers: none; landmark (the .prefetch.landmark region at mount); all (that, then the "
                    "rest in the background, yielding to reads); or a trace FILE (from --record: its ranges "
                    "are read in order once the mount serves, then as all). Without it: all, after replaying "
                    "the trace pushed with the image's ucrfs index, if any")
      ->type_name("MODE|FILE")
      ->capture_default_str();
  mount->add_option("--record", mf.record,
                    "Write the order in which file ranges are first read to FILE (JSON), when the server exits "
                    "and every few seconds once something was read")
      ->type_name("FILE");
  mount->add_option("--fetch-timeout", mf.fetch_timeout_s,
                    "Seconds a read of a lazy layer may wait for the network before it fails with EIO")
      ->capture_default_str();
  mount->add_option("--max-cache-size", mf.max_cache_size,
                    "Size limit of the store's chunk cache (e.g. 2G); least recently used pieces are removed "
                    "beyond it, and background fetching stops near it (default: no limit)")
      ->transform(CLI::AsSizeValue(false));
  mount->add_option("--read-ahead", mf.read_ahead,
                    "eStargz and zstd:chunked layers: once a read has fetched what it needs, fetch up to this "
                    "much of what follows it in the layer in a request of its own, while the reader goes on "
                    "(e.g. 512K; helps on fast links, costs on slow ones; 0: none)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  mount->add_option("--backend", mf.backend,
                    "fuse (a read-only FUSE mount served by a background process); overlay (layers unpacked once "
                    "into the store, overlaid, writable); copy (layers copied into MOUNTPOINT); bind (a "
                    "single-layer image's unpacked layer, read-only). Non-fuse backends return with no process "
                    "left; `ucrfs umount` undoes any of them")
      ->capture_default_str();
  auto* recover = app.add_subcommand("recover", "Serve again every FUSE mount of the store whose server died, "
                                              "and forget the records of mounts that are gone");
  std::vector<std::string> live;
  recover->add_option("--live", live,
                      "A container that still runs (repeatable): when given, every other provisioned container "
                      "is destroyed, and the live ones' rootfses serve again")
      ->take_all();
  GcFlags gcf;
  auto* rmi = app.add_subcommand("rmi", "Remove an image from the store, with whatever only it used (refused "
                                        "while a mount serves it)");
  rmi->add_option("IMAGE", image, "Image to remove")->required();
  auto* gc = app.add_subcommand("gc", "Remove the images no live mount uses (all, or with --max-cache-size the "
                                      "least recently used until the store fits), and everything no image "
                                      "uses; refuses to run while a pull holds the store");
  gc->add_option("--keep", gcf.keep, "An image never to remove (repeatable)")->take_all();
  gc->add_option("--max-cache-size", gcf.max_cache_size,
                 "Remove only least recently used images, until blobs, decoded copies and chunks fit in this")
      ->transform(CLI::AsSizeValue(false));
  gc->add_flag("--save", gcf.save, "Keep --max-cache-size and --keep for the store: pulls and mounts then "
                                   "collect by themselves when the store is over the size");
  IndexPushFlags ipf;
  auto* index_cmd = app.add_subcommand("index", "ucrfs indexes kept in registries beside images");
  index_cmd->require_subcommand(1);
  auto* index_push = index_cmd->add_subcommand(
      "push", "Index IMAGE's gzip layers (pulling them) and push the index to IMAGE's repository, tagged "
              "sha256-<manifest hex>.ucrfs, so that mounts anywhere fetch only the spans they read; prints the "
              "index digest and tag");
  index_push->add_option("IMAGE", image, "Image in a registry")->required();
  index_push->add_option("--span", ipf.span, "Decoded bytes between checkpoints (64K..1G): smaller fetches less "
                                             "per read, larger makes a smaller index")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  index_push->add_option("--trace", ipf.trace, "A read trace (mount --record) to push with the index; mounts "
                                               "replay it unless given --prefetch");
  auto* stats = app.add_subcommand("stats", "Show what a mount fetched: requests, bytes, chunk cache hits and "
                                            "misses, time waiting on the network, the link's measured delay and rate, the "
                                            "server's log file");
  stats->add_option("MOUNTPOINT", mountpoint, "The mountpoint")->required();
  stats->add_flag("--json", json, "One JSON object");
  auto* umount = app.add_subcommand("umount", "Unmount a ucrfs mount and wait for its server to exit");
  umount->add_option("MOUNTPOINT", mountpoint, "The mountpoint")->required();
  umount->add_flag("--lazy", lazy, "Detach even if busy (MNT_DETACH)");
  // Not for users: a FUSE mount server starts it to hold the mount's
  // connection across its own death (fusefs/keeper.h). Hidden from --help.
  auto* keeper = app.add_subcommand("fuse-keeper", "");
  keeper->group("");
  keeper->add_option("--mountpoint", mountpoint, "The mount whose connection is kept (for ps)");

  RunFlags rf;
  std::string bundle_dir;
  auto add_run_flags = [&](CLI::App* c) {
    c->add_option("--shell", rf.shell, "Run /bin/sh -c CMD instead of the image's Entrypoint/Cmd")->type_name("CMD");
    c->add_option("--command", rf.command, "Run EXE with the arguments after --, ignoring the image's "
                                           "Entrypoint and Cmd")->type_name("EXE");
    c->add_option("--env,-e", rf.env, "NAME=VALUE over the image's Env (repeatable)")->allow_extra_args(false);
    c->add_option("--user,-u", rf.user, "NAME|UID[:GROUP|GID], resolved in the image's /etc/passwd and "
                                        "/etc/group (default: the image's User, else root)");
    c->add_flag("--docker-ignore-runtime", rf.ignore_runtime,
                "Ignore the image's Entrypoint, Cmd, Env, WorkingDir and User");
    c->add_option("--volume,-v", rf.volumes, "HOST:CONTAINER[:ro|rw] bind mount (repeatable; a relative "
                                             "CONTAINER path is under the sandbox directory)")->allow_extra_args(false);
    c->add_option("--mount", rf.mounts, "type=bind|image|tmpfs,src=...,dst=...[,readonly] (repeatable; "
                                        "type=image provisions the image src lazily)")->allow_extra_args(false);
    c->add_option("--backend", rf.backend, "Rootfs backend: fuse, overlay, copy or bind")->capture_default_str();
    c->add_option("ARGS", rf.pre_args, "Arguments after --: replace the image's Cmd (after its Entrypoint, or "
                                   "after Cmd[0] when there is no Entrypoint)");
  };
  auto* run = app.add_subcommand(
      "run", "Run a command in a container of IMAGE: new mount, PID, UTS and IPC namespaces, the rootfs "
             "(provisioned, writable), /proc, /sys, /dev, the sandbox, volumes; exits with the command's status "
             "(128+N when killed by signal N, 125 when ucrfs itself failed)");
  run->add_option("IMAGE", image, "Image to run (omit with --rootfs)");
  add_run_flags(run);
  run->add_option("--sandbox", rf.sandbox, "Host directory to mount as the sandbox (default: a fresh one under "
                                           "the work dir, removed at exit)");
  run->add_flag("--no-image", rf.no_image,
                "No container image: the host's filesystem in new namespaces, with the sandbox and volumes at host "
                "paths (a relative target is under the sandbox); the arguments are the command line");
  run->add_option("--rootfs", rf.rootfs, "Run in this existing root filesystem directory instead of an image "
                                         "(no runtime config: the arguments are the command line)");
  auto* bundle = app.add_subcommand("bundle", "Write an OCI runtime bundle of IMAGE in DIR: config.json and the "
                                              "rootfs mounted at DIR/rootfs (crun/runc run it; `ucrfs umount "
                                              "DIR/rootfs` ends it)");
  bundle->add_option("IMAGE", image, "Image")->required();
  bundle->add_option("DIR", bundle_dir, "Bundle directory (created if missing; must not hold a bundle)")->required();
  add_run_flags(bundle);
  bundle->add_flag("--read-only", rf.read_only, "A read-only rootfs (root.readonly; no writable upper layer)");
  ProvisionFlags pf;
  std::string container_id;
  auto* provision = app.add_subcommand("provision", "Make a rootfs of IMAGE for container ID under the work dir "
                                                    "(Mesos' layout); print its path");
  provision->add_option("ID", pf.container_id, "Container id ([A-Za-z0-9._-])")->required();
  provision->add_option("IMAGE", pf.image, "Image")->required();
  provision->add_option("--backend", pf.backend, "fuse (lazy; writable through overlayfs), overlay, copy or bind")
      ->capture_default_str();
  provision->add_flag("--read-only", pf.read_only, "No writable upper layer (bind is always read-only)");
  provision->add_flag("--json", pf.json, "One JSON object: rootfs, id, backend, image, digest, runtime config");
  provision->add_option("--fetch-timeout", pf.fetch_timeout_s,
                        "Seconds after which a lazy read that cannot be fetched fails with EIO")
      ->capture_default_str();
  auto* destroy = app.add_subcommand("destroy", "Remove every rootfs of container ID: unmount, end FUSE servers, "
                                                "remove scratch");
  destroy->add_option("ID", container_id, "Container id")->required();
  auto* containers = app.add_subcommand("containers", "List the provisioned containers and their rootfses");
  containers->add_flag("--json", json, "A JSON array of {container, rootfses: [{id, rootfs, backend, writable, image}]}");

  // `run`/`bundle` take the command line after `--` as it is (CLI11 would
  // still look for options of the parent there).
  std::vector<std::string> argl(argv + 1, argv + argc);
  for (size_t i = 0, sub = 0; i < argl.size(); ++i) {
    if (!sub && (argl[i] == "run" || argl[i] == "bundle")) sub = i;
    if (sub && argl[i] == "--") {
      rf.args.assign(argl.begin() + static_cast<std::ptrdiff_t>(i) + 1, argl.end());
      argl.resize(i);
      break;
    }
  }
  std::reverse(argl.begin(), argl.end());  // CLI11 takes a reversed vector

  try {
    app.parse(argl);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (Status st = SetupLogging(g.log_level); !st.ok()) {
    fmt::print(stderr, "ucrfs: error: {}\n", st.error().message());
    return 2;
  }
  Status st;
  rf.args.insert(rf.args.begin(), rf.pre_args.begin(), rf.pre_args.end());
  if (*run) {
    // With --rootfs there is no IMAGE: what CLI11 took for it is argv.
    if (!rf.rootfs.empty() && !image.empty()) rf.args.insert(rf.args.begin(), image), image.clear();
    if (rf.no_image && !image.empty()) rf.args.insert(rf.args.begin(), image), image.clear();
    if (rf.rootfs.empty() && image.empty() && !rf.no_image) {
      fmt::print(stderr, "ucrfs: error: run needs IMAGE (or --rootfs DIR, or --no-image)\n");
      return 2;
    }
    auto r = Run(g, image, rf);
    if (r.ok()) return *r;
    fmt::print(stderr, "ucrfs: error: {}\n", r.error().message());
    return 125;
  }
  if (*bundle) st = Bundle(g, image, bundle_dir, rf);
  if (*pull) st = Pull(g, image);
  if (*inspect) st = Inspect(g, image, json);
  if (*images) st = Images(g, json);
  mf.prefetch_given = mount->count("--prefetch") > 0;
  if (*mount) st = Mount(g, image, mountpoint, mf);
  if (*stats) st = Stats(mountpoint, json);
  if (*index_push) st = IndexPush(g, image, ipf);
  if (*rmi) st = Rmi(g, image);
  if (*recover) st = RecoverRuns(g);
  if (*recover && st.ok() && recover->count("--live") > 0) st = RecoverContainers(g, live);
  if (*recover && st.ok()) st = Recover(g);
  if (*gc) st = Gc(g, gcf);
  if (*umount) st = Umount(mountpoint, lazy);
  if (*provision) st = Provision(g, pf);
  if (*destroy) st = Destroy(g, container_id);
  if (*containers) st = Containers(g, json);
  if (*keeper) st = FuseKeeper();
  if (!st.ok()) {
    fmt::print(stderr, "ucrfs: error: {}\n", st.error().message());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace ucrfs::cli

int main(int argc, char** argv) { return ucrfs::cli::Main(argc, argv); }
