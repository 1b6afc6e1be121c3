#include "pipeline/destinations/file_destination.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {
namespace {

// pipeline_test links GoogleTest without gMock, hence no HasSubstr.
::testing::AssertionResult MessageContains(const absl::Status& status, const std::string& part) {
  const std::string message(status.message());
  if (message.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "status " << status << " does not mention \"" << part << "\"";
}

// A batch of `payloads.size()` records at offsets first_offset.., covering up to last_offset.
wharf::v1::StoredBatch MakeBatch(const std::string& dataset, uint32_t partition,
                                 uint64_t first_offset, uint64_t last_offset,
                                 const std::vector<std::string>& payloads) {
  wharf::v1::StoredBatch batch;
  wharf::v1::BatchManifest* m = batch.mutable_manifest();
  m->set_batch_id(absl::StrCat(dataset, ".p", partition, ".", first_offset, "-", last_offset));
  m->set_dataset(dataset);
  m->set_partition(partition);
  m->set_first_offset(first_offset);
  m->set_last_offset(last_offset);
  m->set_record_count(payloads.size());
  uint64_t offset = first_offset;
  uint64_t bytes = 0;
  for (const std::string& payload : payloads) {
    wharf::v1::BatchRecord* r = batch.add_records();
    r->set_offset(offset++);
    r->set_payload(payload);
    bytes += payload.size();
  }
  m->set_bytes(bytes);
  return batch;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

// All entry names in `dir` (including dot files), sorted like `ls -a` in the C locale.
std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Sets or clears the immutable attribute (chattr +i) of a file or directory. Even root cannot
// create files in an immutable directory. Returns false where the file system or the missing
// CAP_LINUX_IMMUTABLE does not allow it.
bool SetImmutable(const std::string& path, bool on) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  int flags = 0;
  bool ok = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
  if (ok) {
    flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
    ok = ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
  }
  ::close(fd);
  return ok;
}

// Each test gets a fresh directory under /tmp, removed afterwards.
class FileDestinationTest : public ::testing::Test {
 protected:
  wharf::pipeline::DeliveryReport report_;
  void SetUp() override {
    char pattern[] = "/tmp/wharf-file-destination-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr) << "mkdtemp: " << std::strerror(errno);
    root_ = pattern;
    dir_ = root_ + "/out";
  }

  void TearDown() override {
    for (const std::string& path : immutable_) SetImmutable(path, false);
    std::error_code ec;
    // Restore permissions a test may have removed, then delete everything.
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root_, ec)) {
      if (entry.is_directory(ec)) {
        std::filesystem::permissions(entry.path(), std::filesystem::perms::owner_all,
                                     std::filesystem::perm_options::add, ec);
      }
    }
    std::filesystem::remove_all(root_, ec);
  }

  std::unique_ptr<FileDestination> MustCreate(bool fsync = true) {
    absl::StatusOr<std::unique_ptr<FileDestination>> destination =
        FileDestination::Create({.directory = dir_, .fsync = fsync});
    EXPECT_TRUE(destination.ok()) << destination.status();
    return destination.ok() ? *std::move(destination) : nullptr;
  }

  std::string root_;  // the mkdtemp directory
  std::string dir_;   // the destination directory, inside root_, created by Create()
  std::vector<std::string> immutable_;  // paths to make mutable again in TearDown
};

TEST_F(FileDestinationTest, WritesExactBytesUnderTheDocumentedName) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  EXPECT_EQ(destination->type(), "file");
  const std::vector<std::string> payloads = {
      R"({"id":1,"name":"a"})",
      "{\"name\":\"caf\xc3\xa9\"}",                 // UTF-8 kept byte for byte
      std::string("raw\0bytes\xff", 10),            // raw datasets: any bytes but newlines
      "",                                           // empty payload: an empty line
      R"({"tab":"a	b","esc":"line\nbreak"})",  // escaped "\n" is not a newline byte
  };
  const wharf::v1::StoredBatch batch = MakeBatch("orders", 3, 42, 46, payloads);

  ASSERT_TRUE(destination->Deliver(batch, &report_).ok());

  const std::string name = "orders-p0003-00000000000000000042-00000000000000000046.jsonl";
  EXPECT_EQ(destination->PathFor(batch.manifest()), dir_ + "/" + name);
  std::string expected;
  for (const std::string& payload : payloads) expected += payload + "\n";
  EXPECT_EQ(ReadFile(dir_ + "/" + name), expected);
  // Nothing else (in particular no temporary file) is left behind.
  EXPECT_EQ(ListDir(dir_), std::vector<std::string>{name});
}

TEST_F(FileDestinationTest, NameHandlesLargestValues) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  wharf::v1::BatchManifest m;
  m.set_dataset("d.x_y-z");
  m.set_partition(9999);
  m.set_first_offset(UINT64_MAX - 1);
  m.set_last_offset(UINT64_MAX);
  EXPECT_EQ(destination->PathFor(m),
            dir_ + "/d.x_y-z-p9999-18446744073709551614-18446744073709551615.jsonl");
}

TEST_F(FileDestinationTest, ReplacesNewlinesInPayloadsBySpaces) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  const wharf::v1::StoredBatch batch =
      MakeBatch("ds", 0, 0, 2, {"{\n  \"a\": 1\r\n}\n", "\r", R"({"b":"x"})"});
  ASSERT_TRUE(destination->Deliver(batch, &report_).ok());
  EXPECT_EQ(ReadFile(destination->PathFor(batch.manifest())),
            "{   \"a\": 1  } \n"
            " \n"
            "{\"b\":\"x\"}\n");
}

// Long payloads (searched in vector-sized strides) with line breaks and NUL bytes anywhere: each
// CR and LF becomes a space, every other byte stays as it was.
TEST_F(FileDestinationTest, ReplacesEveryLineBreakInLongPayloads) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  std::vector<std::string> payloads;
  std::string expected;
  for (int n : {1, 31, 64, 1000, 4099}) {
    std::string payload;
    for (int i = 0; i < n; ++i) {
      payload.push_back(i % 37 == 5   ? '\n'
                        : i % 53 == 7 ? '\r'
                        : i % 11 == 3 ? '\0'
                                      : static_cast<char>('a' + i % 26));
    }
    payload.back() = '\n';
    std::string line = payload;
    for (char& c : line) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    expected += line + "\n";
    payloads.push_back(std::move(payload));
  }
  const wharf::v1::StoredBatch batch = MakeBatch("ds", 0, 0, 4, payloads);
  ASSERT_TRUE(destination->Deliver(batch, &report_).ok());
  EXPECT_EQ(ReadFile(destination->PathFor(batch.manifest())), expected);
}

TEST_F(FileDestinationTest, EmptyBatchIsAnEmptyFile) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  // All records of the range quarantined.
  const wharf::v1::StoredBatch batch = MakeBatch("ds", 1, 10, 19, {});
  ASSERT_TRUE(destination->Deliver(batch, &report_).ok());
  const std::string path = destination->PathFor(batch.manifest());
  ASSERT_TRUE(Exists(path));
  EXPECT_EQ(ReadFile(path), "");
  // And redelivering it is recognised as done.
  EXPECT_TRUE(destination->Deliver(batch, &report_).ok());
  EXPECT_EQ(ListDir(dir_).size(), 1u);
}

TEST_F(FileDestinationTest, RedeliveryIsIdempotent) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  const wharf::v1::StoredBatch batch = MakeBatch("ds", 2, 100, 101, {R"({"a":1})", R"({"a":2})"});
  ASSERT_TRUE(destination->Deliver(batch, &report_).ok());
  const std::string path = destination->PathFor(batch.manifest());
  struct stat before {};
  ASSERT_EQ(::stat(path.c_str(), &before), 0);

  // Redelivered by this instance and, after a "restart", by a new one.
  EXPECT_TRUE(destination->Deliver(batch, &report_).ok());
  std::unique_ptr<FileDestination> restarted = MustCreate();
  ASSERT_NE(restarted, nullptr);
  EXPECT_TRUE(restarted->Deliver(batch, &report_).ok());

  EXPECT_EQ(ListDir(dir_),
            std::vector<std::string>{"ds-p0002-00000000000000000100-00000000000000000101.jsonl"});
  EXPECT_EQ(ReadFile(path), "{\"a\":1}\n{\"a\":2}\n");
  struct stat after {};
  ASSERT_EQ(::stat(path.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);  // not rewritten
}

TEST_F(FileDestinationTest, ConcurrentDeliveryOfTheSameBatchWritesOneFile) {
  // Excluded by the Destination contract, but must still not corrupt the file.
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  std::vector<std::string> payloads(2000, std::string(500, 'x'));
  const wharf::v1::StoredBatch batch = MakeBatch("ds", 0, 0, 1999, payloads);
  std::vector<absl::Status> results(8);
  // One report per thread: Deliver() writes its report, so a shared one was a data race in the
  // test itself (found by TSan, docs/reliability/sanitizers.md).
  std::vector<wharf::pipeline::DeliveryReport> reports(results.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = destination->Deliver(batch, &reports[i]); });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(ListDir(dir_).size(), 1u);
  EXPECT_EQ(ReadFile(destination->PathFor(batch.manifest())).size(), 2000u * 501u);
}

TEST_F(FileDestinationTest, CreateRemovesOnlyLeftoverTemporaryFiles) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  const wharf::v1::StoredBatch done = MakeBatch("ds", 0, 0, 0, {R"({"a":1})"});
  const wharf::v1::StoredBatch crashed = MakeBatch("ds", 0, 1, 1, {R"({"a":2})"});
  ASSERT_TRUE(destination->Deliver(done, &report_).ok());
  destination.reset();

  // What a process killed in the middle of delivering `crashed` leaves behind.
  const std::string final_name = "ds-p0000-00000000000000000001-00000000000000000001.jsonl";
  const std::string leftover = "." + final_name + ".0123456789abcdef-7.tmp";
  WriteFile(dir_ + "/" + leftover, "{\"a\":");
  // Files that are not ours must survive.
  const std::vector<std::string> foreign = {"README", ".hidden", "notes.tmp", ".cache.tmp",
                                            "other.jsonl"};
  for (const std::string& name : foreign) WriteFile(dir_ + "/" + name, "keep");
  ASSERT_EQ(::mkdir((dir_ + "/.sub.jsonl.x.tmp").c_str(), 0755), 0);  // not a regular file

  destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  EXPECT_FALSE(Exists(dir_ + "/" + leftover));
  EXPECT_TRUE(Exists(destination->PathFor(done.manifest())));
  EXPECT_EQ(ReadFile(destination->PathFor(done.manifest())), "{\"a\":1}\n");
  for (const std::string& name : foreign) EXPECT_EQ(ReadFile(dir_ + "/" + name), "keep") << name;
  EXPECT_TRUE(Exists(dir_ + "/.sub.jsonl.x.tmp"));

  // The interrupted batch is delivered again, completely.
  ASSERT_TRUE(destination->Deliver(crashed, &report_).ok());
  EXPECT_EQ(ReadFile(dir_ + "/" + final_name), "{\"a\":2}\n");
}

TEST_F(FileDestinationTest, ExistingFinalFileOfWrongSizeIsDataLossAndUntouched) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  const wharf::v1::StoredBatch batch = MakeBatch("ds", 5, 7, 8, {R"({"a":1})", R"({"a":2})"});
  const std::string path = destination->PathFor(batch.manifest());
  WriteFile(path, "{\"a\":1}\n{\"a\"");  // truncated by someone

  const absl::Status status = destination->Deliver(batch, &report_);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_TRUE(MessageContains(status, path));
  EXPECT_EQ(ReadFile(path), "{\"a\":1}\n{\"a\"");
  EXPECT_EQ(ListDir(dir_).size(), 1u);  // no temporary file left

  // A directory in its place is not overwritten either.
  const wharf::v1::StoredBatch other = MakeBatch("ds", 5, 9, 9, {"{}"});
  ASSERT_EQ(::mkdir(destination->PathFor(other.manifest()).c_str(), 0755), 0);
  EXPECT_EQ(destination->Deliver(other, &report_).code(), absl::StatusCode::kDataLoss);
}

TEST_F(FileDestinationTest, InvalidDatasetNameIsRejected) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  for (const std::string& dataset :
       {std::string("../escape"), std::string(""), std::string(".hidden"), std::string("a/b")}) {
    const absl::Status status = destination->Deliver(MakeBatch(dataset, 0, 0, 0, {"{}"}), &report_);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << dataset << ": " << status;
  }
  EXPECT_TRUE(ListDir(dir_).empty());
  EXPECT_EQ(ListDir(root_), std::vector<std::string>{"out"});
}

TEST_F(FileDestinationTest, CreateFailsWhenDirectoryCannotBeCreated) {
  const std::string file = root_ + "/regular-file";
  WriteFile(file, "x");

  absl::StatusOr<std::unique_ptr<FileDestination>> under_file =
      FileDestination::Create({.directory = file + "/sub/dir"});
  ASSERT_FALSE(under_file.ok());
  EXPECT_TRUE(MessageContains(under_file.status(), file));
  EXPECT_TRUE(MessageContains(under_file.status(), "not a directory"));

  absl::StatusOr<std::unique_ptr<FileDestination>> is_file =
      FileDestination::Create({.directory = file});
  ASSERT_FALSE(is_file.ok());
  EXPECT_TRUE(MessageContains(is_file.status(), file));

  EXPECT_EQ(FileDestination::Create({.directory = ""}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadFile(file), "x");
}

TEST_F(FileDestinationTest, CreateMakesParentsAndNormalizesThePath) {
  absl::StatusOr<std::unique_ptr<FileDestination>> destination =
      FileDestination::Create({.directory = root_ + "//a/./b/c/"});
  ASSERT_TRUE(destination.ok()) << destination.status();
  struct stat st {};
  ASSERT_EQ(::stat((root_ + "/a/b/c").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  const wharf::v1::StoredBatch batch = MakeBatch("ds", 0, 0, 0, {"{}"});
  EXPECT_EQ((*destination)->PathFor(batch.manifest()),
            root_ + "/a/b/c/ds-p0000-00000000000000000000-00000000000000000000.jsonl");
  EXPECT_TRUE((*destination)->Deliver(batch, &report_).ok());
}

TEST_F(FileDestinationTest, NonWritableDirectoryFails) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  // Tests run as root, which ignores permission bits: use the immutable attribute, which stops
  // root too. Fall back to permission bits when not root.
  if (SetImmutable(dir_, true)) {
    immutable_.push_back(dir_);
  } else if (::geteuid() != 0) {
    ASSERT_EQ(::chmod(dir_.c_str(), 0500), 0);
  } else {
    // Root without chattr support: check the refusal in a child that drops to nobody, with the
    // directory read-only for it (0555 on the way down so it can reach the directory).
    ASSERT_EQ(::chmod(root_.c_str(), 0755), 0);
    ASSERT_EQ(::chmod(dir_.c_str(), 0555), 0);
    const wharf::v1::StoredBatch batch = MakeBatch("ds", 0, 0, 0, {"{}"});
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
      const absl::Status status = destination->Deliver(batch, &report_);
      if (status.ok()) ::_exit(11);
      if (!MessageContains(status, dir_)) ::_exit(12);
      ::_exit(0);
    }
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFEXITED(wstatus));
    EXPECT_EQ(WEXITSTATUS(wstatus), 0) << "10: setuid failed, 11: delivery succeeded, 12: message";
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
    EXPECT_TRUE(destination->Deliver(batch, &report_).ok());
    return;
  }

  const wharf::v1::StoredBatch batch = MakeBatch("ds", 0, 0, 0, {"{}"});
  const absl::Status status = destination->Deliver(batch, &report_);
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(MessageContains(status, dir_));
  EXPECT_FALSE(Exists(destination->PathFor(batch.manifest())));

  absl::StatusOr<std::unique_ptr<FileDestination>> second =
      FileDestination::Create({.directory = dir_});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(MessageContains(second.status(), dir_));

  // Once writable again, the retried delivery succeeds.
  if (!immutable_.empty()) {
    ASSERT_TRUE(SetImmutable(dir_, false));
  } else {
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  }
  EXPECT_TRUE(destination->Deliver(batch, &report_).ok());
  EXPECT_EQ(ListDir(dir_).size(), 1u);
}

TEST_F(FileDestinationTest, DirectoryReplacedByAFileFailsDelivery) {
  // Fails for root too, whatever the file system.
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  ASSERT_EQ(::rmdir(dir_.c_str()), 0);
  WriteFile(dir_, "not a directory");
  const absl::Status status = destination->Deliver(MakeBatch("ds", 0, 0, 0, {"{}"}), &report_);
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(MessageContains(status, dir_));
  EXPECT_EQ(ReadFile(dir_), "not a directory");
}

TEST_F(FileDestinationTest, ConcurrentDeliveryOfDifferentPartitionsAllLands) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  constexpr uint32_t kPartitions = 8;
  constexpr uint64_t kBatchesPerPartition = 25;
  constexpr uint64_t kRecordsPerBatch = 10;
  std::vector<std::vector<absl::Status>> results(kPartitions);
  std::vector<std::thread> threads;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    threads.emplace_back([&, p] {
      for (uint64_t b = 0; b < kBatchesPerPartition; ++b) {
        std::vector<std::string> payloads;
        const uint64_t first = b * kRecordsPerBatch;
        for (uint64_t o = first; o < first + kRecordsPerBatch; ++o) {
          payloads.push_back(absl::StrCat(R"({"p":)", p, R"(,"o":)", o, "}"));
        }
        DeliveryReport report;
        results[p].push_back(destination->Deliver(
            MakeBatch("ds", p, first, first + kRecordsPerBatch - 1, payloads), &report));
      }
    });
  }
  for (std::thread& t : threads) t.join();

  for (const auto& partition_results : results) {
    for (const absl::Status& s : partition_results) EXPECT_TRUE(s.ok()) << s;
  }
  EXPECT_EQ(ListDir(dir_).size(), kPartitions * kBatchesPerPartition);
  for (uint32_t p = 0; p < kPartitions; ++p) {
    for (uint64_t b = 0; b < kBatchesPerPartition; ++b) {
      const uint64_t first = b * kRecordsPerBatch;
      wharf::v1::BatchManifest m;
      m.set_dataset("ds");
      m.set_partition(p);
      m.set_first_offset(first);
      m.set_last_offset(first + kRecordsPerBatch - 1);
      std::string expected;
      for (uint64_t o = first; o < first + kRecordsPerBatch; ++o) {
        expected += absl::StrCat(R"({"p":)", p, R"(,"o":)", o, "}\n");
      }
      EXPECT_EQ(ReadFile(destination->PathFor(m)), expected) << "p" << p << " batch " << b;
    }
  }
}

TEST_F(FileDestinationTest, ListingSortsByPartitionThenOffset) {
  // fsync off: this test is about names, not durability.
  std::unique_ptr<FileDestination> destination = MustCreate(/*fsync=*/false);
  ASSERT_NE(destination, nullptr);
  // Offsets and partitions that cross digit-count boundaries, where unpadded names would sort
  // wrongly ("p10" before "p2", "100" before "99").
  const std::vector<uint32_t> partitions = {0, 1, 2, 9, 10, 99, 100, 1000, 9999};
  const std::vector<std::pair<uint64_t, uint64_t>> ranges = {
      {0, 8}, {9, 98}, {99, 99}, {100, 999}, {1000, 123456789}, {123456790, UINT64_MAX}};
  std::vector<std::tuple<uint32_t, uint64_t, uint64_t>> batches;
  for (uint32_t p : partitions) {
    for (const auto& [first, last] : ranges) batches.emplace_back(p, first, last);
  }
  std::vector<std::tuple<uint32_t, uint64_t, uint64_t>> shuffled = batches;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(42));
  for (const auto& [p, first, last] : shuffled) {
    ASSERT_TRUE(destination->Deliver(MakeBatch("ds", p, first, last, {"{}"}), &report_).ok());
  }

  std::vector<std::string> expected;  // `batches` is already in (partition, offset) order
  for (const auto& [p, first, last] : batches) {
    wharf::v1::BatchManifest m;
    m.set_dataset("ds");
    m.set_partition(p);
    m.set_first_offset(first);
    m.set_last_offset(last);
    expected.push_back(std::filesystem::path(destination->PathFor(m)).filename().string());
  }
  EXPECT_EQ(ListDir(dir_), expected);
}

TEST_F(FileDestinationTest, LargeBatchIsWrittenCompletely) {
  std::unique_ptr<FileDestination> destination = MustCreate();
  ASSERT_NE(destination, nullptr);
  std::vector<std::string> payloads;
  std::string expected;
  for (int i = 0; i < 4096; ++i) {
    payloads.push_back(absl::StrCat(R"({"i":)", i, R"(,"pad":")",
                                    std::string(8000, static_cast<char>('a' + i % 26)), R"("})"));
    expected += payloads.back() + "\n";
  }
  const wharf::v1::StoredBatch batch = MakeBatch("big", 0, 0, 4095, payloads);
  ASSERT_TRUE(destination->Deliver(batch, &report_).ok());
  EXPECT_EQ(ReadFile(destination->PathFor(batch.manifest())), expected);
}

}  // namespace
}  // namespace wharf::pipeline
