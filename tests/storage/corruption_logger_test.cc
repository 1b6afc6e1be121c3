#include "storage/corruption_logger.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "storage/flushed_sequence.h"

namespace wharf::storage {
namespace {

namespace fs = std::filesystem;

class TempStoreDir {
 public:
  TempStoreDir() {
    char tmpl[] = "/tmp/wharf-corruption-logger-XXXXXX";
    char* p = mkdtemp(tmpl);
    if (p == nullptr) std::abort();
    path_ = p;
  }
  ~TempStoreDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void LogLine(rocksdb::Logger* logger, rocksdb::InfoLogLevel level, const char* format, ...) {
  va_list ap;
  va_start(ap, format);
  logger->Logv(level, format, ap);
  va_end(ap);
}

TEST(StoreFilesNamedIn, FindsRocksDbFileNamesWithTheirPunctuationRemoved) {
  EXPECT_EQ(StoreFilesNamedIn("/d/000004.log: dropping 173 bytes; Corruption: checksum mismatch"),
            std::vector<std::string>{"/d/000004.log"});
  EXPECT_EQ(StoreFilesNamedIn("block checksum mismatch in /d/000012.sst offset 0 size 9, "
                              "(MANIFEST-000005) and /d/000012.sst."),
            (std::vector<std::string>{"/d/000012.sst", "MANIFEST-000005"}));
  EXPECT_TRUE(StoreFilesNamedIn("").empty());
  EXPECT_TRUE(StoreFilesNamedIn("x.log abc.sst MANIFEST- MANIFEST-12a .sst 12.ss").empty());
  EXPECT_EQ(StoreFilesNamedIn("CURRENT OPTIONS-000007 IDENTITY"),
            (std::vector<std::string>{"CURRENT", "OPTIONS-000007", "IDENTITY"}));
}

TEST(CorruptionNotingLogger, NotesFilesOfCorruptionReportsOnly) {
  CorruptionNotingLogger logger(nullptr);
  LogLine(&logger, rocksdb::InfoLogLevel::WARN_LEVEL, "%s: dropping %d bytes; %s", "/d/000004.log",
          22, "Corruption: checksum mismatch");
  LogLine(&logger, rocksdb::InfoLogLevel::WARN_LEVEL, "opened /d/000009.log fine");
  LogLine(&logger, rocksdb::InfoLogLevel::INFO_LEVEL, "Corruption in /d/000010.sst");
  LogLine(&logger, rocksdb::InfoLogLevel::ERROR_LEVEL, "%s", "Corruption: bad /d/000004.log");
  EXPECT_EQ(logger.DamagedFiles(), std::vector<std::string>{"/d/000004.log"});
  // Bounded.
  for (int i = 0; i < 100; ++i) {
    LogLine(&logger, rocksdb::InfoLogLevel::WARN_LEVEL, "Corruption in /d/%06d.sst", i);
  }
  EXPECT_EQ(logger.DamagedFiles().size(), 16u);
}

TEST(DescribeCorruption, AddsOnlyFilesTheStatusDoesNotName) {
  const auto s = rocksdb::Status::Corruption("checksum mismatch in file /d/MANIFEST-000005");
  EXPECT_EQ(DescribeCorruption("opening", s, {"/d/MANIFEST-000005"}),
            "opening: Corruption: checksum mismatch in file /d/MANIFEST-000005");
  EXPECT_EQ(DescribeCorruption("opening", s, {"/d/000004.log"}),
            "opening: Corruption: checksum mismatch in file /d/MANIFEST-000005; damaged "
            "file(s): /d/000004.log");
}

// Regression: RocksDB reports a damaged SST properties block as "properties unsorted in file
// <MANIFEST>"; the SST must be named (found by the corruption test).
TEST(DamagedFilesFor, FindsTheDamagedSstWhenRocksDbBlamesTheManifest) {
  TempStoreDir dir;
  {
    rocksdb::Options options;
    options.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(options, dir.path(), &db).ok());
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "key" + std::to_string(i),
                          std::string(100, static_cast<char>('a' + i % 26)))
                      .ok());
    }
    ASSERT_TRUE(db->Flush(rocksdb::FlushOptions()).ok());
    ASSERT_TRUE(db->Close().ok());
    delete db;
  }
  std::string sst;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    if (e.path().extension() == ".sst") sst = e.path().string();
  }
  ASSERT_FALSE(sst.empty());
  CorruptionNotingLogger logger(nullptr);
  const auto blamed =
      rocksdb::Status::Corruption("properties unsorted in file " + dir.path() + "/MANIFEST-000005");
  EXPECT_TRUE(DamagedFilesFor(blamed, logger, dir.path()).empty()) << "healthy SSTs were blamed";
  {
    std::fstream io(sst, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(20);
    char c = 0;
    io.get(c);
    io.seekp(20);
    io.put(static_cast<char>(c ^ 0x10));
  }
  const std::vector<std::string> found = DamagedFilesFor(blamed, logger, dir.path());
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].rfind(sst, 0), 0u) << found[0];
  // A status that names a data file already is not expanded by a scan.
  const auto named = rocksdb::Status::Corruption("block checksum mismatch in " + sst);
  EXPECT_TRUE(DamagedFilesFor(named, logger, dir.path()).empty());
}

TEST(FlushedSequence, RoundTripsAndRefusesADamagedFile) {
  TempStoreDir dir;
  auto none = ReadFlushedSequence(dir.path());
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u);
  ASSERT_TRUE(WriteFlushedSequence(dir.path(), 12345).ok());
  auto got = ReadFlushedSequence(dir.path());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 12345u);
  EXPECT_FALSE(fs::exists(dir.path() + "/" + kFlushedSequenceFile + ".tmp"));
  for (const char* bad : {"", "12a\n", "-1\n", "99999999999999999999999\n"}) {
    std::ofstream(dir.path() + "/" + kFlushedSequenceFile, std::ios::trunc) << bad;
    auto r = ReadFlushedSequence(dir.path());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << "\"" << bad << "\"";
  }
  EXPECT_EQ(CurrentManifestName(dir.path()), "MANIFEST");
  std::ofstream(dir.path() + "/CURRENT") << "MANIFEST-000042\n";
  EXPECT_EQ(CurrentManifestName(dir.path()), "MANIFEST-000042");
  EXPECT_FALSE(WriteFlushedSequence(dir.path() + "/missing", 1).ok());
}

}  // namespace
}  // namespace wharf::storage
