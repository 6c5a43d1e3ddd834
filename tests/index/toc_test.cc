// eStargz and zstd:chunked TOCs (toc.h) over blobs made in the test by
// independent producers: a Python (stdlib) eStargz writer that follows the
// spec, and a zstd:chunked writer that follows containers/storage's compressor
// with frames made by the zstd CLI. Negative cases are variants of the same
// producers, or real blobs patched byte by byte.
#include "ucrfs/index/toc.h"

#include <zstd.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness/test_util.h"
#include "ucrfs/common/base64.h"
#include "ucrfs/common/file.h"

namespace ucrfs::index {
namespace {

using harness::Sh;
using harness::WriteBytes;

const char* const kEstargzScript = R"PY(
# An eStargz producer written from the spec (stargz-snapshotter docs/estargz.md):
# each regular file payload (chunk) starts a gzip member, the TOC is the last
# tar entry (stargz.index.json) in its own member, then the 51-byte footer.
import base64, gzip, hashlib, io, json, random, struct, sys, tarfile, time, zlib

MTIME = 1609556645  # 2021-01-02T03:04:05Z
CHUNK = 100000

def sha(b): return 'sha256:' + hashlib.sha256(b).hexdigest()
def pad(n): return b'\0' * ((512 - n % 512) % 512)

def footer(off, legacy=False):
    sub = b'%016xSTARGZ' % off
    extra = sub if legacy else b'SG' + struct.pack('<H', len(sub)) + sub
    f = b'\x1f\x8b\x08\x04\0\0\0\0\0\xff' + struct.pack('<H', len(extra)) + extra + b'\x01\0\0\xff\xff' + b'\0' * 8
    assert len(f) == (47 if legacy else 51)
    return f

class Blob:
    def __init__(self):
        self.out, self.z, self.start, self.used = bytearray(), None, 0, 0
    def close(self):
        if self.z: self.out += self.z.flush(); self.z = None
    def member(self, level=9):  # starts a new gzip member, returns its offset
        self.close()
        self.z, self.start, self.used = zlib.compressobj(level, zlib.DEFLATED, 31), len(self.out), 0
        return self.start
    def write(self, b):
        if not self.z: self.member()
        self.out += self.z.compress(b); self.used += len(b)

def header(name, typ, size=0, mode=0o644, uid=0, gid=0, link='', dev=(0, 0), pax=None):
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.mode, ti.uid, ti.gid, ti.mtime, ti.linkname = typ, size, mode, uid, gid, MTIME, link
    ti.devmajor, ti.devminor = dev
    if pax: ti.pax_headers = pax
    return ti.tobuf(tarfile.PAX_FORMAT, 'utf-8', 'surrogateescape')

def build(variant):
    rnd = random.Random(7)
    files = {}
    b, toc = Blob(), []
    def ent(name, typ, **kw):
        e = {'name': name, 'type': typ, 'modtime': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(MTIME))}
        e.update({k: v for k, v in kw.items() if v})
        toc.append(e)
        return e
    def other(name, typ, tt, mode=0o755, link='', dev=(0, 0), **kw):
        b.write(header(name, tt, mode=mode, link=link, dev=dev))
        ent(name, typ, mode=mode, linkName=link, devMajor=dev[0], devMinor=dev[1], **kw)
    def reg(name, data, mode=0o644, uid=0, gid=0, xattrs=None, level=9, chunk=CHUNK):
        files[name] = data
        b.write(header(name, tarfile.REGTYPE, len(data), mode, uid, gid,
                       pax={'SCHILY.xattr.' + k: v for k, v in (xattrs or {}).items()}))
        e = ent(name, 'reg', size=len(data), mode=mode, uid=uid, gid=gid, digest=sha(data),
                xattrs={k: base64.b64encode(v.encode()).decode() for k, v in (xattrs or {}).items()})
        done = 0
        while done < len(data):
            n = min(chunk, len(data) - done)
            if done: e = ent(name, 'chunk', chunkOffset=done)
            e['offset'] = b.member(level)
            if n == chunk and done + n < len(data): e['chunkSize'] = n  # the last chunk says 0: "to the end"
            e['chunkDigest'] = sha(data[done:done + n])
            b.write(data[done:done + n]); done += n
        b.write(pad(len(data)))  # padding and the next headers stay in the last member, as the Go writer does
        return e

    other('etc/', 'dir', tarfile.DIRTYPE)
    hello = b'hello, world\n'
    e = reg('../evil' if variant == 'dotdot' else 'etc/hello.txt', hello, uid=1000, gid=1001,
            xattrs={'user.comment': 'hi there'})
    if variant == 'nodigest': del e['digest'], e['chunkDigest']
    lm = '.no.prefetch.landmark' if variant == 'noprefetch' else '.prefetch.landmark'
    landmark = reg(lm, b'\x0f')['offset']
    big = rnd.randbytes(250000)
    reg('big.bin', big, mode=0o4755)
    if variant == 'hole':
        [c for c in toc if c['type'] == 'chunk'][0]['chunkOffset'] += 1
    # Two small files sharing one gzip member, told apart by innerOffset.
    other('small/', 'dir', tarfile.DIRTYPE)
    shared = b.member()
    for name, data in (('small/a.txt', b'A' * 700), ('small/b.txt', b'bee\n' * 50)):
        files[name] = data
        b.write(header(name, tarfile.REGTYPE, len(data)))
        ent(name, 'reg', size=len(data), mode=0o644, digest=sha(data), offset=shared, innerOffset=b.used,
            chunkDigest=sha(data))
        b.write(data + pad(len(data)))
    reg('stored.txt', b'STORED-CONTENT-' * 40, level=0)
    reg('empty', b'')
    files['empty'] = b''
    other('link', 'symlink', tarfile.SYMTYPE, mode=0o777, link='etc/hello.txt')
    other('hard', 'hardlink', tarfile.LNKTYPE, mode=0o644, link='./etc/hello.txt')
    other('null', 'char', tarfile.CHRTYPE, mode=0o666, dev=(1, 3))
    other('fifo', 'fifo', tarfile.FIFOTYPE, mode=0o600)
    b.close()
    toc_off = b.member()
    tj = json.dumps({'version': 1, 'entries': toc}, indent='\t').encode()
    b.write(header('stargz.index.json', tarfile.REGTYPE, len(tj)) + tj + pad(len(tj)) + b'\0' * 1024)
    b.close()
    blob = bytes(b.out) + footer(toc_off, variant == 'legacy')
    # Self-check: the blob must still be an ordinary tar.gz of the same files.
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tf:
        for m in tf.getmembers():
            if m.isfile() and m.name in files: assert tf.extractfile(m).read() == files[m.name], m.name
    meta = {'toc_digest': sha(tj), 'toc_offset': toc_off, 'landmark_offset': landmark,
            'files': {k: base64.b64encode(v).decode() for k, v in files.items()}}
    return blob, meta

for v in ('good', 'legacy', 'noprefetch', 'hole', 'dotdot', 'nodigest'):
    blob, meta = build(v)
    open(v + '.esgz', 'wb').write(blob)
    json.dump(meta, open(v + '.json', 'w'))
# An ordinary gzip'd layer: no footer.
with tarfile.open('plain.tar.gz', 'w:gz') as tf:
    ti = tarfile.TarInfo('f'); ti.size = 3; tf.addfile(ti, io.BytesIO(b'abc'))
)PY";

const char* const kZstdChunkedScript = R"PY(
# A zstd:chunked producer following containers/storage's compressor: tar
# headers and each payload chunk in their own zstd frames (made by the zstd
# CLI), the manifest zstd-compressed in a skippable frame, then the footer in
# a skippable frame: 40 bytes ("GnUlInUx") or the newer 64 ("GNUlInUx").
import base64, hashlib, json, random, struct, subprocess, sys, tarfile

def sha(b): return 'sha256:' + hashlib.sha256(b).hexdigest()
def pad(n): return b'\0' * ((512 - n % 512) % 512)
def zstd(b): return subprocess.run(['zstd', '-q', '-c', '-3'], input=b, stdout=subprocess.PIPE, check=True).stdout
def skippable(b): return b'\x50\x2a\x4d\x18' + struct.pack('<I', len(b)) + b
MODTIME = '2023-05-06T07:08:09.123456789Z'

def header(name, typ, size=0, mode=0o644, link=''):
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.mode, ti.mtime, ti.linkname = typ, size, mode, 1683356889, link
    return ti.tobuf(tarfile.PAX_FORMAT, 'utf-8', 'surrogateescape')

out, pending, toc, files = bytearray(), bytearray(), [], {}
def flush():
    global pending
    if pending: out.extend(zstd(bytes(pending))); pending = bytearray()

def reg(name, pieces, mode=0o100644, xattrs=None):
    data = b''.join(d for d, _ in pieces)
    files[name.lstrip('./')] = data
    pending.extend(header(name, tarfile.REGTYPE, len(data), mode & 0o7777))
    main = {'type': 'reg', 'name': name, 'mode': mode, 'size': len(data), 'uid': 1000, 'gid': 1000,
            'modtime': MODTIME, 'accesstime': MODTIME}
    if xattrs: main['xattrs'] = {k: base64.b64encode(v).decode() for k, v in xattrs.items()}
    entries = [main]
    if data:
        main['digest'] = sha(data)
        flush()
        main['offset'] = len(out)
        pos = 0
        for i, (d, kind) in enumerate(pieces):
            e = main if i == 0 else {'type': 'chunk', 'name': name, 'chunkOffset': pos}
            if len(pieces) > 1:
                e.update(offset=len(out), chunkSize=len(d), chunkDigest=sha(d))
                if kind: e['chunkType'] = kind
            if i: entries.append(e)
            out.extend(zstd(d)); pos += len(d)
        main['endOffset'] = len(out)
    pending.extend(pad(len(data)))
    toc.extend(entries)

rnd = random.Random(3)
pending.extend(header('etc/', tarfile.DIRTYPE, mode=0o755))
toc.append({'type': 'dir', 'name': 'etc/', 'mode': 0o40755, 'modtime': MODTIME})
reg('./etc/hello.txt', [(b'hello, zstd\n', '')], xattrs={'user.k': b'v\x00w'})
reg('big.bin', [(rnd.randbytes(70000), ''), (b'\0' * 20000, 'zeros'), (rnd.randbytes(30000), '')], mode=0o104755)
reg('empty', [])
pending.extend(header('link', tarfile.SYMTYPE, mode=0o777, link='big.bin'))
toc.append({'type': 'symlink', 'name': 'link', 'linkName': 'big.bin', 'mode': 0o120777, 'modtime': MODTIME})
pending.extend(b'\0' * 1024)
flush()

manifest = json.dumps({'version': 1, 'entries': toc}, separators=(',', ':')).encode()
cman = zstd(manifest)
man_off = len(out) + 8
out.extend(skippable(cman))
new = sys.argv[1] == 'new'
if new:
    tarsplit = zstd(b'{"type":1}\n')
    ts_off = len(out) + 8
    out.extend(skippable(tarsplit))
    out.extend(skippable(struct.pack('<7Q', man_off, len(cman), len(manifest), 1, ts_off, len(tarsplit), 11)
                         + b'GNUlInUx'))
else:
    out.extend(skippable(struct.pack('<4Q', man_off, len(cman), len(manifest), 1) + b'GnUlInUx'))
# Self-check: the blob is an ordinary tar+zstd (skippable frames are ignored).
plain = subprocess.run(['zstd', '-q', '-d', '-c'], input=bytes(out), stdout=subprocess.PIPE, check=True).stdout
assert len(plain) % 512 == 0
open(sys.argv[2] + '.zst', 'wb').write(out)
json.dump({'manifest_checksum': sha(cman), 'toc_digest': sha(manifest), 'offset': man_off, 'size': len(cman),
           'raw_size': len(manifest), 'files': {k: base64.b64encode(v).decode() for k, v in files.items()}},
          open(sys.argv[2] + '.json', 'w'))
)PY";

// The producers' output, made once per test suite.
class Blobs {
 public:
  static Blobs& Get() {
    static Blobs b;  // made by the first test that needs it; its directory is removed at exit
    return b;
  }
  const std::string& dir() const { return dir_.path(); }
  bool ok() const { return ok_; }

 private:
  Blobs() : dir_("ucrfs-toc-test") {
    WriteBytes(dir_ / "estargz.py", kEstargzScript);
    WriteBytes(dir_ / "zchunked.py", kZstdChunkedScript);
    ok_ = Sh("cd " + dir_.path() + " && /usr/bin/python3 estargz.py && /usr/bin/python3 zchunked.py old v1 && " +
             "/usr/bin/python3 zchunked.py new v2") == 0;
  }
  harness::TempDir dir_;
  bool ok_ = false;
};

struct Layer {
  TocFormat format = TocFormat::kEstargz;
  std::string blob;
  nlohmann::json meta;

  Digest Expected(const char* key = "toc_digest") const { return *Digest::Parse(meta[key].get<std::string>()); }
  std::string File(const std::string& path) const { return *Base64Decode(meta["files"][path].get<std::string>()); }
  std::string Tail() const { return blob.substr(blob.size() - std::min<size_t>(kFooterFetchSize, blob.size())); }
  Result<TocLocation> Footer() const { return ParseFooter(format, Tail(), blob.size()); }
  Result<Toc> Index(const Digest& expected) const {
    UCRFS_ASSIGN(TocLocation loc, Footer());
    return ParseToc(loc, std::string_view(blob).substr(loc.offset, loc.size), expected);
  }
  Result<Toc> Index() const { return Index(Expected()); }
  // Every byte of a file, decoded chunk by chunk from its own blob range.
  std::string Read(const Toc& toc, size_t entry) const {
    std::string out;
    for (const Chunk& c : toc.chunks.at(entry)) {
      EXPECT_EQ(c.file_offset, out.size());
      EXPECT_LE(c.blob_offset + c.blob_size, blob.size());
      auto got = DecodeChunk(format, c, std::string_view(blob).substr(c.blob_offset, c.blob_size));
      EXPECT_TRUE(got.ok()) << (got.ok() ? "" : got.error().message());
      if (!got.ok()) break;
      EXPECT_EQ(got->size(), c.size);
      out += *got;
    }
    return out;
  }
};

Layer Load(const std::string& name, TocFormat format = TocFormat::kEstargz) {
  Layer l;
  l.format = format;
  const std::string base = Blobs::Get().dir() + "/" + name;
  auto blob = ReadFile(base + (format == TocFormat::kEstargz ? ".esgz" : ".zst"));
  auto meta = ReadFile(base + ".json");
  EXPECT_TRUE(blob.ok() && meta.ok()) << base;
  if (blob.ok()) l.blob = std::move(*blob);
  if (meta.ok()) l.meta = nlohmann::json::parse(*meta);
  return l;
}

const TarEntry* Find(const Toc& toc, std::string_view path, size_t* index = nullptr) {
  for (size_t i = 0; i < toc.entries.size(); ++i) {
    if (toc.entries[i].path == path) {
      if (index) *index = i;
      return &toc.entries[i];
    }
  }
  return nullptr;
}

class TocEstargz : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(Blobs::Get().ok()) << "the Python producers failed"; }
};
using TocZstdChunked = TocEstargz;

TEST_F(TocEstargz, FooterTocAndEveryChunkRebuildEachFile) {
  Layer l = Load("good");
  auto loc = l.Footer();
  ASSERT_TRUE(loc.ok()) << loc.error().message();
  EXPECT_EQ(loc->format, TocFormat::kEstargz);
  EXPECT_EQ(loc->offset, l.meta["toc_offset"].get<uint64_t>());
  EXPECT_EQ(loc->offset + loc->size, l.blob.size() - 51);
  auto toc = l.Index();
  ASSERT_TRUE(toc.ok()) << toc.error().message();

  std::set<std::string> paths;
  for (const auto& e : toc->entries) paths.insert(e.path);
  EXPECT_EQ(paths, (std::set<std::string>{"etc", "etc/hello.txt", "big.bin", "small", "small/a.txt", "small/b.txt",
                                          "stored.txt", "empty", "link", "hard", "null", "fifo"}));
  EXPECT_EQ(toc->entries.size(), paths.size());
  // Every regular file, rebuilt from its chunks, is what the producer wrote.
  size_t files = 0;
  for (size_t i = 0; i < toc->entries.size(); ++i) {
    const TarEntry& e = toc->entries[i];
    if (e.type != EntryType::kFile) continue;
    ++files;
    EXPECT_TRUE(e.extents.empty()) << e.path;
    ASSERT_EQ(toc->chunks.count(i), 1u) << e.path;
    EXPECT_EQ(l.Read(*toc, i), l.File(e.path)) << e.path;
    EXPECT_EQ(e.size, l.File(e.path).size()) << e.path;
  }
  EXPECT_EQ(files, 6u);

  size_t big_i = 0;
  const TarEntry* big = Find(*toc, "big.bin", &big_i);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->mode, 04755u);
  const auto& chunks = toc->chunks.at(big_i);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].size, 100000u);
  EXPECT_EQ(chunks[2].size, 50000u);  // chunkSize 0 in the TOC: to the end of the file
  // A chunk's compressed bytes run to the start of the next gzip member.
  EXPECT_EQ(chunks[0].blob_offset + chunks[0].blob_size, chunks[1].blob_offset);
  EXPECT_EQ(chunks[1].blob_offset + chunks[1].blob_size, chunks[2].blob_offset);

  // Two files in one member: the same blob range, told apart by inner_offset.
  size_t a_i = 0, b_i = 0;
  ASSERT_NE(Find(*toc, "small/a.txt", &a_i), nullptr);
  ASSERT_NE(Find(*toc, "small/b.txt", &b_i), nullptr);
  const Chunk& a = toc->chunks.at(a_i).at(0);
  const Chunk& b = toc->chunks.at(b_i).at(0);
  EXPECT_EQ(a.blob_offset, b.blob_offset);
  EXPECT_EQ(a.blob_size, b.blob_size);
  EXPECT_GE(a.inner_offset, 512u);
  EXPECT_GT(b.inner_offset, a.inner_offset + a.size);

  size_t empty_i = 0;
  ASSERT_NE(Find(*toc, "empty", &empty_i), nullptr);
  EXPECT_TRUE(toc->chunks.at(empty_i).empty());

  const TarEntry* hello = Find(*toc, "etc/hello.txt");
  ASSERT_NE(hello, nullptr);
  EXPECT_EQ(hello->mode, 0644u);
  EXPECT_EQ(hello->uid, 1000u);
  EXPECT_EQ(hello->gid, 1001u);
  EXPECT_EQ(hello->mtime_sec, 1609556645);
  EXPECT_EQ(hello->mtime_nsec, 0u);
  ASSERT_EQ(hello->xattrs.size(), 1u);
  EXPECT_EQ(hello->xattrs[0], (std::pair<std::string, std::string>{"user.comment", "hi there"}));
  EXPECT_EQ(Find(*toc, "etc")->type, EntryType::kDir);
  EXPECT_EQ(Find(*toc, "link")->type, EntryType::kSymlink);
  EXPECT_EQ(Find(*toc, "link")->link_target, "etc/hello.txt");
  EXPECT_EQ(Find(*toc, "hard")->type, EntryType::kHardlink);
  EXPECT_EQ(Find(*toc, "hard")->link_target, "etc/hello.txt");  // normalized like a path
  EXPECT_EQ(Find(*toc, "null")->type, EntryType::kCharDev);
  EXPECT_EQ(Find(*toc, "null")->dev_major, 1u);
  EXPECT_EQ(Find(*toc, "null")->dev_minor, 3u);
  EXPECT_EQ(Find(*toc, "fifo")->type, EntryType::kFifo);
  EXPECT_EQ(Find(*toc, "fifo")->mode, 0600u);

  // The landmark sets the prefetch end and is not part of the tree.
  EXPECT_EQ(toc->prefetch_end, l.meta["landmark_offset"].get<uint64_t>());
  EXPECT_GT(toc->prefetch_end, 0u);
}

TEST_F(TocEstargz, LegacyFooterFindsTheSameToc) {
  Layer l = Load("legacy");
  auto loc = l.Footer();
  ASSERT_TRUE(loc.ok()) << loc.error().message();
  EXPECT_EQ(loc->offset, l.meta["toc_offset"].get<uint64_t>());
  EXPECT_EQ(loc->offset + loc->size, l.blob.size() - 47);
  auto toc = l.Index();
  ASSERT_TRUE(toc.ok()) << toc.error().message();
  EXPECT_NE(Find(*toc, "big.bin"), nullptr);
}

TEST_F(TocEstargz, NoPrefetchLandmarkMeansNoPrefetchAndIsHidden) {
  Layer l = Load("noprefetch");
  auto toc = l.Index();
  ASSERT_TRUE(toc.ok()) << toc.error().message();
  EXPECT_EQ(toc->prefetch_end, 0u);
  EXPECT_EQ(Find(*toc, ".no.prefetch.landmark"), nullptr);
  EXPECT_EQ(Find(*toc, ".prefetch.landmark"), nullptr);
  EXPECT_NE(Find(*toc, "etc/hello.txt"), nullptr);
}

TEST_F(TocEstargz, WrongExpectedDigestIsRefused) {
  Layer l = Load("good");
  auto toc = l.Index(Digest::Sha256Of("some other TOC"));
  ASSERT_FALSE(toc.ok());
  EXPECT_EQ(toc.error().code(), Errc::kDigestMismatch);
  EXPECT_NE(toc.error().message().find(Digest::Sha256Of("some other TOC").str()), std::string::npos);
  // The digest of the *compressed* TOC is not the eStargz annotation either.
  auto loc = l.Footer();
  ASSERT_TRUE(loc.ok());
  auto compressed = Digest::Sha256Of(std::string_view(l.blob).substr(loc->offset, loc->size));
  EXPECT_EQ(l.Index(compressed).error().code(), Errc::kDigestMismatch);
}

TEST_F(TocEstargz, FooterThatLiesIsMalformed) {
  Layer l = Load("good");
  std::string tail = l.Tail();
  // The 16 hex digits of the TOC offset sit 16 bytes into the 51-byte footer.
  size_t hex = tail.size() - 51 + 16;
  for (uint64_t off : {uint64_t{l.blob.size()} + 100, uint64_t{l.blob.size()} - 30}) {
    std::string t = tail;
    t.replace(hex, 16, fmt::format("{:016x}", off));
    auto loc = ParseFooter(TocFormat::kEstargz, t, l.blob.size());
    ASSERT_FALSE(loc.ok()) << off;
    EXPECT_EQ(loc.error().code(), Errc::kMalformed) << loc.error().message();
  }
  std::string t = tail;
  t.replace(hex, 1, "g");
  EXPECT_EQ(ParseFooter(TocFormat::kEstargz, t, l.blob.size()).error().code(), Errc::kMalformed);
}

TEST_F(TocEstargz, OrdinaryLayersHaveNoFooter) {
  auto plain = ReadFile(Blobs::Get().dir() + "/plain.tar.gz");
  ASSERT_TRUE(plain.ok());
  std::string tail = plain->substr(plain->size() - std::min<size_t>(kFooterFetchSize, plain->size()));
  EXPECT_EQ(ParseFooter(TocFormat::kEstargz, tail, plain->size()).error().code(), Errc::kNotFound);
  EXPECT_EQ(ParseFooter(TocFormat::kZstdChunked, tail, plain->size()).error().code(), Errc::kNotFound);
  EXPECT_EQ(ParseFooter(TocFormat::kEstargz, "\x1f\x8b", 2).error().code(), Errc::kNotFound);
  EXPECT_EQ(ParseFooter(TocFormat::kEstargz, "", 0).error().code(), Errc::kNotFound);
  // An eStargz blob is not a zstd:chunked one.
  Layer l = Load("good");
  EXPECT_EQ(ParseFooter(TocFormat::kZstdChunked, l.Tail(), l.blob.size()).error().code(), Errc::kNotFound);
}

TEST_F(TocEstargz, AlteredChunkBytesAreADigestMismatch) {
  Layer l = Load("good");
  auto toc = l.Index();
  ASSERT_TRUE(toc.ok()) << toc.error().message();
  size_t stored_i = 0, big_i = 0;
  ASSERT_NE(Find(*toc, "stored.txt", &stored_i), nullptr);
  ASSERT_NE(Find(*toc, "big.bin", &big_i), nullptr);

  // stored.txt went through deflate level 0: its bytes are in the blob as
  // they are, so one can be changed and still decode — to the wrong content.
  const Chunk& s = toc->chunks.at(stored_i).at(0);
  std::string data = l.blob.substr(s.blob_offset, s.blob_size);
  size_t at = data.find("STORED-CONTENT-STORED");
  ASSERT_NE(at, std::string::npos);
  data[at + 3] = 'X';
  auto got = DecodeChunk(TocFormat::kEstargz, s, data);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kDigestMismatch);
  EXPECT_NE(got.error().message().find(s.digest.str()), std::string::npos) << got.error().message();

  // A changed byte inside a compressed chunk.
  const Chunk& c = toc->chunks.at(big_i).at(1);
  data = l.blob.substr(c.blob_offset, c.blob_size);
  data[data.size() / 2] ^= 0x55;
  got = DecodeChunk(TocFormat::kEstargz, c, data);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kDigestMismatch) << got.error().message();

  // Too few bytes: the member is cut short.
  got = DecodeChunk(TocFormat::kEstargz, c, std::string_view(l.blob).substr(c.blob_offset, c.blob_size / 2));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kMalformed) << got.error().message();
  // A chunk that claims more bytes than its member holds.
  Chunk longer = toc->chunks.at(stored_i).at(0);
  longer.size += 100000;
  got = DecodeChunk(TocFormat::kEstargz, longer, std::string_view(l.blob).substr(longer.blob_offset, longer.blob_size));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kMalformed) << got.error().message();
}

// A chunk may span gzip members, empty ones included, and each member's
// trailer is checked: the CRC32 and the length, whatever inflates them.
TEST(GzipMembers, ChunksSpanMembersAndEveryTrailerIsChecked) {
  harness::TempDir dir;
  // Members of 1 byte to 300 KB, stored, fast and best, and an empty one:
  // boundaries fall everywhere relative to the inflater's read-ahead.
  ASSERT_EQ(Sh("cd " + dir.path() + " && /usr/bin/python3 -c \"" +
               "import random, zlib\n"
               "r = random.Random(7); parts = []; blob = b''\n"
               "for n, lvl in [(1, 9), (0, 6), (300000, 1), (70000, 0), (5, 9), (123457, 6)]:\n"
               "  data = bytes(r.choice(b'abcdefgh') for _ in range(n)); parts.append(data)\n"
               "  z = zlib.compressobj(lvl, zlib.DEFLATED, 31); blob += z.compress(data) + z.flush()\n"
               "  open('ends', 'a').write('%d\\n' % len(blob))\n"
               "open('blob', 'wb').write(blob); open('plain', 'wb').write(b''.join(parts))\""),
            0);
  std::string blob = ReadFile(dir.path() + "/blob").value();
  std::string plain = ReadFile(dir.path() + "/plain").value();
  uint64_t first_end = std::stoull(ReadFile(dir.path() + "/ends").value());
  ASSERT_EQ(plain.size(), 1u + 300000 + 70000 + 5 + 123457);

  Chunk all;
  all.size = plain.size();
  all.blob_size = blob.size();
  all.digest = Digest::Sha256Of(plain);
  auto got = DecodeChunk(TocFormat::kEstargz, all, blob);
  ASSERT_TRUE(got.ok()) << got.error().message();
  EXPECT_TRUE(*got == plain);

  // A chunk that starts inside the third member and ends in the last.
  Chunk inner = all;
  inner.inner_offset = 1 + 1000;
  inner.size = plain.size() - inner.inner_offset - 10;
  inner.digest = Digest::Sha256Of(std::string_view(plain).substr(inner.inner_offset, inner.size));
  got = DecodeChunk(TocFormat::kEstargz, inner, blob);
  ASSERT_TRUE(got.ok()) << got.error().message();
  EXPECT_TRUE(*got == plain.substr(inner.inner_offset, inner.size));

  // The first member's CRC32 (the 4 bytes before its ISIZE) is wrong.
  std::string bad_crc = blob;
  bad_crc[first_end - 8] ^= 0x01;
  got = DecodeChunk(TocFormat::kEstargz, all, bad_crc);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kDigestMismatch);
  EXPECT_NE(got.error().message().find("incorrect data check"), std::string::npos) << got.error().message();

  // Bytes between two members that do not start a gzip member.
  std::string garbage = blob;
  garbage.insert(first_end, "garbage!");
  got = DecodeChunk(TocFormat::kEstargz, all, garbage);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kDigestMismatch);
  EXPECT_NE(got.error().message().find("incorrect header check"), std::string::npos) << got.error().message();

  // The last member cut inside its deflate data.
  got = DecodeChunk(TocFormat::kEstargz, all, std::string_view(blob).substr(0, blob.size() - 1000));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kMalformed) << got.error().message();
}

TEST_F(TocEstargz, DotDotNameIsRefused) {
  Layer l = Load("dotdot");
  auto toc = l.Index();
  ASSERT_FALSE(toc.ok());
  EXPECT_EQ(toc.error().code(), Errc::kMalformed);
  EXPECT_NE(toc.error().message().find("'..'"), std::string::npos) << toc.error().message();
  EXPECT_NE(toc.error().message().find("../evil"), std::string::npos) << toc.error().message();
}

TEST_F(TocEstargz, ChunksLeavingAHoleAreMalformed) {
  Layer l = Load("hole");
  auto toc = l.Index();
  ASSERT_FALSE(toc.ok());
  EXPECT_EQ(toc.error().code(), Errc::kMalformed);
  EXPECT_NE(toc.error().message().find("hole"), std::string::npos) << toc.error().message();
  EXPECT_NE(toc.error().message().find("big.bin"), std::string::npos) << toc.error().message();
}

TEST_F(TocEstargz, FileWithoutAnyDigestIsRefused) {
  Layer l = Load("nodigest");
  auto toc = l.Index();
  ASSERT_FALSE(toc.ok());
  EXPECT_EQ(toc.error().code(), Errc::kMalformed);
  EXPECT_NE(toc.error().message().find("etc/hello.txt"), std::string::npos) << toc.error().message();
}

TEST_F(TocEstargz, TocBytesOfTheWrongSizeOrCorruptAreRefused) {
  Layer l = Load("good");
  auto loc = l.Footer();
  ASSERT_TRUE(loc.ok());
  std::string data = l.blob.substr(loc->offset, loc->size);
  EXPECT_EQ(ParseToc(*loc, std::string_view(data).substr(1), l.Expected()).error().code(), Errc::kInvalidArgument);
  TocLocation cut = *loc;
  cut.size -= 20;
  EXPECT_EQ(ParseToc(cut, std::string_view(data).substr(0, cut.size), l.Expected()).error().code(), Errc::kMalformed);
  data[data.size() / 2] ^= 0x55;
  auto toc = ParseToc(*loc, data, l.Expected());
  ASSERT_FALSE(toc.ok());
  EXPECT_TRUE(toc.error().code() == Errc::kMalformed || toc.error().code() == Errc::kDigestMismatch)
      << toc.error().message();
}

// ---- zstd:chunked ------------------------------------------------------

TEST_F(TocZstdChunked, BothFootersFindTheManifest) {
  for (const char* name : {"v1", "v2"}) {
    Layer l = Load(name, TocFormat::kZstdChunked);
    auto loc = l.Footer();
    ASSERT_TRUE(loc.ok()) << name << ": " << loc.error().message();
    EXPECT_EQ(loc->format, TocFormat::kZstdChunked);
    EXPECT_EQ(loc->offset, l.meta["offset"].get<uint64_t>()) << name;
    EXPECT_EQ(loc->size, l.meta["size"].get<uint64_t>()) << name;
    EXPECT_EQ(loc->uncompressed_size, l.meta["raw_size"].get<uint64_t>()) << name;
    // An eStargz reader finds nothing there.
    EXPECT_EQ(ParseFooter(TocFormat::kEstargz, l.Tail(), l.blob.size()).error().code(), Errc::kNotFound);
  }
}

TEST_F(TocZstdChunked, FooterThatLiesIsMalformed) {
  Layer l = Load("v1", TocFormat::kZstdChunked);
  std::string tail = l.Tail();
  std::string t = tail;
  t[t.size() - 40] = '\x7f';  // the manifest offset's low byte...
  t[t.size() - 34] = '\x01';  // ...and a high one: far past the blob
  EXPECT_EQ(ParseFooter(TocFormat::kZstdChunked, t, l.blob.size()).error().code(), Errc::kMalformed);
  t = tail;
  t[t.size() - 44] = '\x30';  // the skippable frame's length no longer 40
  EXPECT_EQ(ParseFooter(TocFormat::kZstdChunked, t, l.blob.size()).error().code(), Errc::kMalformed);
  t = tail;
  t[t.size() - 16] = '\x02';  // manifest type 2
  EXPECT_EQ(ParseFooter(TocFormat::kZstdChunked, t, l.blob.size()).error().code(), Errc::kUnsupported);
  // A plain zstd frame has no footer.
  std::string frame = l.blob.substr(0, 64);
  EXPECT_EQ(ParseFooter(TocFormat::kZstdChunked, frame, frame.size()).error().code(), Errc::kNotFound);
}

TEST_F(TocZstdChunked, ManifestChecksumVerifiesAndEveryChunkRebuildsEachFile) {
  for (const char* name : {"v1", "v2"}) {
    Layer l = Load(name, TocFormat::kZstdChunked);
    auto toc = l.Index(l.Expected("manifest_checksum"));
    ASSERT_TRUE(toc.ok()) << name << ": " << toc.error().message();
    std::set<std::string> paths;
    for (const auto& e : toc->entries) paths.insert(e.path);
    EXPECT_EQ(paths, (std::set<std::string>{"etc", "etc/hello.txt", "big.bin", "empty", "link"}));
    for (size_t i = 0; i < toc->entries.size(); ++i) {
      if (toc->entries[i].type == EntryType::kFile) {
        EXPECT_EQ(l.Read(*toc, i), l.File(toc->entries[i].path)) << toc->entries[i].path;
      }
    }
    size_t big_i = 0, hello_i = 0;
    const TarEntry* big = Find(*toc, "big.bin", &big_i);
    const TarEntry* hello = Find(*toc, "etc/hello.txt", &hello_i);
    ASSERT_TRUE(big && hello);
    EXPECT_EQ(big->mode, 04755u);  // the TOC's mode carries S_IFREG: masked off
    EXPECT_EQ(Find(*toc, "etc")->mode, 0755u);
    EXPECT_EQ(hello->mtime_sec, 1683356889);
    EXPECT_EQ(hello->mtime_nsec, 123456789u);
    ASSERT_EQ(hello->xattrs.size(), 1u);
    EXPECT_EQ(hello->xattrs[0].second, std::string("v\0w", 3));
    EXPECT_EQ(Find(*toc, "link")->link_target, "big.bin");
    ASSERT_EQ(toc->chunks.at(big_i).size(), 3u);  // data, zeros, data
    EXPECT_EQ(toc->chunks.at(big_i)[1].size, 20000u);
    // A one-frame file: verified by its whole-file digest, and its bytes end
    // where the TOC's endOffset says, not at the next file's header frame.
    const Chunk& h = toc->chunks.at(hello_i).at(0);
    EXPECT_EQ(h.digest, Digest::Sha256Of(l.File("etc/hello.txt")));
    EXPECT_LT(h.blob_offset + h.blob_size, toc->chunks.at(big_i)[0].blob_offset);
    EXPECT_EQ(toc->prefetch_end, 0u);
  }
}

TEST_F(TocZstdChunked, TocJsonDigestIsAcceptedAndOthersAreNot) {
  Layer l = Load("v1", TocFormat::kZstdChunked);
  auto toc = l.Index(l.Expected("toc_digest"));  // what ctr-remote puts in toc.digest
  ASSERT_TRUE(toc.ok()) << toc.error().message();
  auto bad = l.Index(Digest::Sha256Of("nope"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kDigestMismatch);
}

TEST_F(TocZstdChunked, AlteredOrShortChunksAreRefused) {
  Layer l = Load("v1", TocFormat::kZstdChunked);
  auto toc = l.Index(l.Expected("manifest_checksum"));
  ASSERT_TRUE(toc.ok()) << toc.error().message();
  size_t big_i = 0;
  ASSERT_NE(Find(*toc, "big.bin", &big_i), nullptr);
  const Chunk& c = toc->chunks.at(big_i).at(0);
  std::string data = l.blob.substr(c.blob_offset, c.blob_size);
  data[data.size() / 2] ^= 0x55;
  auto got = DecodeChunk(TocFormat::kZstdChunked, c, data);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kDigestMismatch) << got.error().message();
  // A chunk decoded with the digest of another: kDigestMismatch naming it.
  Chunk other = c;
  other.digest = Digest::Sha256Of("x");
  got = DecodeChunk(TocFormat::kZstdChunked, other, std::string_view(l.blob).substr(c.blob_offset, c.blob_size));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kDigestMismatch);
  EXPECT_NE(got.error().message().find(other.digest.str()), std::string::npos);
  got = DecodeChunk(TocFormat::kZstdChunked, c, std::string_view(l.blob).substr(c.blob_offset, c.blob_size / 2));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kMalformed) << got.error().message();
}

// ---- the TOC's JSON ----------------------------------------------------
// TOCs written here as JSON text (repeated keys, odd types) and given to
// ParseToc as a zstd:chunked manifest, verified by the JSON's digest.

constexpr uint64_t kManifestOffset = uint64_t{1} << 30;
const std::string kHex = std::string(64, 'a');
const std::string kDigest = "sha256:" + kHex;

Result<Toc> FromJson(const std::string& json) {
  std::string z(ZSTD_compressBound(json.size()), '\0');
  size_t n = ZSTD_compress(z.data(), z.size(), json.data(), json.size(), 1);
  EXPECT_FALSE(ZSTD_isError(n));
  z.resize(n);
  TocLocation loc;
  loc.format = TocFormat::kZstdChunked;
  loc.offset = kManifestOffset;
  loc.size = z.size();
  loc.uncompressed_size = json.size();
  return ParseToc(loc, z, Digest::Sha256Of(json));
}

// A TOC of these entries (JSON objects, comma-separated).
Result<Toc> FromEntries(const std::string& entries) {
  return FromJson(R"({"version":1,"entries":[)" + entries + "]}");
}

// A regular file of 3 bytes at blob offset `offset`, with `extra` members.
std::string Reg(const std::string& name, const std::string& extra = "", uint64_t offset = 100) {
  return fmt::format(R"({{"name":"{}","type":"reg","size":3,"offset":{},"chunkDigest":"{}"{}{}}})", name, offset,
                     kDigest, extra.empty() ? "" : ",", extra);
}

std::string ErrorOf(const Result<Toc>& toc) { return toc.ok() ? "(no error)" : toc.error().message(); }

TEST(TocJson, UnknownMembersAreSkippedWhateverTheyHold) {
  // Unknown members hold what known ones would: if any of it were read, the
  // entries, names, sizes or version would change, or the TOC would fail.
  const std::string decoy = R"({"name":"evil","type":"reg","size":"bad","version":2,)"
                            R"("entries":[{"name":"evil2","type":"dir"}],"xattrs":5,"deep":[[[{"mode":-1}]]]})";
  auto toc = FromJson(R"({"before":)" + decoy + R"(,"version":1,"list":[)" + decoy + "," + decoy +
                      R"(],"entries":[)" + R"({"name":"d","annotations":)" + decoy + R"(,"type":"dir","mode":493,)" +
                      R"("more":[)" + decoy + R"(,[1,[2,[3]]],{},[],null,"s",-1,1.5,true],"uid":7},)" +
                      Reg("d/f", R"("chunkType":{"nested":)" + decoy + R"(},"mode":420)") + R"(],"after":)" + decoy +
                      R"(,"version2":[)" + decoy + "]}");
  ASSERT_TRUE(toc.ok()) << toc.error().message();
  ASSERT_EQ(toc->entries.size(), 2u);
  EXPECT_EQ(toc->entries[0].path, "d");
  EXPECT_EQ(toc->entries[0].type, EntryType::kDir);
  EXPECT_EQ(toc->entries[0].mode, 0755u);
  EXPECT_EQ(toc->entries[0].uid, 7u);
  EXPECT_TRUE(toc->entries[0].xattrs.empty());
  EXPECT_EQ(toc->entries[1].path, "d/f");
  EXPECT_EQ(toc->entries[1].type, EntryType::kFile);
  EXPECT_EQ(toc->entries[1].size, 3u);
  EXPECT_EQ(toc->entries[1].mode, 0644u);
  ASSERT_EQ(toc->chunks.at(1).size(), 1u);
  EXPECT_EQ(toc->chunks.at(1)[0].blob_offset, 100u);
  EXPECT_EQ(toc->chunks.at(1)[0].digest.str(), kDigest);
}

TEST(TocJson, KnownMembersOfTheWrongTypeAreRefusedAsBefore) {
  const std::string max = "72057594037927936";  // kMaxSize, 2^56
  struct Case {
    std::string entry, message;
  };
  const Case cases[] = {
      {R"({"name":5,"type":"dir"})", "TOC entry #0 '': 'name' is not a string"},
      {R"({"name":"d","type":{"t":"dir"}})", "TOC entry #0 'd': 'type' is not a string"},
      {R"({"name":"d","type":"dir","linkName":["x"]})", "TOC entry #0 'd': 'linkName' is not a string"},
      {R"({"name":"d","type":"dir","modtime":0})", "TOC entry #0 'd': 'modtime' is not a string"},
      {Reg("f", R"("digest":1)"), "TOC entry #0 'f': 'digest' is not a string"},
      {Reg("f", R"("chunkDigest":true)"), "TOC entry #0 'f': 'chunkDigest' is not a string"},
      {R"({"name":"f","type":"reg","size":"12"})", "TOC entry #0 'f': 'size' is not an integer in [0, " + max + "]: \"12\""},
      {R"({"name":"f","type":"reg","size":-1})", "TOC entry #0 'f': 'size' is not an integer in [0, " + max + "]: -1"},
      {R"({"name":"f","type":"reg","size":1.5})", "TOC entry #0 'f': 'size' is not an integer in [0, " + max + "]: 1.5"},
      {R"({"name":"f","type":"reg","size":3.0})", "TOC entry #0 'f': 'size' is not an integer in [0, " + max + "]: 3.0"},
      {R"({"name":"f","type":"reg","size":18446744073709551616})",
       "TOC entry #0 'f': 'size' is not an integer in [0, " + max + "]: 1.8446744073709552e+19"},
      {R"({"name":"f","type":"reg","size":72057594037927937})",
       "TOC entry #0 'f': 'size' is not an integer in [0, " + max + "]: 72057594037927937"},
      {R"({"name":"f","type":"reg","size":[1,{"b":null,"a":"x"}]})",
       "TOC entry #0 'f': 'size' is not an integer in [0, " + max + "]: [1,{\"a\":\"x\",\"b\":null}]"},
      {R"({"name":"f","type":"reg","size":{}})", "TOC entry #0 'f': 'size' is not an integer in [0, " + max + "]: {}"},
      {R"({"name":"d","type":"dir","mode":4294967296})",
       "TOC entry #0 'd': 'mode' is not an integer in [0, 4294967295]: 4294967296"},
      {R"({"name":"d","type":"dir","uid":true})", "TOC entry #0 'd': 'uid' is not an integer in [0, 4294967295]: true"},
      {R"({"name":"d","type":"dir","gid":"0"})", "TOC entry #0 'd': 'gid' is not an integer in [0, 4294967295]: \"0\""},
      {R"({"name":"n","type":"char","devMajor":-1})",
       "TOC entry #0 'n': 'devMajor' is not an integer in [0, 4294967295]: -1"},
      {R"({"name":"n","type":"block","devMinor":[]})",
       "TOC entry #0 'n': 'devMinor' is not an integer in [0, 4294967295]: []"},
      {Reg("f", R"("offset":"5")"), "TOC entry #0 'f': 'offset' is not an integer in [0, " + max + "]: \"5\""},
      {Reg("f", R"("endOffset":false)"), "TOC entry #0 'f': 'endOffset' is not an integer in [0, " + max + "]: false"},
      {Reg("f", R"("chunkOffset":-2)"), "TOC entry #0 'f': 'chunkOffset' is not an integer in [0, " + max + "]: -2"},
      {Reg("f", R"("chunkSize":0.5)"), "TOC entry #0 'f': 'chunkSize' is not an integer in [0, " + max + "]: 0.5"},
      {Reg("f", R"("innerOffset":{"x":[1]})"),
       "TOC entry #0 'f': 'innerOffset' is not an integer in [0, " + max + "]: {\"x\":[1]}"},
      {R"({"name":"d","type":"dir","xattrs":[]})", "TOC entry #0 'd': 'xattrs' is not an object"},
      {R"({"name":"d","type":"dir","xattrs":"dXNlcg=="})", "TOC entry #0 'd': 'xattrs' is not an object"},
      // Only the members an entry's type reads are checked.
      {R"({"name":"d","type":"dir","size":"x","devMajor":-1,"offset":[],"digest":5}, 7)",
       "TOC entry #1 '': not a JSON object"},
  };
  for (const Case& c : cases) {
    auto toc = FromEntries(c.entry);
    ASSERT_FALSE(toc.ok()) << c.entry;
    EXPECT_EQ(toc.error().code(), Errc::kMalformed) << c.entry;
    EXPECT_EQ(toc.error().message(), c.message) << c.entry;
  }
  // null is as good as absent.
  auto toc = FromEntries(R"({"name":"d","type":"dir","mode":null,"uid":null,"linkName":null,"modtime":null,)"
                         R"("xattrs":null,"size":null})");
  ASSERT_TRUE(toc.ok()) << toc.error().message();
  EXPECT_EQ(toc->entries.at(0).mode, 0u);
  EXPECT_EQ(toc->entries.at(0).mtime_sec, 0);
  // -0 is the integer 0, as Go's encoding/json (the stargz writer's) reads it.
  auto zero = FromEntries(R"({"name":"f","type":"reg","size":-0,"uid":-0})");
  ASSERT_TRUE(zero.ok()) << zero.error().message();
  EXPECT_EQ(zero->entries.at(0).size, 0u);
}

TEST(TocJson, XattrsAreBase64StringsInNameOrder) {
  auto toc = FromEntries(R"({"name":"d","type":"dir","xattrs":{"user.b":"Yg==","user.a":"YQ==","trusted.c":""}})");
  ASSERT_TRUE(toc.ok()) << toc.error().message();
  EXPECT_EQ(toc->entries.at(0).xattrs, (std::vector<std::pair<std::string, std::string>>{
                                           {"trusted.c", ""}, {"user.a", "a"}, {"user.b", "b"}}));
  for (const char* value : {"5", "null", "true", R"({"v":"YQ=="})", R"(["YQ=="])", R"("!!")"}) {
    auto bad = FromEntries(fmt::format(R"({{"name":"d","type":"dir","xattrs":{{"user.a":"YQ==","user.x":{}}}}})",
                                       value));
    ASSERT_FALSE(bad.ok()) << value;
    EXPECT_EQ(bad.error().code(), Errc::kMalformed);
    EXPECT_EQ(bad.error().message(), "TOC entry #0 'd': bad xattr 'user.x': not base64") << value;
  }
  auto unnamed = FromEntries(R"({"name":"d","type":"dir","xattrs":{"":"YQ=="}})");
  EXPECT_EQ(ErrorOf(unnamed), "TOC entry #0 'd': bad xattr '': not base64");
}

TEST(TocJson, EntriesMayBeNullButNotMissing) {
  auto none = FromJson(R"({"version":1,"entries":null})");
  ASSERT_TRUE(none.ok()) << none.error().message();
  EXPECT_TRUE(none->entries.empty());
  EXPECT_TRUE(none->chunks.empty());
  auto empty = FromJson(R"({"entries":[],"version":1})");
  ASSERT_TRUE(empty.ok()) << empty.error().message();
  EXPECT_TRUE(empty->entries.empty());
  for (const char* json : {R"({"version":1})", R"({"version":1,"entries":{}})", R"({"version":1,"entries":5})",
                           R"({"version":1,"entries":"[]"})", R"({"version":1,"Entries":[]})"}) {
    auto toc = FromJson(json);
    ASSERT_FALSE(toc.ok()) << json;
    EXPECT_EQ(toc.error().code(), Errc::kMalformed) << json;
    EXPECT_EQ(toc.error().message(), "TOC has no 'entries' array") << json;
  }
}

TEST(TocJson, RepeatedKeysTakeTheLastValue) {
  // As a JSON object holds them (nlohmann's, which the TOC was first read into).
  auto toc = FromEntries(R"({"name":"a","type":"dir","name":"b","mode":"x","mode":448},)" +
                         Reg("f", R"("size":"bad","size":2,"chunkDigest":"no","chunkDigest":")" + kDigest + "\"") +
                         R"(,{"name":"x","type":"dir","xattrs":{"user.a":"!!"},"xattrs":{"user.b":5,"user.b":"Yg=="}},)"
                         R"({"name":"y","type":"dir","xattrs":{"user.a":"!!"},"xattrs":null})");
  ASSERT_TRUE(toc.ok()) << toc.error().message();
  ASSERT_EQ(toc->entries.size(), 4u);
  EXPECT_EQ(toc->entries[0].path, "b");
  EXPECT_EQ(toc->entries[0].mode, 0700u);
  EXPECT_EQ(toc->entries[1].size, 2u);
  EXPECT_EQ(toc->entries[2].xattrs, (std::vector<std::pair<std::string, std::string>>{{"user.b", "b"}}));
  EXPECT_TRUE(toc->entries[3].xattrs.empty());

  EXPECT_EQ(ErrorOf(FromEntries(R"({"name":"d","type":"dir","mode":448,"mode":-1})")),
            "TOC entry #0 'd': 'mode' is not an integer in [0, 4294967295]: -1");
  EXPECT_EQ(ErrorOf(FromEntries(R"({"name":"d","type":"dir","xattrs":{"user.a":"YQ=="},"xattrs":[]})")),
            "TOC entry #0 'd': 'xattrs' is not an object");
  EXPECT_EQ(ErrorOf(FromEntries(R"({"name":"d","type":"dir","xattrs":{"user.a":"YQ==","user.a":null}})")),
            "TOC entry #0 'd': bad xattr 'user.a': not base64");

  // The document's own members too: the last "version", the last "entries".
  EXPECT_TRUE(FromJson(R"({"version":2,"entries":[],"version":1})").ok());
  EXPECT_EQ(ErrorOf(FromJson(R"({"version":1,"entries":[],"version":2})")), "TOC version 2 (only 1 is known)");
  auto last = FromJson(R"({"version":1,"entries":[5,{"name":"a","type":"dir"}],"entries":[{"name":"b","type":"dir"}]})");
  ASSERT_TRUE(last.ok()) << last.error().message();
  ASSERT_EQ(last->entries.size(), 1u);
  EXPECT_EQ(last->entries[0].path, "b");
  auto nulled = FromJson(R"({"version":1,"entries":[{"name":"a","type":"dir"}],"entries":null})");
  ASSERT_TRUE(nulled.ok()) << nulled.error().message();
  EXPECT_TRUE(nulled->entries.empty());
  EXPECT_EQ(ErrorOf(FromJson(R"({"version":1,"entries":[{"name":"a","type":"dir"}],"entries":{}})")),
            "TOC has no 'entries' array");
}

TEST(TocJson, EntriesThatAreNotObjectsAreRefusedByIndex) {
  for (const char* bad : {"5", "null", "\"x\"", "true", "[]", R"([{"name":"a","type":"dir"}])"}) {
    auto toc = FromEntries(std::string(R"({"name":"d","type":"dir","skip":[{},[{}]]},{"name":"e","type":"dir"},)") +
                           bad + R"(,{"name":"f","type":"nonsense"})");
    ASSERT_FALSE(toc.ok()) << bad;
    EXPECT_EQ(toc.error().code(), Errc::kMalformed) << bad;
    EXPECT_EQ(toc.error().message(), "TOC entry #2 '': not a JSON object") << bad;
  }
  // The first bad entry is the one reported, with its index and name.
  EXPECT_EQ(ErrorOf(FromEntries(R"({"name":"d","type":"dir"},[[{"name":"z","type":"?"}]],{"name":"q","type":"?"},)"
                                R"({"name":"r","type":"?"})")),
            "TOC entry #1 '': not a JSON object");
  EXPECT_EQ(ErrorOf(FromEntries(R"({"name":"d","type":"dir"},{"name":"q","type":"?"},5)")),
            "TOC entry #1 'q': unknown entry type '?'");
}

TEST(TocJson, JsonTheFastParserCannotHoldIsStillRead) {
  // Integers past 64 bits and nesting past 1,024 levels are JSON; in members
  // a TOC reader ignores they change nothing.
  std::string deep = std::string(2000, '[') + std::string(2000, ']');
  for (const std::string& extra : {std::string("123456789012345678901234567890"), deep}) {
    auto toc = FromJson(R"({"version":1,"x":)" + extra + R"(,"entries":[{"name":"d","type":"dir","y":)" + extra +
                        "}]}");
    ASSERT_TRUE(toc.ok()) << ErrorOf(toc);
    EXPECT_EQ(toc->entries.size(), 1u);
    EXPECT_EQ(toc->entries.at(0).path, "d");
  }
}

TEST(TocJson, DocumentLevelErrorsComeFirst) {
  // Invalid JSON anywhere, even after a bad entry, is what is reported.
  for (const char* json : {R"({"version":1,"entries":[5]} x)", R"({"version":1,"entries":[{"name":"a","type":"?"})",
                           R"({"version":1,"entries":[{"name":"a","type":"?"}],})", R"({"version":2,"entries":[1e999]})",
                           R"({"version":1,"entries":[],"x":[1,]})", "", "{\"version\":1,\"entries\":[\"\xff\"]}"}) {
    auto toc = FromJson(json);
    ASSERT_FALSE(toc.ok()) << json;
    EXPECT_EQ(toc.error().code(), Errc::kMalformed) << json;
    EXPECT_EQ(toc.error().message().rfind("TOC is not valid JSON: [json.exception.", 0), 0u) << ErrorOf(toc);
  }
  for (const char* json : {"[]", "5", "null", R"("{}")", R"([{"version":1,"entries":[]}])"}) {
    EXPECT_EQ(ErrorOf(FromJson(json)), "TOC is not a JSON object") << json;
  }
  // Then the version, wherever it is, before any entry.
  struct Case {
    const char* json;
    const char* message;
  };
  for (const Case& c : std::initializer_list<Case>{
           {R"({"entries":[5]})", "TOC version missing (only 1 is known)"},
           {R"({"entries":[5],"version":2})", "TOC version 2 (only 1 is known)"},
           {R"({"version":"1","entries":[]})", "TOC version \"1\" (only 1 is known)"},
           {R"({"version":1.0,"entries":[]})", "TOC version 1.0 (only 1 is known)"},
           {R"({"version":null,"entries":[]})", "TOC version null (only 1 is known)"},
           {R"({"version":-1,"entries":[]})", "TOC version -1 (only 1 is known)"},
           {R"({"version":[1],"entries":[]})", "TOC version [1] (only 1 is known)"},
           {R"({"version":{"b":[1,{}],"a":true},"entries":[]})",
            "TOC version {\"a\":true,\"b\":[1,{}]} (only 1 is known)"},
       }) {
    auto toc = FromJson(c.json);
    ASSERT_FALSE(toc.ok()) << c.json;
    EXPECT_EQ(toc.error().code(), Errc::kUnsupported) << c.json;
    EXPECT_EQ(toc.error().message(), c.message);
  }
  // Then the entries, in order; then what needs all of them (chunks' bounds).
  EXPECT_EQ(ErrorOf(FromJson(R"({"entries":[5],"version":1})")), "TOC entry #0 '': not a JSON object");
  EXPECT_EQ(ErrorOf(FromEntries(Reg("f", "", kManifestOffset) + R"(,{"name":"g","type":"?"})")),
            "TOC entry #1 'g': unknown entry type '?'");
  EXPECT_EQ(ErrorOf(FromEntries(Reg("f", "", kManifestOffset))),
            fmt::format("TOC: chunk of 'f' at blob offset {} is not before the TOC at {}", kManifestOffset,
                        kManifestOffset - 8));
}

TEST(TocJson, ChunkEntriesContinueTheFileBefore) {
  const std::string d2 = "sha256:" + std::string(64, 'b');
  auto toc = FromEntries(R"({"name":"big","type":"reg","size":10,"offset":100,"chunkSize":4,"chunkDigest":")" +
                         kDigest + R"(","digest":")" + d2 + R"("},)" +
                         R"({"type":"chunk","offset":200,"chunkOffset":4,"chunkSize":4,"chunkDigest":")" + d2 +
                         R"(","x":{"name":"other"}},)" +
                         R"({"name":"./big","type":"chunk","offset":300,"chunkOffset":8,"chunkDigest":")" + kDigest +
                         R"("},)" + Reg("small", "", 400));
  ASSERT_TRUE(toc.ok()) << toc.error().message();
  ASSERT_EQ(toc->entries.size(), 2u);
  const auto& chunks = toc->chunks.at(0);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].blob_size, 100u);
  EXPECT_EQ(chunks[1].digest.str(), d2);
  EXPECT_EQ(chunks[2].file_offset, 8u);
  EXPECT_EQ(chunks[2].size, 2u);
  EXPECT_EQ(chunks[2].blob_size, 100u);
  EXPECT_EQ(toc->chunks.at(1).at(0).blob_size, kManifestOffset - 8 - 400);
  EXPECT_EQ(ErrorOf(FromEntries(R"({"name":"d","type":"dir"},{"type":"chunk","offset":1,"chunkDigest":")" + kDigest +
                                R"("})")),
            "TOC entry #1 '': chunk entry not after a non-empty regular file");
  EXPECT_EQ(ErrorOf(FromEntries(Reg("f") + R"(,{"name":"g","type":"chunk","offset":1,"chunkOffset":3})")),
            "TOC entry #1 'g': chunk entry does not continue 'f'");
}

// ---- annotations -------------------------------------------------------

TEST(TocFormat, LazyFormatComesFromTheAnnotations) {
  EXPECT_EQ(LazyFormatOf({}), std::nullopt);
  EXPECT_EQ(LazyFormatOf({{"org.opencontainers.image.title", "x"}}), std::nullopt);
  EXPECT_EQ(LazyFormatOf({{"containerd.io/snapshot/stargz/toc.digest", "sha256:00"}}), TocFormat::kEstargz);
  EXPECT_EQ(LazyFormatOf({{"io.github.containers.zstd-chunked.manifest-checksum", "sha256:00"}}),
            TocFormat::kZstdChunked);
  // ctr-remote's zstd:chunked layers carry both.
  EXPECT_EQ(LazyFormatOf({{"containerd.io/snapshot/stargz/toc.digest", "sha256:00"},
                          {"io.containers.zstd-chunked.manifest-checksum", "sha256:11"}}),
            TocFormat::kZstdChunked);
}

}  // namespace
}  // namespace ucrfs::index
