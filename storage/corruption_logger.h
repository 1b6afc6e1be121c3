#pragma once

#include <cstdarg>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "rocksdb/env.h"
#include "rocksdb/status.h"

namespace wharf::storage {

// A RocksDB info logger that forwards every line to another logger (or drops it when there is
// none) and remembers the store files named by lines that report corruption.
//
// Why: RocksDB's Status for a damaged WAL record says only "Corruption: checksum mismatch"; the
// file it was reading is named in its info log alone ("<path>/000004.log: dropping 173 bytes;
// Corruption: ..."). An operator (and wharfd's exit message) needs the file.
//
// Thread safety: thread-safe (RocksDB logs from its background threads).
class CorruptionNotingLogger final : public rocksdb::Logger {
 public:
  // `inner` may be null. Lines below `level` are neither forwarded nor examined.
  explicit CorruptionNotingLogger(std::shared_ptr<rocksdb::Logger> inner,
                                  rocksdb::InfoLogLevel level = rocksdb::InfoLogLevel::WARN_LEVEL);

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override;
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override;
  void Flush() override;

  // Paths of the files named by corruption reports so far, first seen first (at most 16).
  std::vector<std::string> DamagedFiles() const;

 private:
  rocksdb::Status CloseImpl() override;

  const std::shared_ptr<rocksdb::Logger> inner_;
  mutable std::mutex mu_;
  std::vector<std::string> damaged_ ABSL_GUARDED_BY(mu_);
};

// Store file names (WAL *.log, *.sst, MANIFEST-*, CURRENT, OPTIONS-*, IDENTITY) in `text`, as
// written there (with their directory when the text has one), in order, without repeats.
std::vector<std::string> StoreFilesNamedIn(const std::string& text);

// The message of a DATA_LOSS status for a RocksDB Corruption: "<what>: <status>", followed by
// "; damaged file(s): a, b" naming the files from `noted` that the status text does not name
// already.
std::string DescribeCorruption(const std::string& what, const rocksdb::Status& status,
                               const std::vector<std::string>& noted);

// Checks every *.sst file of `store_dir` on its own (open, then every block checksum) and returns
// "<path>: <error>" for each damaged one. Used after RocksDB reported corruption without naming
// the SST (e.g. a damaged properties block is reported against the MANIFEST). Reads only.
std::vector<std::string> FindDamagedSstFiles(const std::string& store_dir);

// The files to name for a Corruption `status` of an open of `store_dir`: those `logger` noted,
// plus, when neither they nor the status name a WAL or SST file (RocksDB reports a damaged SST
// properties block against the MANIFEST), the SST files FindDamagedSstFiles() finds.
std::vector<std::string> DamagedFilesFor(const rocksdb::Status& status,
                                         const CorruptionNotingLogger& logger,
                                         const std::string& store_dir);

}  // namespace wharf::storage
