#include "storage/store_verifier.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "storage/codec.h"
#include "storage/corruption_logger.h"
#include "storage/flushed_sequence.h"
#include "storage/keys.h"
#include "storage/rocksdb_options.h"
#include "wharf/v1/record.pb.h"
#include "wharf/v1/staging.pb.h"

namespace wharf::storage {
namespace {

// Column families of the staging store, named as rocksdb_options.cc creates them. A store with
// other column families is reported, not guessed at.
std::string CfName(StagingColumnFamily cf) {
  static const StagingRocksDbConfig* const kConfig =
      new StagingRocksDbConfig(StagingRocksDbOptions(StoreOptions{}));
  return kConfig->column_families[cf].name;
}

// The LOCK file of the store, locked the way RocksDB's PosixEnv locks it (fcntl, whole file).
// Closed (and so unlocked) on destruction. Thread safety: none needed (one verifying thread).
class StoreLock {
 public:
  ~StoreLock() {
    if (fd_ >= 0) close(fd_);
  }
  absl::Status Acquire(const std::string& path) {
    const std::string lock_path = path + "/LOCK";
    // No O_CREAT: a directory without a LOCK file was never a RocksDB store, and the verifier
    // must not create anything.
    fd_ = open(lock_path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd_ < 0) {
      if (errno == ENOENT) {
        return absl::NotFoundError(absl::StrCat("no staging store at ", path, " (no LOCK file)"));
      }
      return absl::UnavailableError(
          absl::StrCat("cannot open ", lock_path, ": ", std::strerror(errno)));
    }
    struct flock fl;
    std::memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd_, F_SETLK, &fl) == 0) return absl::OkStatus();
    const int err = errno;
    if (err != EACCES && err != EAGAIN) {
      return absl::UnavailableError(
          absl::StrCat("cannot lock ", lock_path, ": ", std::strerror(err)));
    }
    std::string holder;
    struct flock who;
    std::memset(&who, 0, sizeof(who));
    who.l_type = F_WRLCK;
    who.l_whence = SEEK_SET;
    if (fcntl(fd_, F_GETLK, &who) == 0 && who.l_type != F_UNLCK) {
      holder = absl::StrCat(" by process ", who.l_pid);
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "store in use: ", lock_path, " is locked", holder,
        " (stop wharfd before verifying; a running wharfd checks what it reads itself)"));
  }

 private:
  int fd_ = -1;
};

std::string Printable(std::string_view key) {
  return absl::CHexEscape(absl::string_view(key.data(), key.size()));
}

// Parses <dataset> 0x00 <partition u32> exactly.
bool ParsePartitionPrefix(std::string_view s, std::string* dataset, uint32_t* partition) {
  const size_t zero = s.find('\0');
  if (zero == std::string_view::npos || zero == 0 || s.size() != zero + 5) return false;
  *dataset = std::string(s.substr(0, zero));
  *partition = ReadBigEndian32(s.data() + zero + 1);
  return true;
}

struct PartitionFacts {
  wharf::v1::PartitionIngestState ingest;
  wharf::v1::ValidationCheckpoint validation;
  wharf::v1::RetentionCheckpoint retention;
  // Raw records seen: first and last offset, count (contiguity is checked during the walk).
  std::optional<uint64_t> raw_first;
  uint64_t raw_last = 0;
  uint64_t raw_count = 0;
  uint64_t batches = 0;
  uint64_t quarantined = 0;
  std::optional<uint64_t> prev_batch_last;
  // Batches checked against the raw range after the walk: (batch key, record offsets beyond
  // the retention mark's lowest and highest).
  std::vector<std::tuple<std::string, uint64_t, uint64_t>> batch_ranges;
};

// Walks the column families of an open read-only store and records problems and notes in the
// report. Thread safety: not thread-safe; used by one thread for one verification.
class Verifier {
 public:
  Verifier(rocksdb::DB* db, std::map<std::string, rocksdb::ColumnFamilyHandle*> cfs,
           VerifyReport* report)
      : db_(db), cfs_(std::move(cfs)), report_(report) {}

  void Run() {
    WalkMeta();
    WalkCheckpoints();
    WalkRaw();
    WalkBatches();
    WalkQuarantine();
    WalkProducers();
    CheckPartitions();
  }

 private:
  void Problem(std::string text) { report_->problems.push_back(std::move(text)); }

  // Iterates a column family; `visit` gets each key and value. Reports iterator errors.
  template <typename F>
  void Walk(const std::string& cf_name, F visit) {
    auto it_cf = cfs_.find(cf_name);
    if (it_cf == cfs_.end()) {
      Problem(absl::StrCat("column family \"", cf_name, "\" is missing"));
      return;
    }
    rocksdb::ReadOptions ro;
    ro.verify_checksums = true;
    ro.fill_cache = false;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, it_cf->second));
    uint64_t n = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      ++n;
      visit(std::string_view(it->key().data(), it->key().size()),
            std::string_view(it->value().data(), it->value().size()));
    }
    if (!it->status().ok()) {
      Problem(absl::StrCat("reading column family \"", cf_name, "\" failed after ", n,
                           " entries: ", it->status().ToString()));
    }
    report_->notes.push_back(absl::StrCat("column family ", cf_name, ": ", n, " entries"));
  }

  // The partition a key belongs to, or null (and a problem) when the dataset is not registered
  // or the partition is out of range.
  PartitionFacts* PartitionOf(const std::string& dataset, uint32_t partition,
                              std::string_view what_key, const char* cf) {
    auto it = partitions_.find(dataset);
    if (it == partitions_.end()) {
      Problem(absl::StrCat(cf, " key ", Printable(what_key), ": dataset \"", dataset,
                           "\" is not registered in the meta column family"));
      return nullptr;
    }
    if (partition >= it->second.size()) {
      Problem(absl::StrCat(cf, " key ", Printable(what_key), ": partition ", partition,
                           " is out of range (dataset \"", dataset, "\" has ", it->second.size(),
                           ")"));
      return nullptr;
    }
    return &it->second[partition];
  }

  void WalkMeta() {
    Walk(CfName(kMetaColumnFamily), [&](std::string_view key, std::string_view value) {
      const std::string_view kDataset = "dataset/";
      if (key.substr(0, kDataset.size()) != kDataset) return;  // control-plane values
      const std::string name(key.substr(kDataset.size()));
      wharf::v1::DatasetMeta meta;
      if (!meta.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
        Problem(absl::StrCat("meta key ", Printable(key), ": dataset metadata does not parse"));
        return;
      }
      if (meta.name() != name || meta.partitions() == 0 || meta.partitions() > (1u << 16)) {
        Problem(absl::StrCat("meta key ", Printable(key),
                             ": inconsistent dataset metadata (name \"", meta.name(), "\", ",
                             meta.partitions(), " partitions)"));
        return;
      }
      partitions_[name].resize(meta.partitions());
      report_->notes.push_back(
          absl::StrCat("dataset ", name, ": ", meta.partitions(), " partitions"));
    });
  }

  void WalkCheckpoints() {
    Walk(CfName(kCheckpointsColumnFamily), [&](std::string_view key, std::string_view value) {
      if (key.empty()) {
        Problem("checkpoint with an empty key");
        return;
      }
      const char kind = key[0];
      std::string dataset;
      uint32_t partition = 0;
      std::string_view rest = key.substr(1);
      if (kind == 'd') {
        // d <dataset> 0 <destination> 0 <partition u32>
        const size_t z1 = rest.find('\0');
        if (z1 == std::string_view::npos || z1 == 0 || rest.size() < z1 + 1 + 1 + 1 + 4 ||
            rest[rest.size() - 5] != '\0') {
          Problem(absl::StrCat("checkpoint key ", Printable(key), " is malformed"));
          return;
        }
        dataset = std::string(rest.substr(0, z1));
        const std::string destination(rest.substr(z1 + 1, rest.size() - 5 - (z1 + 1)));
        partition = ReadBigEndian32(rest.data() + rest.size() - 4);
        wharf::v1::DeliveryCheckpoint cp;
        if (!cp.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
          Problem(absl::StrCat("checkpoint key ", Printable(key), ": does not parse"));
          return;
        }
        if (PartitionOf(dataset, partition, key, "checkpoint") != nullptr) {
          deliveries_.push_back({dataset, destination, partition, cp.next_offset()});
        }
        return;
      }
      if ((kind != 'i' && kind != 'v' && kind != 'r') ||
          !ParsePartitionPrefix(rest, &dataset, &partition)) {
        Problem(absl::StrCat("checkpoint key ", Printable(key), " is malformed"));
        return;
      }
      PartitionFacts* f = PartitionOf(dataset, partition, key, "checkpoint");
      if (f == nullptr) return;
      google::protobuf::MessageLite* m = &f->ingest;
      if (kind == 'v') m = &f->validation;
      if (kind == 'r') m = &f->retention;
      if (!m->ParseFromArray(value.data(), static_cast<int>(value.size()))) {
        Problem(absl::StrCat("checkpoint key ", Printable(key), ": does not parse"));
      }
    });
  }

  // Raw records and batches live in one column family per partition ("raw/<dataset>/<p>",
  // "batches/<dataset>/<p>"). A store written before that layout holds them in the legacy "raw"
  // and "batches" column families until wharfd's next open migrates them; while a legacy column
  // family exists it holds everything (the migration drops it only after copying all of it), so
  // it is the one whose entries are checked against the cursors; per-partition ones (a migration
  // interrupted by a crash) are then only decoded.
  template <typename F>
  void WalkPartitionCfs(bool raw, F walk_one) {
    const std::string legacy = raw ? kLegacyRawColumnFamily : kLegacyBatchesColumnFamily;
    const bool has_legacy = cfs_.count(legacy) != 0;
    if (has_legacy) {
      report_->notes.push_back(absl::StrCat("column family ", legacy,
                                            " of the legacy layout is present (wharfd migrates "
                                            "it to per-partition column families at open)"));
      walk_one(legacy, std::optional<PartitionColumnFamily>(), /*facts=*/true);
    }
    for (const auto& [name, handle] : cfs_) {
      std::optional<PartitionColumnFamily> pcf = ParsePartitionColumnFamily(name);
      if (pcf && pcf->raw == raw) walk_one(name, pcf, /*facts=*/!has_legacy);
    }
  }

  // True when the key decoded as `k` may live in column family `cf_name` (parsed as `pcf`;
  // nullopt: a legacy column family holding every partition); reports a problem otherwise.
  bool InItsColumnFamily(const std::string& cf_name,
                         const std::optional<PartitionColumnFamily>& pcf, const DecodedOffsetKey& k,
                         std::string_view key) {
    if (!pcf || (pcf->dataset == k.dataset && pcf->partition == k.partition)) return true;
    Problem(absl::StrCat("key ", Printable(key), " of partition ", std::string(k.dataset), "/",
                         k.partition, " is in column family ", cf_name));
    return false;
  }

  void WalkRaw() {
    WalkPartitionCfs(
        true, [&](const std::string& cf_name, const std::optional<PartitionColumnFamily>& pcf,
                  bool facts) { WalkRawCf(cf_name, pcf, facts); });
  }

  void WalkRawCf(const std::string& cf_name, const std::optional<PartitionColumnFamily>& pcf,
                 bool facts) {
    Walk(cf_name, [&](std::string_view key, std::string_view value) {
      auto k = DecodeOffsetKey(key);
      if (!k) {
        Problem(absl::StrCat("raw key ", Printable(key), " is malformed"));
        return;
      }
      if (!InItsColumnFamily(cf_name, pcf, *k, key)) return;
      const std::string dataset(k->dataset);
      const std::string what =
          absl::StrCat("raw record ", dataset, "/", k->partition, "/", k->offset);
      wharf::v1::StoredRecord rec;
      if (absl::Status st = DecodeChecked(value, &rec, what); !st.ok()) {
        Problem(std::string(st.message()));
      }
      if (!facts) return;
      PartitionFacts* f = PartitionOf(dataset, k->partition, key, "raw");
      if (f == nullptr) return;
      if (f->raw_first.has_value() && k->offset != f->raw_last + 1) {
        Problem(absl::StrCat(what, ": offsets ", f->raw_last + 1, " to ", k->offset - 1,
                             " are missing (raw offsets must be contiguous)"));
      }
      if (!f->raw_first.has_value()) f->raw_first = k->offset;
      f->raw_last = k->offset;
      ++f->raw_count;
    });
  }

  void WalkBatches() {
    WalkPartitionCfs(
        false, [&](const std::string& cf_name, const std::optional<PartitionColumnFamily>& pcf,
                   bool facts) { WalkBatchesCf(cf_name, pcf, facts); });
  }

  void WalkBatchesCf(const std::string& cf_name, const std::optional<PartitionColumnFamily>& pcf,
                     bool facts) {
    Walk(cf_name, [&](std::string_view key, std::string_view value) {
      auto k = DecodeOffsetKey(key);
      if (!k) {
        Problem(absl::StrCat("batch key ", Printable(key), " is malformed"));
        return;
      }
      if (!InItsColumnFamily(cf_name, pcf, *k, key)) return;
      const std::string dataset(k->dataset);
      const std::string what = absl::StrCat("batch ", dataset, "/", k->partition, "/", k->offset);
      wharf::v1::StoredBatch batch;
      if (absl::Status st = DecodeChecked(value, &batch, what); !st.ok()) {
        Problem(std::string(st.message()));
        return;
      }
      if (!facts) return;
      PartitionFacts* f = PartitionOf(dataset, k->partition, key, "batch");
      if (f == nullptr) return;
      ++f->batches;
      const auto& m = batch.manifest();
      if (m.first_offset() != k->offset || m.last_offset() < m.first_offset() ||
          m.dataset() != dataset || m.partition() != k->partition) {
        Problem(absl::StrCat(what, ": manifest does not match its key (", m.dataset(), "/",
                             m.partition(), " offsets ", m.first_offset(), "-", m.last_offset(),
                             ")"));
        return;
      }
      if (f->prev_batch_last.has_value() && m.first_offset() <= *f->prev_batch_last) {
        Problem(absl::StrCat(what, ": overlaps the previous batch (which ends at offset ",
                             *f->prev_batch_last, ")"));
      }
      f->prev_batch_last = m.last_offset();
      if (static_cast<uint64_t>(batch.records_size()) != m.record_count()) {
        Problem(absl::StrCat(what, ": holds ", batch.records_size(), " records, its manifest says ",
                             m.record_count()));
      }
      std::optional<uint64_t> prev;
      for (const auto& r : batch.records()) {
        if (r.offset() < m.first_offset() || r.offset() > m.last_offset() ||
            (prev.has_value() && r.offset() <= *prev)) {
          Problem(absl::StrCat(what, ": record offset ", r.offset(),
                               " is out of order or outside the batch"));
          break;
        }
        prev = r.offset();
      }
      f->batch_ranges.emplace_back(what, m.first_offset(), m.last_offset());
    });
  }

  void WalkQuarantine() {
    Walk(CfName(kQuarantineColumnFamily), [&](std::string_view key, std::string_view value) {
      // <offset key> [<destination>]
      const size_t zero = key.find('\0');
      if (zero == std::string_view::npos || zero == 0 || key.size() < zero + 13) {
        Problem(absl::StrCat("quarantine key ", Printable(key), " is malformed"));
        return;
      }
      auto k = DecodeOffsetKey(key.substr(0, zero + 13));
      if (!k) {
        Problem(absl::StrCat("quarantine key ", Printable(key), " is malformed"));
        return;
      }
      const std::string dataset(k->dataset);
      const std::string what =
          absl::StrCat("quarantine entry ", dataset, "/", k->partition, "/", k->offset);
      wharf::v1::QuarantineEntry entry;
      if (absl::Status st = DecodeChecked(value, &entry, what); !st.ok()) {
        Problem(std::string(st.message()));
        return;
      }
      PartitionFacts* f = PartitionOf(dataset, k->partition, key, "quarantine");
      if (f == nullptr) return;
      ++f->quarantined;
      if (entry.offset() != k->offset || entry.partition() != k->partition) {
        Problem(absl::StrCat(what, ": entry says ", entry.partition(), "/", entry.offset()));
      }
      quarantine_offsets_.push_back({dataset, k->partition, k->offset});
    });
  }

  void WalkProducers() {
    Walk(CfName(kProducersColumnFamily), [&](std::string_view key, std::string_view value) {
      const size_t zero = key.find('\0');
      if (zero == std::string_view::npos || zero == 0) {
        Problem(absl::StrCat("producer key ", Printable(key), " is malformed"));
        return;
      }
      wharf::v1::ProducerWindow w;
      if (!w.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
        Problem(absl::StrCat("producer key ", Printable(key), ": window does not parse"));
      }
    });
  }

  void CheckPartitions() {
    for (auto& [dataset, parts] : partitions_) {
      for (uint32_t p = 0; p < parts.size(); ++p) {
        PartitionFacts& f = parts[p];
        const std::string name = absl::StrCat(dataset, "/", p);
        const uint64_t next = f.ingest.next_offset();
        const uint64_t validated = f.validation.next_offset();
        const uint64_t raw_mark = f.retention.raw_deleted_below();
        if (validated > next) {
          Problem(absl::StrCat("partition ", name, ": validation cursor ", validated,
                               " is past the ingest cursor ", next));
        }
        if (raw_mark > next) {
          Problem(absl::StrCat("partition ", name, ": raw retention mark ", raw_mark,
                               " is past the ingest cursor ", next));
        }
        // Raw records: exactly [retention mark, ingest cursor).
        if (raw_mark < next) {
          if (!f.raw_first.has_value()) {
            Problem(absl::StrCat("partition ", name, ": raw records ", raw_mark, " to ", next - 1,
                                 " are missing"));
          } else {
            if (*f.raw_first > raw_mark) {
              Problem(absl::StrCat("partition ", name, ": raw records ", raw_mark, " to ",
                                   *f.raw_first - 1, " are missing (retention mark ", raw_mark,
                                   ")"));
            }
            if (f.raw_last + 1 < next) {
              Problem(absl::StrCat("partition ", name, ": raw records ", f.raw_last + 1, " to ",
                                   next - 1, " are missing (ingest cursor ", next, ")"));
            }
          }
        }
        if (f.raw_first.has_value() && (*f.raw_first < raw_mark || f.raw_last >= next)) {
          Problem(absl::StrCat("partition ", name, ": raw records ", *f.raw_first, " to ",
                               f.raw_last, " lie outside [", raw_mark, ", ", next, ")"));
        }
        for (const auto& [what, first, last] : f.batch_ranges) {
          if (last >= validated) {
            Problem(absl::StrCat(what, ": ends at offset ", last, ", past the validation cursor ",
                                 validated));
          }
          if (first < f.retention.batches_deleted_below()) {
            Problem(absl::StrCat(what, ": starts below the batch retention mark ",
                                 f.retention.batches_deleted_below()));
          }
        }
        report_->notes.push_back(
            absl::StrCat("partition ", name, ": ingest cursor ", next, ", validation cursor ",
                         validated, ", raw records ", f.raw_count, " (retention mark ", raw_mark,
                         "), batches ", f.batches, ", quarantine entries ", f.quarantined));
      }
    }
    for (const auto& q : quarantine_offsets_) {
      auto it = partitions_.find(q.dataset);
      if (it == partitions_.end() || q.partition >= it->second.size()) continue;
      if (q.offset >= it->second[q.partition].validation.next_offset()) {
        Problem(absl::StrCat("quarantine entry ", q.dataset, "/", q.partition, "/", q.offset,
                             ": past the validation cursor ",
                             it->second[q.partition].validation.next_offset()));
      }
    }
    for (const auto& d : deliveries_) {
      const PartitionFacts& f = partitions_[d.dataset][d.partition];
      if (d.next_offset > f.validation.next_offset()) {
        Problem(absl::StrCat("delivery cursor of ", d.destination, " on ", d.dataset, "/",
                             d.partition, " is at offset ", d.next_offset,
                             ", past the validation cursor ", f.validation.next_offset()));
      }
    }
  }

  struct Delivery {
    std::string dataset;
    std::string destination;
    uint32_t partition = 0;
    uint64_t next_offset = 0;
  };
  struct QuarantineOffset {
    std::string dataset;
    uint32_t partition = 0;
    uint64_t offset = 0;
  };

  rocksdb::DB* const db_;
  const std::map<std::string, rocksdb::ColumnFamilyHandle*> cfs_;
  VerifyReport* const report_;
  std::map<std::string, std::vector<PartitionFacts>> partitions_;
  std::vector<Delivery> deliveries_;
  std::vector<QuarantineOffset> quarantine_offsets_;
};

}  // namespace

absl::StatusOr<VerifyReport> VerifyStore(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat("no staging store at ", path, " (not a directory)"));
  }
  StoreLock lock;
  if (absl::Status st = lock.Acquire(path); !st.ok()) return st;

  VerifyReport report;
  // The same recovery rules as wharfd (StagingStore::Open), and an info logger that writes no
  // LOG file (read-only means no file of the store changes) but notes the files named by
  // corruption reports.
  auto logger = std::make_shared<CorruptionNotingLogger>(nullptr);
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = false;
  db_options.paranoid_checks = true;
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  db_options.info_log = logger;

  const std::string manifest = CurrentManifestName(path);
  absl::StatusOr<uint64_t> flushed = ReadFlushedSequence(path);
  if (!flushed.ok()) {
    report.problems.push_back(std::string(flushed.status().message()));
    flushed = 0;
  }
  std::vector<std::string> names;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(db_options, path, &names);
  if (!s.ok()) {
    if (s.IsCorruption()) {
      report.problems.push_back(
          DescribeCorruption("reading the MANIFEST", s, logger->DamagedFiles()));
      return report;
    }
    if (s.IsPathNotFound() || (s.IsIOError() && !std::filesystem::exists(path + "/CURRENT"))) {
      return absl::NotFoundError(absl::StrCat("no staging store at ", path, ": ", s.ToString()));
    }
    return absl::UnavailableError(
        absl::StrCat("listing column families of ", path, ": ", s.ToString()));
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& n : names) {
    descriptors.emplace_back(n, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  s = rocksdb::DB::OpenForReadOnly(db_options, path, descriptors, &handles, &raw_db);
  if (!s.ok()) {
    if (s.IsCorruption()) {
      report.problems.push_back(DescribeCorruption(absl::StrCat("opening ", path, " read-only"), s,
                                                   DamagedFilesFor(s, *logger, path)));
      return report;
    }
    return absl::UnavailableError(absl::StrCat("opening ", path, " read-only: ", s.ToString()));
  }
  std::unique_ptr<rocksdb::DB> db(raw_db);
  if (const uint64_t recovered = db->GetLatestSequenceNumber(); recovered < *flushed) {
    report.problems.push_back(absl::StrCat(
        "the store recovers to sequence ", recovered, " but data up to sequence ", *flushed,
        " had been flushed to SST files (", kFlushedSequenceFile,
        "): the MANIFEST lost track of SST files; damaged file: ", path, "/", manifest));
  }
  std::map<std::string, rocksdb::ColumnFamilyHandle*> cfs;
  const std::set<std::string> known = {
      rocksdb::kDefaultColumnFamilyName, CfName(kQuarantineColumnFamily),
      CfName(kCheckpointsColumnFamily),  CfName(kProducersColumnFamily),
      CfName(kMetaColumnFamily),         kLegacyRawColumnFamily,
      kLegacyBatchesColumnFamily};
  for (size_t i = 0; i < handles.size(); ++i) {
    cfs[names[i]] = handles[i];
    if (known.count(names[i]) == 0 && !ParsePartitionColumnFamily(names[i]).has_value()) {
      report.notes.push_back(absl::StrCat("column family ", names[i],
                                          " is not one of the staging store's (checksums only)"));
    }
  }

  s = db->VerifyChecksum();
  if (!s.ok()) {
    report.problems.push_back(
        DescribeCorruption("verifying SST block checksums", s, logger->DamagedFiles()));
  }
  Verifier(db.get(), cfs, &report).Run();
  for (const std::string& f : logger->DamagedFiles()) {
    bool named = false;
    for (const std::string& p : report.problems) named = named || p.find(f) != std::string::npos;
    if (!named) report.problems.push_back(absl::StrCat("RocksDB reported corruption in ", f));
  }
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  db->Close().PermitUncheckedError();
  return report;
}

}  // namespace wharf::storage
