#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rocksdb/listener.h"

namespace wharf::storage {

// A guard against a damaged MANIFEST that RocksDB reads short without an error.
//
// RocksDB reads its MANIFEST (the list of live SST files) like a WAL and treats a record that
// runs past the end of the file as a torn tail. One flipped bit in a record's length field
// therefore makes it stop reading early and SILENTLY open an older version of the store: the
// SST files added later (flushed data whose WAL is gone) are forgotten and then deleted as
// obsolete. Wharf's corruption test found this (acknowledged records vanished with exit 0).
//
// The guard: after every completed memtable flush, the highest sequence number now held by SST
// files is written to <store>/WHARF-FLUSHED-SEQUENCE (synced, atomically replaced). A store that
// recovers to a lower sequence than that has lost flushed data, and the open fails with
// DATA_LOSS naming the MANIFEST. RocksDB ignores files whose names it does not know, so the
// file is safe in its directory.
//
// Across kill -9: the file is written only after RocksDB has synced the MANIFEST edit that
// installs the flushed SST, so the recorded sequence is always covered by a healthy store;
// a crash while replacing it leaves the old (lower) value, which only weakens the check once.
inline constexpr const char* kFlushedSequenceFile = "WHARF-FLUSHED-SEQUENCE";

// The recorded sequence, 0 when the file does not exist. DATA_LOSS when it does not parse.
absl::StatusOr<uint64_t> ReadFlushedSequence(const std::string& store_dir);
// Replaces the file (write to a temporary, fsync, rename, fsync the directory).
absl::Status WriteFlushedSequence(const std::string& store_dir, uint64_t sequence);
// The second guard of the same kind, for column families: a MANIFEST read short also forgets
// the column families created after the damaged record. Their WAL records are then replayed
// into nothing (RocksDB skips records of column families it does not know), and the open
// recreates them empty: acknowledged, not yet flushed records vanish with no error (found by the
// corruption test after kill -9, once each partition had its own column families).
// <store>/WHARF-COLUMN-FAMILIES lists, one per line, every column family the store holds; it is
// written (synced, atomically replaced) after RocksDB has synced the MANIFEST records that
// create them, and before one is dropped it is rewritten without it. An open that finds a listed
// column family missing from the MANIFEST fails with DATA_LOSS naming the MANIFEST. A crash
// between creating a column family and listing it leaves it unlisted, and only while it is
// still empty (nothing is written into it before the list is updated).
inline constexpr const char* kColumnFamiliesFile = "WHARF-COLUMN-FAMILIES";

// The listed column families; empty when the file does not exist (a store from before the
// guard, or a new one). DATA_LOSS when it is not a list of names.
absl::StatusOr<std::vector<std::string>> ReadColumnFamilyList(const std::string& store_dir);
// Replaces the file like WriteFlushedSequence.
absl::Status WriteColumnFamilyList(const std::string& store_dir,
                                   const std::vector<std::string>& names);

// The MANIFEST named by <store>/CURRENT ("MANIFEST-000005"), or "MANIFEST" when unreadable.
std::string CurrentManifestName(const std::string& store_dir);

// Records the flushed sequence after each flush. Thread safety: thread-safe (RocksDB calls it
// from its flush threads).
class FlushedSequenceRecorder final : public rocksdb::EventListener {
 public:
  FlushedSequenceRecorder(std::string store_dir, uint64_t recorded)
      : store_dir_(std::move(store_dir)), recorded_(recorded) {}
  void OnFlushCompleted(rocksdb::DB* db, const rocksdb::FlushJobInfo& info) override;

 private:
  const std::string store_dir_;
  std::mutex mu_;
  uint64_t recorded_ ABSL_GUARDED_BY(mu_);
};

}  // namespace wharf::storage
