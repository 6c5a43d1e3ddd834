// TarReader over archives made by independent producers: Python's tarfile
// (PAX, GNU, ustar) and GNU tar (GNU format, PAX, every sparse format), plus
// hostile archives patched byte by byte.
#include "ucrfs/index/tar.h"

#include <stdlib.h>
#include <sys/wait.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include <gtest/gtest.h>

#include "../../index/src/file_stream.h"  // private to ucrfs_index; tests reach it by path
#include "harness/test_util.h"
#include "ucrfs/common/file.h"

namespace ucrfs::index {
namespace {

namespace fs = std::filesystem;

using harness::Sh;
using harness::WriteBytes;

// A temporary directory named for this test file.
class TempDir : public harness::TempDir {
 public:
  TempDir() : harness::TempDir("ucrfs-tar-test") {}
};

// Runs `script` with Debian's python3 (stdlib tarfile) in dir.
void Python(const TempDir& dir, const std::string& script, const std::string& args = "") {
  WriteBytes(dir / "gen.py", script);
  ASSERT_EQ(Sh("cd " + dir.path() + " && /usr/bin/python3 gen.py " + args), 0) << script;
}

struct Archive {
  std::vector<TarEntry> entries;
  std::optional<Error> error;
  std::string bytes;  // the whole tar, to check extents against

  const TarEntry* Find(std::string_view path) const {
    for (const auto& e : entries) {
      if (e.path == path) return &e;
    }
    return nullptr;
  }
  // A file's content rebuilt from its extents (holes are zeros).
  std::string Contents(const TarEntry& e) const {
    std::string out(e.size, '\0');
    for (const auto& x : e.extents) {
      EXPECT_LE(x.stream_offset + x.length, bytes.size());
      EXPECT_LE(x.file_offset + x.length, e.size);
      if (x.stream_offset + x.length > bytes.size() || x.file_offset + x.length > e.size) break;
      out.replace(x.file_offset, x.length, bytes, x.stream_offset, x.length);
    }
    return out;
  }
};

Archive ReadTar(const std::string& path) {
  Archive a;
  auto bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok());
  if (bytes.ok()) a.bytes = *bytes;
  auto fs = FileStream::Open(path);
  EXPECT_TRUE(fs.ok()) << (fs.ok() ? "" : fs.error().message());
  if (!fs.ok()) return a;
  TarReader reader(**fs);
  for (;;) {
    TarEntry e;
    auto more = reader.Next(&e);
    if (!more.ok()) {
      a.error = more.error();
      break;
    }
    if (!*more) break;
    a.entries.push_back(std::move(e));
  }
  return a;
}

// ---- Python tarfile: PAX and GNU --------------------------------------

const char* const kMixedScript = R"PY(
import io, sys, tarfile
fmt = {'pax': tarfile.PAX_FORMAT, 'gnu': tarfile.GNU_FORMAT}[sys.argv[1]]
def u(b): return b.decode('utf-8', 'surrogateescape')
LONG = '/'.join('c%03d' % i + 'x' * 196 for i in range(25))
CAP = b'\x02\x00\x00\x02\xff\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00'
tf = tarfile.open(sys.argv[2], 'w', format=fmt)
def add(name, type=tarfile.REGTYPE, data=b'', mode=0o644, uid=0, gid=0, mtime=1600000000, link='', dev=(0, 0), pax=None):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.mtime, ti.linkname = type, mode, uid, gid, mtime, link
    ti.devmajor, ti.devminor = dev
    ti.size = len(data)
    if pax: ti.pax_headers = pax
    tf.addfile(ti, io.BytesIO(data) if data else None)
add('./', tarfile.DIRTYPE, mode=0o755)
add('d', tarfile.DIRTYPE, mode=0o755, uid=70000, gid=70001)
add('d/setuid', data=b'setuid-bin\n', mode=0o4755, uid=4000000, gid=4000001, mtime=1700000000,
    pax={'mtime': '1700000000.5'})
add('d/setgid', data=bytes(range(256)) * 4, mode=0o2755)
add('tmp/', tarfile.DIRTYPE, mode=0o1777)
add('d/link', tarfile.SYMTYPE, mode=0o777, link='../target/x')
add('d/hard', tarfile.LNKTYPE, mode=0o4755, link='./d/setuid')
add('dev/null', tarfile.CHRTYPE, mode=0o666, dev=(1, 3))
add('dev/sda', tarfile.BLKTYPE, mode=0o660, dev=(8, 0))
add('fifo', tarfile.FIFOTYPE)
add('d/' + 'n' * 255, data=b'255')
add(LONG, data=b'long path')
add(u(b'bin/caf\xe9\xff'), data=b'not utf-8')
add('empty')
add('./x//y/', tarfile.DIRTYPE)
add('longlink', tarfile.SYMTYPE, mode=0o777, link='t' * 300)
add('caps', data=b'cap', mode=0o755, pax={'SCHILY.xattr.security.capability': u(CAP),
                                       'SCHILY.xattr.user.comment': 'hello', 'SCHILY.xattr.user.empty': ''})
tf.close()
)PY";

struct Want {
  std::string path;
  EntryType type;
  uint32_t mode;
  std::string data_or_link;
  uint64_t uid = 0, gid = 0;
  int64_t mtime = 1600000000;
  uint32_t nsec = 0;
};

std::string LongPath() {
  std::string p;
  for (int i = 0; i < 25; ++i) {
    char c[8];
    std::snprintf(c, sizeof c, "c%03d", i);
    if (i) p += '/';
    p += c + std::string(196, 'x');
  }
  return p;
}

std::string Bytes256x4() {
  std::string s;
  for (int r = 0; r < 4; ++r) {
    for (int i = 0; i < 256; ++i) s += static_cast<char>(i);
  }
  return s;
}

void CheckMixed(const Archive& a, bool pax) {
  ASSERT_FALSE(a.error) << a.error->message();
  std::vector<Want> want = {
      {"", EntryType::kDir, 0755, ""},
      {"d", EntryType::kDir, 0755, "", 70000, 70001},
      {"d/setuid", EntryType::kFile, 04755, "setuid-bin\n", 4000000, 4000001, 1700000000, pax ? 500000000u : 0u},
      {"d/setgid", EntryType::kFile, 02755, Bytes256x4()},
      {"tmp", EntryType::kDir, 01777, ""},
      {"d/link", EntryType::kSymlink, 0777, "../target/x"},
      {"d/hard", EntryType::kHardlink, 04755, "d/setuid"},
      {"dev/null", EntryType::kCharDev, 0666, ""},
      {"dev/sda", EntryType::kBlockDev, 0660, ""},
      {"fifo", EntryType::kFifo, 0644, ""},
      {"d/" + std::string(255, 'n'), EntryType::kFile, 0644, "255"},
      {LongPath(), EntryType::kFile, 0644, "long path"},
      {"bin/caf\xe9\xff", EntryType::kFile, 0644, "not utf-8"},
      {"empty", EntryType::kFile, 0644, ""},
      {"x/y", EntryType::kDir, 0644, ""},
      {"longlink", EntryType::kSymlink, 0777, std::string(300, 't')},
      {"caps", EntryType::kFile, 0755, "cap"},
  };
  ASSERT_EQ(a.entries.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const TarEntry& e = a.entries[i];
    const Want& w = want[i];
    SCOPED_TRACE(w.path.substr(0, 80));
    EXPECT_EQ(e.path, w.path);
    EXPECT_EQ(e.type, w.type);
    EXPECT_EQ(e.mode, w.mode);
    EXPECT_EQ(e.uid, w.uid);
    EXPECT_EQ(e.gid, w.gid);
    EXPECT_EQ(e.mtime_sec, w.mtime);
    EXPECT_EQ(e.mtime_nsec, w.nsec);
    if (w.type == EntryType::kFile) {
      EXPECT_EQ(e.size, w.data_or_link.size());
      EXPECT_EQ(e.extents.size(), w.data_or_link.empty() ? 0u : 1u);
      EXPECT_EQ(a.Contents(e), w.data_or_link);
    } else {
      EXPECT_EQ(e.size, 0u);
      EXPECT_TRUE(e.extents.empty());
      EXPECT_EQ(e.link_target, w.data_or_link);
    }
  }
  EXPECT_EQ(a.Find("dev/null")->dev_major, 1u);
  EXPECT_EQ(a.Find("dev/null")->dev_minor, 3u);
  EXPECT_EQ(a.Find("dev/sda")->dev_major, 8u);
  EXPECT_EQ(a.Find("dev/sda")->dev_minor, 0u);
  using X = std::vector<std::pair<std::string, std::string>>;
  const std::string cap("\x02\x00\x00\x02\xff\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  // "user.empty" has a zero-length PAX value, which deletes the keyword
  // (POSIX pax, and umoci/Go agree): no such attribute.
  X want_x = pax ? X{{"security.capability", cap}, {"user.comment", "hello"}} : X{};
  EXPECT_EQ(a.Find("caps")->xattrs, want_x);
}

TEST(TarPython, PaxArchiveMetadataAndData) {
  TempDir dir;
  Python(dir, kMixedScript, "pax a.tar");
  CheckMixed(ReadTar(dir / "a.tar"), true);
}

TEST(TarPython, GnuArchiveLongNamesAndBase256Ids) {
  TempDir dir;
  Python(dir, kMixedScript, "gnu a.tar");
  auto bytes = ReadFile(dir / "a.tar");
  ASSERT_TRUE(bytes.ok());
  // The GNU writer really used its extensions: a long-name header and a
  // base-256 uid field.
  EXPECT_NE(bytes->find("././@LongLink"), std::string::npos);
  CheckMixed(ReadTar(dir / "a.tar"), false);
}

TEST(TarPython, UstarPrefixAndFullWidthName) {
  TempDir dir;
  Python(dir, R"PY(
import io, tarfile
tf = tarfile.open('u.tar', 'w', format=tarfile.USTAR_FORMAT)
for name, data in (('p' * 100, b'a'), ('q' * 120 + '/' + 'r' * 100, b'b'), ('./././s/./t', b'c')):
    ti = tarfile.TarInfo(name); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
tf.close()
)PY");
  Archive a = ReadTar(dir / "u.tar");
  ASSERT_FALSE(a.error) << a.error->message();
  ASSERT_EQ(a.entries.size(), 3u);
  EXPECT_EQ(a.entries[0].path, std::string(100, 'p'));
  EXPECT_EQ(a.Contents(a.entries[0]), "a");
  EXPECT_EQ(a.entries[1].path, std::string(120, 'q') + "/" + std::string(100, 'r'));
  EXPECT_EQ(a.Contents(a.entries[1]), "b");
  EXPECT_EQ(a.entries[2].path, "s/t");
}

TEST(TarPython, GlobalPaxHeaderAppliesUntilOverridden) {
  TempDir dir;
  Python(dir, R"PY(
import io, tarfile
tf = tarfile.open('g.tar', 'w', format=tarfile.PAX_FORMAT,
                  pax_headers={'mtime': '1234567890.25', 'uid': '4242', 'SCHILY.xattr.user.g': 'G'})
for name, pax in (('f', {}), ('g', {'uid': '7', 'mtime': '-1.25'})):
    ti = tarfile.TarInfo(name); ti.size = 1; ti.pax_headers = pax; tf.addfile(ti, io.BytesIO(b'1'))
tf.close()
)PY");
  Archive a = ReadTar(dir / "g.tar");
  ASSERT_FALSE(a.error) << a.error->message();
  ASSERT_EQ(a.entries.size(), 2u);
  EXPECT_EQ(a.entries[0].uid, 4242u);
  EXPECT_EQ(a.entries[0].mtime_sec, 1234567890);
  EXPECT_EQ(a.entries[0].mtime_nsec, 250000000u);
  EXPECT_EQ(a.entries[1].uid, 7u);
  EXPECT_EQ(a.entries[1].mtime_sec, -2);  // -1.25 s
  EXPECT_EQ(a.entries[1].mtime_nsec, 750000000u);
  using X = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(a.entries[1].xattrs, (X{{"user.g", "G"}}));
}

TEST(TarPython, LibarchiveXattrsAreUrlAndBase64Decoded) {
  TempDir dir;
  Python(dir, R"PY(
import base64, io, tarfile
tf = tarfile.open('l.tar', 'w', format=tarfile.PAX_FORMAT)
ti = tarfile.TarInfo('la'); ti.size = 1
ti.pax_headers = {
    'LIBARCHIVE.xattr.user.a%3Db': base64.b64encode(b'\x00\x01xyz').decode().rstrip('='),  # unpadded, as bsdtar
    'LIBARCHIVE.xattr.user.pad': base64.b64encode(b'ab').decode(),
    'SCHILY.xattr.user.pad': 'ab',
}
tf.addfile(ti, io.BytesIO(b'z'))
tf.close()
)PY");
  Archive a = ReadTar(dir / "l.tar");
  ASSERT_FALSE(a.error) << a.error->message();
  ASSERT_EQ(a.entries.size(), 1u);
  using X = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(a.entries[0].xattrs, (X{{"user.a=b", std::string("\0\1xyz", 5)}, {"user.pad", "ab"}}));
}

// ---- GNU tar ----------------------------------------------------------

TEST(TarGnuTar, GnuFormatBase256OwnersLinksAndNanosecondPax) {
  TempDir dir;
  ASSERT_EQ(Sh("cd " + dir.path() + " && mkdir src && printf hi > src/f && chmod 4755 src/f && ln src/f src/h && "
               "ln -s f src/s && mkfifo src/p && mkdir -m 2755 src/sg && "
               "touch -h -d '2020-01-02 03:04:05.123456789' src/f src/s src/p src/sg src && "
               "tar --format=gnu --sort=name --owner=4000000 --group=4000001 --numeric-owner -cf gnu.tar -C src . && "
               "tar --format=posix --sort=name -cf posix.tar -C src ."),
            0);
  for (const char* name : {"gnu.tar", "posix.tar"}) {
    SCOPED_TRACE(name);
    bool posix = std::string(name) == "posix.tar";
    Archive a = ReadTar(dir / name);
    ASSERT_FALSE(a.error) << a.error->message();
    ASSERT_EQ(a.entries.size(), 6u);
    EXPECT_EQ(a.entries[0].path, "");
    const TarEntry* f = a.Find("f");
    const TarEntry* h = a.Find("h");
    ASSERT_TRUE(f && h);
    EXPECT_EQ(f->type, EntryType::kFile);
    EXPECT_EQ(f->mode, 04755u);
    EXPECT_EQ(a.Contents(*f), "hi");
    EXPECT_EQ(h->type, EntryType::kHardlink);
    EXPECT_EQ(h->link_target, "f");
    EXPECT_EQ(a.Find("s")->type, EntryType::kSymlink);
    EXPECT_EQ(a.Find("s")->link_target, "f");
    EXPECT_EQ(a.Find("p")->type, EntryType::kFifo);
    EXPECT_EQ(a.Find("sg")->mode & 07777, 02755u);
    EXPECT_EQ(f->mtime_sec, a.Find("sg")->mtime_sec);
    if (posix) {
      EXPECT_EQ(f->mtime_nsec, 123456789u);
    } else {
      EXPECT_EQ(f->uid, 4000000u);
      EXPECT_EQ(f->gid, 4000001u);
      EXPECT_EQ(f->mtime_nsec, 0u);
    }
  }
}

class TarSparse : public ::testing::TestWithParam<const char*> {};

TEST_P(TarSparse, ExtentsRebuildTheFile) {
  TempDir dir;
  // Nine data runs (more than the four an old GNU header holds, so extension
  // blocks are used), the file ending in a hole.
  std::string cmd = "cd " + dir.path() + " && truncate -s 10M sp";
  for (int i = 1; i <= 17; i += 2) {
    cmd += " && dd if=/dev/urandom of=sp bs=4096 seek=" + std::to_string(i * 50) + " count=" + std::to_string(i) +
           " conv=notrunc status=none";
  }
  cmd += std::string(" && tar ") + GetParam() + " --sparse -cf s.tar sp";
  ASSERT_EQ(Sh(cmd), 0);
  auto original = ReadFile(dir / "sp");
  ASSERT_TRUE(original.ok());
  Archive a = ReadTar(dir / "s.tar");
  ASSERT_FALSE(a.error) << a.error->message();
  ASSERT_EQ(a.entries.size(), 1u);
  const TarEntry& e = a.entries[0];
  EXPECT_EQ(e.path, "sp");
  EXPECT_EQ(e.type, EntryType::kFile);
  EXPECT_EQ(e.size, 10u << 20);
  EXPECT_EQ(e.extents.size(), 9u);
  EXPECT_LT(a.bytes.size(), 1u << 20);  // it really was stored sparse
  EXPECT_TRUE(a.Contents(e) == *original);
}

INSTANTIATE_TEST_SUITE_P(TarSparse, TarSparse,
                         ::testing::Values("--format=gnu", "--format=pax --sparse-version=0.0",
                                           "--format=pax --sparse-version=0.1", "--format=pax --sparse-version=1.0"));

// ---- hostile archives -------------------------------------------------

void ExpectError(const Archive& a, Errc code, std::string_view mention) {
  ASSERT_TRUE(a.error) << "archive was accepted";
  EXPECT_EQ(a.error->code(), code) << a.error->message();
  EXPECT_NE(a.error->message().find(mention), std::string::npos) << a.error->message();
  EXPECT_EQ(a.error->message().find('\n'), std::string::npos);
}

TEST(TarHostile, EscapingPathsAndLinksAreRejected) {
  TempDir dir;
  Python(dir, R"PY(
import io, tarfile
cases = {
    'dotdot': ('../x', tarfile.REGTYPE, ''),
    'dotdot2': ('a/../../x', tarfile.REGTYPE, ''),
    'abs': ('/etc/passwd', tarfile.REGTYPE, ''),
    'hardlink': ('h', tarfile.LNKTYPE, '../x'),
    'hardlink_abs': ('h', tarfile.LNKTYPE, '/etc/shadow'),
    'hardlink_root': ('h', tarfile.LNKTYPE, './'),
    'volume': ('label', b'V', ''),
}
for out, (name, type, link) in cases.items():
    with tarfile.open(out + '.tar', 'w', format=tarfile.PAX_FORMAT) as tf:
        ok = tarfile.TarInfo('fine'); ok.size = 2; tf.addfile(ok, io.BytesIO(b'ok'))
        ti = tarfile.TarInfo(name); ti.type = type; ti.linkname = link; tf.addfile(ti)
)PY");
  struct Case {
    const char* file;
    Errc code;
    const char* mention;
  };
  for (const Case& c : {Case{"dotdot", Errc::kMalformed, "'../x'"}, Case{"dotdot2", Errc::kMalformed, "'a/../../x'"},
                        Case{"abs", Errc::kMalformed, "'/etc/passwd'"}, Case{"hardlink", Errc::kMalformed, "'../x'"},
                        Case{"hardlink_abs", Errc::kMalformed, "/etc/shadow"},
                        Case{"hardlink_root", Errc::kMalformed, "'h'"}, Case{"volume", Errc::kUnsupported, "'V'"}}) {
    SCOPED_TRACE(c.file);
    Archive a = ReadTar(dir / (std::string(c.file) + ".tar"));
    ASSERT_EQ(a.entries.size(), 1u);  // the good entry before it is still read
    EXPECT_EQ(a.entries[0].path, "fine");
    ExpectError(a, c.code, c.mention);
  }
}

// A tar with files a (600 bytes) and b (10 bytes), written by Python as
// ustar so that header offsets are fixed: a at 0, data 512..1112, b at 1536.
class TarPatched : public ::testing::Test {
 protected:
  void SetUp() override {
    Python(dir_, R"PY(
import io, tarfile
with tarfile.open('t.tar', 'w', format=tarfile.USTAR_FORMAT) as tf:
    for name, data in (('a', b'A' * 600), ('b', b'B' * 10)):
        ti = tarfile.TarInfo(name); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
)PY");
    auto b = ReadFile(dir_ / "t.tar");
    ASSERT_TRUE(b.ok());
    tar_ = *b;
    ASSERT_EQ(tar_[1536], 'b');
  }
  static void SetChecksum(std::string& t, size_t hdr, bool is_signed = false) {
    std::memset(t.data() + hdr + 148, ' ', 8);
    long sum = 0;
    for (size_t i = 0; i < 512; ++i) {
      sum += is_signed ? static_cast<signed char>(t[hdr + i]) : static_cast<unsigned char>(t[hdr + i]);
    }
    std::snprintf(t.data() + hdr + 148, 8, "%06lo", sum);
  }
  Archive Read(const std::string& t) {
    WriteBytes(dir_ / "p.tar", t);
    return ReadTar(dir_ / "p.tar");
  }
  TempDir dir_;
  std::string tar_;
};

TEST_F(TarPatched, Unmodified) {
  Archive a = Read(tar_);
  ASSERT_FALSE(a.error) << a.error->message();
  ASSERT_EQ(a.entries.size(), 2u);
  EXPECT_EQ(a.entries[0].extents, (std::vector<Extent>{{0, 512, 600}}));
  EXPECT_EQ(a.entries[1].extents, (std::vector<Extent>{{0, 2048, 10}}));
}

TEST_F(TarPatched, AbsurdOctalSizeRunsPastTheEnd) {
  std::memcpy(tar_.data() + 124, "77777777777", 11);
  SetChecksum(tar_, 0);
  ExpectError(Read(tar_), Errc::kMalformed, "'a'");
}

TEST_F(TarPatched, AbsurdBase256Size) {
  char field[12] = {static_cast<char>(0x80), 0, 0, 0, 0x10};  // 2^60, base-256
  std::memcpy(tar_.data() + 124, field, 12);
  SetChecksum(tar_, 0);
  Archive a = Read(tar_);
  ExpectError(a, Errc::kMalformed, "'a'");
  EXPECT_NE(a.error->message().find("size"), std::string::npos);
}

TEST_F(TarPatched, BadChecksum) {
  tar_[1536 + 1] = 'x';  // the name of b, checksum unchanged
  Archive a = Read(tar_);
  EXPECT_EQ(a.entries.size(), 1u);
  ExpectError(a, Errc::kMalformed, "offset 1536");
}

TEST_F(TarPatched, SignedChecksumIsAccepted) {
  tar_[1536 + 1] = static_cast<char>(0xe9);
  SetChecksum(tar_, 1536, /*is_signed=*/true);
  Archive a = Read(tar_);
  ASSERT_FALSE(a.error) << a.error->message();
  EXPECT_EQ(a.entries[1].path, "b\xe9");
}

TEST_F(TarPatched, TruncatedInAHeader) {
  Archive a = Read(tar_.substr(0, 1536 + 100));
  EXPECT_EQ(a.entries.size(), 1u);
  ExpectError(a, Errc::kMalformed, "truncated header");
}

TEST_F(TarPatched, TruncatedInData) {
  ExpectError(Read(tar_.substr(0, 900)), Errc::kMalformed, "'a'");
  ExpectError(Read(tar_.substr(0, 2048 + 5)), Errc::kMalformed, "'b'");
}

TEST_F(TarPatched, EndWithoutZeroBlocksOrWithOne) {
  for (size_t len : {size_t{2560}, size_t{2560 + 512}}) {
    Archive a = Read(tar_.substr(0, len));
    ASSERT_FALSE(a.error) << a.error->message();
    EXPECT_EQ(a.entries.size(), 2u);
  }
}

TEST_F(TarPatched, DataAfterALoneZeroBlockIsRejected) {
  std::string t = tar_.substr(0, 1536) + std::string(512, '\0') + tar_.substr(1536);
  ExpectError(Read(t), Errc::kMalformed, "zero block");
}

TEST(TarFileStream, SkipPastTheEndIsMalformed) {
  TempDir dir;
  WriteBytes(dir / "f", "0123456789");
  auto s = FileStream::Open(dir / "f");
  ASSERT_TRUE(s.ok());
  char buf[4];
  ASSERT_TRUE(ReadFull(**s, buf, 4).ok());
  EXPECT_EQ(std::string(buf, 4), "0123");
  ASSERT_TRUE((*s)->Skip(6).ok());
  EXPECT_EQ((*s)->position(), 10u);
  auto st = (*s)->Skip(1);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kMalformed);
  auto r = ReadFull(**s, buf, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kMalformed);
}

}  // namespace
}  // namespace ucrfs::index
