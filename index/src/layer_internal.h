// Shared by the index's layer files (layers.cc, lazy.cc): record encodings
// and the per-layer record loader. Private to index/.
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

#include "codec.h"
#include "lmdb_env.h"
#include "ucrfs/index/toc.h"
#include "ucrfs/index/layers.h"

namespace ucrfs::index {

std::string EntryKey(uint64_t layer_id, uint64_t seq);
std::string EncodeRecord(const LayerRecord& r);
Result<LayerRecord> DecodeRecord(std::string_view v);
std::string EncodeEntry(const TarEntry& e);
Result<TarEntry> DecodeEntry(std::string_view v);

// Reads a tar stream to its end: every entry, and the decoded size.
Status ScanTar(ByteStream& s, std::vector<TarEntry>* entries, uint64_t* decoded_size);

// A piece of a lazy layer in the chunks DBI: an eStargz / zstd:chunked chunk,
// or a kGzipLazy span (inner_offset 0, digest of its compressed bytes).
struct ChunkRec {
  uint64_t vstart = 0;  // offset in the layer's (virtual) decoded stream
  Chunk chunk;
};
std::string EncodeChunk(const ChunkRec& c);
Result<ChunkRec> DecodeChunkRec(std::string_view v);

// Decodes every record of one layer in a per-layer DBI (keyed by layer id
// then sequence number), checking that all `count` of them are there.
template <typename T, typename DecodeFn>
Result<std::vector<T>> LoadPerLayer(const Store& store, Dbi dbi, const LayerRecord& layer, uint64_t count,
                                    DecodeFn decode, std::string_view what) {
  Txn txn;
  UCRFS_TRY(txn.Begin(store.env().env, false));
  std::vector<T> out;
  out.reserve(count);
  Status st;
  UCRFS_TRY(txn.Scan(store.env()[dbi], Encoder().U64BE(layer.id).str(), [&](std::string_view, std::string_view v) {
    Result<T> r = decode(v);
    if (!r.ok()) {
      st = r.error();
      return false;
    }
    out.push_back(std::move(r).value());
    return true;
  }));
  UCRFS_TRY(st);
  if (out.size() != count) {
    return Error(Errc::kMalformed, fmt::format("store index: {} of layer {} incomplete", what, layer.id));
  }
  return out;
}
// The reader of a lazy layer (lazy.cc; lazy_gzip.cc for kGzipLazy).
Result<std::unique_ptr<LayerReader>> OpenLazyReader(const Store& store, const fetch::Descriptor& layer,
                                                    const LayerRecord& rec, const LazyOptions& lazy);
Result<std::unique_ptr<LayerReader>> OpenLazyGzipReader(const Store& store, const fetch::Descriptor& layer,
                                                        const LayerRecord& rec, const LazyOptions& lazy);

}  // namespace ucrfs::index
