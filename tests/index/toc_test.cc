// eStargz and zstd:chunked TOCs (toc.h) over blobs made in the test by
// independent producers: a Python (stdlib) eStargz writer that follows the
// spec, and a zstd:chunked writer that follows containers/storage's compressor
// with frames made by the zstd CLI. Negative cases are variants of the same
// producers, or real blobs patched byte by byte.
#include "ucrfs/index/toc.h"

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
