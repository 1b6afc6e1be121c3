#include "pipeline/destinations/rolling_file_destination.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {
namespace {

constexpr int64_t kCreateSeconds = 1795257845;  // 2026-11-21T10:44:05Z
constexpr char kLastOffsetTemplate[] = "{dataset}-p{partition}-{first_offset}-{last_offset}.jsonl";

::testing::AssertionResult MessageContains(const absl::Status& status, const std::string& part) {
  const std::string message(status.message());
  if (message.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "status " << status << " does not mention \"" << part << "\"";
}

// A batch with one record per payload at offsets first_offset.., covering up to last_offset.
wharf::v1::StoredBatch MakeBatch(const std::string& dataset, uint32_t partition,
                                 uint64_t first_offset, uint64_t last_offset,
                                 const std::vector<std::string>& payloads,
                                 int64_t create_seconds = kCreateSeconds) {
  wharf::v1::StoredBatch batch;
  wharf::v1::BatchManifest* m = batch.mutable_manifest();
  m->set_batch_id(absl::StrCat(dataset, ".p", partition, ".", first_offset, "-", last_offset));
  m->set_dataset(dataset);
  m->set_partition(partition);
  m->set_first_offset(first_offset);
  m->set_last_offset(last_offset);
  m->set_record_count(payloads.size());
  m->mutable_create_time()->set_seconds(create_seconds);
  uint64_t offset = first_offset;
  for (const std::string& payload : payloads) {
    wharf::v1::BatchRecord* r = batch.add_records();
    r->set_offset(offset++);
    r->set_payload(payload);
  }
  return batch;
}

// A batch of consecutive records {"p":<partition>,"o":<offset>}.
wharf::v1::StoredBatch RangeBatch(const std::string& dataset, uint32_t partition, uint64_t first,
                                  uint64_t last) {
  std::vector<std::string> payloads;
  for (uint64_t o = first; o <= last; ++o) {
    payloads.push_back(absl::StrCat(R"({"p":)", partition, R"(,"o":)", o, "}"));
  }
  return MakeBatch(dataset, partition, first, last, payloads);
}

std::string RangeLines(uint32_t partition, uint64_t first, uint64_t last) {
  std::string out;
  for (uint64_t o = first; o <= last; ++o) {
    absl::StrAppend(&out, R"({"p":)", partition, R"(,"o":)", o, "}\n");
  }
  return out;
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

void AppendFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out << content;
}

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Every regular file under `dir`, as paths relative to it, sorted.
std::vector<std::string> ListTree(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (entry.is_regular_file(ec)) {
      names.push_back(std::filesystem::relative(entry.path(), dir, ec).string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Files under `dir` that are neither the state nor the lock file.
std::vector<std::string> DataFiles(const std::string& dir) {
  std::vector<std::string> out;
  for (const std::string& name : ListTree(dir)) {
    if (!name.starts_with(".wharf-")) out.push_back(name);
  }
  return out;
}

// Decompresses concatenated gzip members; `members` receives their number. Empty optional-like
// result with ok=false on a format error.
struct Gunzipped {
  bool ok = false;
  std::string data;
  int members = 0;
};
Gunzipped Gunzip(const std::string& compressed) {
  Gunzipped out;
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return out;
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  zs.avail_in = static_cast<uInt>(compressed.size());
  std::vector<unsigned char> buf(4096);
  while (true) {
    zs.next_out = buf.data();
    zs.avail_out = static_cast<uInt>(buf.size());
    const int rc = inflate(&zs, Z_NO_FLUSH);
    out.data.append(reinterpret_cast<const char*>(buf.data()), buf.size() - zs.avail_out);
    if (rc == Z_STREAM_END) {
      ++out.members;
      if (zs.avail_in == 0) {
        out.ok = true;
        break;
      }
      if (inflateReset(&zs) != Z_OK) break;
      continue;
    }
    if (rc != Z_OK) break;
    if (zs.avail_in == 0 && zs.avail_out != 0) break;  // truncated member
  }
  inflateEnd(&zs);
  return out;
}

// Reads a gzip file with zlib's gzread, which continues across concatenated members.
std::string GzRead(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return "<gzopen failed>";
  std::string out;
  char buf[4096];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  gzclose(f);
  return n < 0 ? "<gzread failed>" : out;
}

// A state file with a valid checksum around `body` (for malformed-content tests).
std::string StateWithChecksum(const std::string& body) {
  const uLong crc =
      crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()));
  char trailer[32];
  std::snprintf(trailer, sizeof(trailer), "crc %08lx\n", crc);
  return body + trailer;
}

class RollingFileDestinationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/wharf-rolling-file-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr) << "mkdtemp: " << std::strerror(errno);
    root_ = pattern;
    dir_ = root_ + "/out";
  }

  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  RollingFileDestinationOptions Options() const {
    RollingFileDestinationOptions options;
    options.name = "archive";
    options.directory = dir_;
    options.path_template = kLastOffsetTemplate;
    options.max_bytes = 0;
    options.max_age = std::chrono::seconds(0);
    return options;
  }

  std::unique_ptr<RollingFileDestination> MustCreate(const RollingFileDestinationOptions& options) {
    absl::StatusOr<std::unique_ptr<RollingFileDestination>> destination =
        RollingFileDestination::Create(options);
    EXPECT_TRUE(destination.ok()) << destination.status();
    return destination.ok() ? *std::move(destination) : nullptr;
  }

  absl::Status Deliver(RollingFileDestination& d, const wharf::v1::StoredBatch& batch) {
    report_ = DeliveryReport();
    return d.Deliver(batch, &report_);
  }

  std::string StatePath() const { return dir_ + "/.wharf-archive.state"; }

  std::string root_;
  std::string dir_;
  DeliveryReport report_;
};

TEST_F(RollingFileDestinationTest, AppendsSeveralBatchesIntoOneFile) {
  RollingFileDestinationOptions options = Options();
  options.path_template = "";  // the default template
  std::unique_ptr<RollingFileDestination> d = MustCreate(options);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->type(), "file");
  EXPECT_EQ(d->state_path(), StatePath());

  const wharf::v1::StoredBatch b1 = MakeBatch("ds", 3, 10, 11, {R"({"a":1})", "{\n\"b\":\r2}"});
  const wharf::v1::StoredBatch b2 = MakeBatch("ds", 3, 12, 14, {"", std::string("x\0y", 3)});
  const wharf::v1::StoredBatch b3 = MakeBatch("ds", 3, 15, 15, {R"({"c":3})"});
  const std::string final_name = "ds/2026-11-21/ds-p0003-00000000000000000010.jsonl";
  for (const auto* b : {&b1, &b2, &b3}) {
    ASSERT_TRUE(Deliver(*d, *b).ok());
    EXPECT_FALSE(report_.already_delivered);
    EXPECT_EQ(report_.commit_id, final_name);  // no {last_offset}: the final name is known
  }
  // Still in progress: hidden, next to where the final file will be.
  EXPECT_EQ(DataFiles(dir_), std::vector<std::string>{
                                 "ds/2026-11-21/.ds-p0003-00000000000000000010.jsonl.inprogress"});

  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(DataFiles(dir_), std::vector<std::string>{final_name});
  EXPECT_EQ(ReadFile(dir_ + "/" + final_name),
            "{\"a\":1}\n{ \"b\": 2}\n\n" + std::string("x\0y\n", 4) + "{\"c\":3}\n");
  EXPECT_EQ(ListTree(dir_),
            (std::vector<std::string>{".wharf-archive.lock", ".wharf-archive.state", final_name}));
}

TEST_F(RollingFileDestinationTest, RollsBySize) {
  RollingFileDestinationOptions options = Options();
  options.max_bytes = 20;  // each batch below writes 16 bytes: two batches per file
  std::unique_ptr<RollingFileDestination> d = MustCreate(options);
  ASSERT_NE(d, nullptr);
  auto batch = [](uint64_t first) {
    return MakeBatch(
        "ds", 1, first, first + 1,
        {absl::StrCat(R"({"o":)", first, "}"), absl::StrCat(R"({"o":)", first + 1, "}")});
  };
  ASSERT_TRUE(Deliver(*d, batch(0)).ok());
  EXPECT_EQ(report_.commit_id, ".ds-p0001-00000000000000000000-open.jsonl.inprogress");
  ASSERT_TRUE(Deliver(*d, batch(2)).ok());
  EXPECT_EQ(report_.commit_id, "ds-p0001-00000000000000000000-00000000000000000003.jsonl");
  ASSERT_TRUE(Deliver(*d, batch(4)).ok());
  ASSERT_TRUE(Deliver(*d, batch(6)).ok());
  ASSERT_TRUE(Deliver(*d, batch(8)).ok());
  EXPECT_EQ(DataFiles(dir_),
            (std::vector<std::string>{".ds-p0001-00000000000000000008-open.jsonl.inprogress",
                                      "ds-p0001-00000000000000000000-00000000000000000003.jsonl",
                                      "ds-p0001-00000000000000000004-00000000000000000007.jsonl"}));
  ASSERT_TRUE(d->Close().ok());
  const std::vector<std::string> files = DataFiles(dir_);
  ASSERT_EQ(files,
            (std::vector<std::string>{"ds-p0001-00000000000000000000-00000000000000000003.jsonl",
                                      "ds-p0001-00000000000000000004-00000000000000000007.jsonl",
                                      "ds-p0001-00000000000000000008-00000000000000000009.jsonl"}));
  EXPECT_EQ(ReadFile(dir_ + "/" + files[0]), "{\"o\":0}\n{\"o\":1}\n{\"o\":2}\n{\"o\":3}\n");
  EXPECT_EQ(ReadFile(dir_ + "/" + files[1]), "{\"o\":4}\n{\"o\":5}\n{\"o\":6}\n{\"o\":7}\n");
  EXPECT_EQ(ReadFile(dir_ + "/" + files[2]), "{\"o\":8}\n{\"o\":9}\n");
}

TEST_F(RollingFileDestinationTest, RollsByAgeViaRollExpired) {
  RollingFileDestinationOptions options = Options();
  options.max_age = std::chrono::seconds(300);
  std::unique_ptr<RollingFileDestination> d = MustCreate(options);
  ASSERT_NE(d, nullptr);
  const auto opened = std::chrono::system_clock::now();
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 4)).ok());
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 2, 0, 1)).ok());

  ASSERT_TRUE(d->RollExpired(opened + std::chrono::seconds(290)).ok());
  EXPECT_EQ(DataFiles(dir_),
            (std::vector<std::string>{".ds-p0000-00000000000000000000-open.jsonl.inprogress",
                                      ".ds-p0002-00000000000000000000-open.jsonl.inprogress"}));
  ASSERT_TRUE(d->RollExpired(opened + std::chrono::seconds(302)).ok());
  EXPECT_EQ(DataFiles(dir_),
            (std::vector<std::string>{"ds-p0000-00000000000000000000-00000000000000000004.jsonl",
                                      "ds-p0002-00000000000000000000-00000000000000000001.jsonl"}));
  EXPECT_EQ(ReadFile(dir_ + "/ds-p0000-00000000000000000000-00000000000000000004.jsonl"),
            RangeLines(0, 0, 4));
  // Nothing open: rolling again is a no-op.
  EXPECT_TRUE(d->RollExpired(opened + std::chrono::hours(1)).ok());
  EXPECT_EQ(DataFiles(dir_).size(), 2u);
}

// The wall clock stepped back an hour after the files were opened: by the wall clock they are
// not even open yet, but they are due by their steady-clock age (before, they stayed open, their
// records unpublished, for the hour plus max_age).
TEST_F(RollingFileDestinationTest, RollsByAgeWhenTheWallClockSteppedBack) {
  RollingFileDestinationOptions options = Options();
  options.max_age = std::chrono::seconds(1);
  std::unique_ptr<RollingFileDestination> d = MustCreate(options);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 4)).ok());
  const auto stepped_back = [] { return std::chrono::system_clock::now() - std::chrono::hours(1); };
  ASSERT_TRUE(d->RollExpired(stepped_back()).ok());
  EXPECT_EQ(DataFiles(dir_),
            std::vector<std::string>{".ds-p0000-00000000000000000000-open.jsonl.inprogress"});
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_TRUE(d->RollExpired(stepped_back()).ok());
  EXPECT_EQ(DataFiles(dir_),
            std::vector<std::string>{"ds-p0000-00000000000000000000-00000000000000000004.jsonl"});
}

TEST_F(RollingFileDestinationTest, NoAgeLimitWhenMaxAgeIsZero) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());  // max_age 0
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 0)).ok());
  ASSERT_TRUE(d->RollExpired(std::chrono::system_clock::now() + std::chrono::hours(24 * 365)).ok());
  EXPECT_EQ(DataFiles(dir_),
            std::vector<std::string>{".ds-p0000-00000000000000000000-open.jsonl.inprogress"});
}

TEST_F(RollingFileDestinationTest, DeliverRollsAnExpiredFileFirst) {
  RollingFileDestinationOptions options = Options();
  options.max_age = std::chrono::seconds(1);
  std::unique_ptr<RollingFileDestination> d = MustCreate(options);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 1)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 2, 3)).ok());
  EXPECT_EQ(DataFiles(dir_),
            (std::vector<std::string>{".ds-p0000-00000000000000000002-open.jsonl.inprogress",
                                      "ds-p0000-00000000000000000000-00000000000000000001.jsonl"}));
  EXPECT_EQ(ReadFile(dir_ + "/ds-p0000-00000000000000000000-00000000000000000001.jsonl"),
            RangeLines(0, 0, 1));
}

TEST_F(RollingFileDestinationTest, GzipMembersDecompressToTheLines) {
  RollingFileDestinationOptions options = Options();
  options.gzip = true;
  std::unique_ptr<RollingFileDestination> d = MustCreate(options);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 9)).ok());
  ASSERT_TRUE(
      Deliver(*d, MakeBatch("ds", 0, 10, 11, {"{\"nl\":\n1}", std::string(100000, 'z')})).ok());
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 12, 20)).ok());
  ASSERT_TRUE(d->Close().ok());
  const std::string name = "ds-p0000-00000000000000000000-00000000000000000020.jsonl.gz";
  ASSERT_EQ(DataFiles(dir_), std::vector<std::string>{name});
  const std::string expected = RangeLines(0, 0, 9) + "{\"nl\": 1}\n" + std::string(100000, 'z') +
                               "\n" + RangeLines(0, 12, 20);
  const std::string compressed = ReadFile(dir_ + "/" + name);
  EXPECT_LT(compressed.size(), expected.size());
  const Gunzipped inflated = Gunzip(compressed);
  ASSERT_TRUE(inflated.ok);
  EXPECT_EQ(inflated.members, 3);  // one member per batch
  EXPECT_EQ(inflated.data, expected);
  EXPECT_EQ(GzRead(dir_ + "/" + name), expected);
}

TEST_F(RollingFileDestinationTest, GzipSuffixIsNotDoubled) {
  RollingFileDestinationOptions options = Options();
  options.gzip = true;
  options.path_template = "{dataset}/{partition}/{first_offset}.json.gz";
  std::unique_ptr<RollingFileDestination> d = MustCreate(options);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 5, 6)).ok());
  EXPECT_EQ(report_.commit_id, "ds/0000/00000000000000000005.json.gz");
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(GzRead(dir_ + "/ds/0000/00000000000000000005.json.gz"), RangeLines(0, 5, 6));
}

TEST_F(RollingFileDestinationTest, TemplatePlaceholdersRenderAsDocumented) {
  RollingFileDestinationOptions options = Options();
  options.path_template = "{dataset}/{date}/{hour}/p{partition}/{first_offset}-{last_offset}.jsonl";
  std::unique_ptr<RollingFileDestination> d = MustCreate(options);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, MakeBatch("orders.eu", 7, 42, 44, {"{}"})).ok());
  ASSERT_TRUE(Deliver(*d, MakeBatch("orders.eu", 7, 45, 45, {"{}"}, kCreateSeconds + 86400)).ok());
  // A partition beyond 4 digits and a create time at the start of a day.
  ASSERT_TRUE(Deliver(*d, MakeBatch("orders.eu", 12345, 0, 0, {"{}"}, 1767225600)).ok());
  ASSERT_TRUE(d->Close().ok());
  // The second batch's later create_time does not change the name: the first batch's counts.
  EXPECT_EQ(DataFiles(dir_),
            (std::vector<std::string>{
                "orders.eu/2026-01-01/00/p12345/00000000000000000000-00000000000000000000.jsonl",
                "orders.eu/2026-11-21/10/p0007/00000000000000000042-00000000000000000045.jsonl"}));
}

TEST_F(RollingFileDestinationTest, InvalidOptionsAreRefused) {
  const std::vector<std::pair<std::string, std::string>> templates = {
      {"{dataset}-{first_offset}.jsonl", "{partition}"},
      {"{dataset}-p{partition}.jsonl", "{first_offset}"},
      {"{dataset}-p{partition}-{first_offset}-{month}.jsonl", "unknown placeholder {month}"},
      {"/abs/{partition}-{first_offset}.jsonl", "absolute"},
      {"../{partition}-{first_offset}.jsonl", "\"..\""},
      {"a/../{partition}-{first_offset}.jsonl", "\"..\""},
      {"./{partition}-{first_offset}.jsonl", "\".\""},
      {"a//{partition}-{first_offset}.jsonl", "empty path component"},
      {"{partition}-{first_offset}/", "empty path component"},
      {".{partition}-{first_offset}.jsonl", "starts with '.'"},
      {"{partition}-{first_offset}.jsonl{", "unmatched '{'"},
      {"{partition}-{first_offset}}.jsonl", "unmatched '}'"},
      {"{partition-{first_offset}.jsonl", "unknown placeholder"},
      {"{last_offset}/{partition}-{first_offset}.jsonl", "only appear in the file name"},
      {"{partition}-{first_offset}\n.jsonl", "control character"},
      {std::string(240, 'a') + "{partition}-{first_offset}", "limit"},
  };
  for (const auto& [tmpl, why] : templates) {
    RollingFileDestinationOptions options = Options();
    options.path_template = tmpl;
    absl::StatusOr<std::unique_ptr<RollingFileDestination>> d =
        RollingFileDestination::Create(options);
    ASSERT_FALSE(d.ok()) << tmpl;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << tmpl;
    EXPECT_TRUE(MessageContains(d.status(), why)) << tmpl;
  }
  for (const std::string& name :
       {std::string(""), std::string("../x"), std::string(".hidden"), std::string("a b")}) {
    RollingFileDestinationOptions options = Options();
    options.name = name;
    EXPECT_EQ(RollingFileDestination::Create(options).status().code(),
              absl::StatusCode::kInvalidArgument)
        << name;
  }
  RollingFileDestinationOptions options = Options();
  options.max_age = std::chrono::seconds(-1);
  EXPECT_EQ(RollingFileDestination::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = Options();
  options.directory = "";
  EXPECT_EQ(RollingFileDestination::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Exists(dir_));  // nothing was created for invalid options
}

TEST_F(RollingFileDestinationTest, InvalidDatasetNameIsAFailedPrecondition) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  for (const std::string& dataset :
       {std::string("../escape"), std::string(""), std::string(".hidden"), std::string("a/b")}) {
    const absl::Status status = Deliver(*d, MakeBatch(dataset, 0, 0, 0, {"{}"}));
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << dataset << ": " << status;
  }
  EXPECT_TRUE(DataFiles(dir_).empty());
}

TEST_F(RollingFileDestinationTest, SecondInstanceWithTheSameNameIsRefused) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  absl::StatusOr<std::unique_ptr<RollingFileDestination>> second =
      RollingFileDestination::Create(Options());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(MessageContains(second.status(), "archive"));
  RollingFileDestinationOptions other = Options();
  other.name = "archive2";
  EXPECT_NE(MustCreate(other), nullptr);
  d.reset();  // the lock dies with the instance
  EXPECT_NE(MustCreate(Options()), nullptr);
}

TEST_F(RollingFileDestinationTest, RedeliveryIsSkipped) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  const wharf::v1::StoredBatch b1 = RangeBatch("ds", 0, 0, 2);
  const wharf::v1::StoredBatch b2 = RangeBatch("ds", 0, 3, 5);
  ASSERT_TRUE(Deliver(*d, b1).ok());
  ASSERT_TRUE(Deliver(*d, b2).ok());
  ASSERT_TRUE(Deliver(*d, b1).ok());
  EXPECT_TRUE(report_.already_delivered);
  ASSERT_TRUE(Deliver(*d, b2).ok());
  EXPECT_TRUE(report_.already_delivered);

  // After a restart too, and also once the file is published.
  d.reset();
  d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, b2).ok());
  EXPECT_TRUE(report_.already_delivered);
  ASSERT_TRUE(d->Close().ok());
  ASSERT_TRUE(Deliver(*d, b1).ok());
  EXPECT_TRUE(report_.already_delivered);
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(DataFiles(dir_),
            std::vector<std::string>{"ds-p0000-00000000000000000000-00000000000000000005.jsonl"});
  EXPECT_EQ(ReadFile(dir_ + "/" + DataFiles(dir_)[0]), RangeLines(0, 0, 5));
}

TEST_F(RollingFileDestinationTest, SubBatchesAndOverlappingBatchesAppendEachRecordOnce) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  // Sub-batches of committed batch 0-9, then the whole batch again (e.g. after a restart that
  // forgot the split): already delivered.
  wharf::v1::StoredBatch sub1 = RangeBatch("ds", 0, 0, 4);
  sub1.mutable_manifest()->set_batch_id("ds.p0.0-9/0-4");
  wharf::v1::StoredBatch sub2 = RangeBatch("ds", 0, 5, 9);
  sub2.mutable_manifest()->set_batch_id("ds.p0.0-9/5-9");
  ASSERT_TRUE(Deliver(*d, sub1).ok());
  ASSERT_TRUE(Deliver(*d, sub2).ok());
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 9)).ok());
  EXPECT_TRUE(report_.already_delivered);
  // A batch overlapping delivered offsets: only its new records are appended.
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 5, 14)).ok());
  EXPECT_FALSE(report_.already_delivered);
  // A sub-batch with a gap (offsets 15-16 quarantined).
  ASSERT_TRUE(Deliver(*d, MakeBatch("ds", 0, 15, 18, {"{\"o\":17}", "{\"o\":18}"})).ok());
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(DataFiles(dir_),
            std::vector<std::string>{"ds-p0000-00000000000000000000-00000000000000000018.jsonl"});
  EXPECT_EQ(ReadFile(dir_ + "/" + DataFiles(dir_)[0]),
            RangeLines(0, 0, 14) + "{\"o\":17}\n{\"o\":18}\n");
}

TEST_F(RollingFileDestinationTest, FileNameStartsAtTheFirstUndeliveredOffset) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 4)).ok());
  ASSERT_TRUE(d->Close().ok());
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 3, 7)).ok());  // 3-4 delivered before
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(DataFiles(dir_),
            (std::vector<std::string>{"ds-p0000-00000000000000000000-00000000000000000004.jsonl",
                                      "ds-p0000-00000000000000000005-00000000000000000007.jsonl"}));
  EXPECT_EQ(ReadFile(dir_ + "/ds-p0000-00000000000000000005-00000000000000000007.jsonl"),
            RangeLines(0, 5, 7));
}

TEST_F(RollingFileDestinationTest, EmptyBatchesAdvanceWithoutOpeningFiles) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  const wharf::v1::StoredBatch empty = MakeBatch("ds", 0, 0, 9, {});  // all quarantined
  ASSERT_TRUE(Deliver(*d, empty).ok());
  EXPECT_EQ(report_.commit_id, "");
  EXPECT_TRUE(DataFiles(dir_).empty());
  ASSERT_TRUE(Deliver(*d, empty).ok());
  EXPECT_TRUE(report_.already_delivered);
  // In an open file, an empty batch extends the covered range.
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 10, 11)).ok());
  ASSERT_TRUE(Deliver(*d, MakeBatch("ds", 0, 12, 20, {})).ok());
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(DataFiles(dir_),
            std::vector<std::string>{"ds-p0000-00000000000000000010-00000000000000000020.jsonl"});
  // The state survives a restart: the empty batch is still known as delivered.
  d.reset();
  d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, empty).ok());
  EXPECT_TRUE(report_.already_delivered);
}

// Crash (a): a partial tail beyond the committed length is dropped by the next append.
TEST_F(RollingFileDestinationTest, CrashPartialTailIsTruncatedOnNextDeliver) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 2)).ok());
  d.reset();  // like kill -9: no Close()
  const std::string in_progress = dir_ + "/.ds-p0000-00000000000000000000-open.jsonl.inprogress";
  ASSERT_TRUE(Exists(in_progress));
  // Half of a batch, longer than what the redelivery writes (so overwriting is not enough).
  AppendFile(in_progress, R"({"p":0,"o":3}
{"p":0,"o":4,"pad":")" + std::string(500, 'x'));  // half of a batch

  d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 3, 5)).ok());
  EXPECT_EQ(ReadFile(in_progress), RangeLines(0, 0, 5));
  // Also when the roll is what comes next.
  d.reset();
  AppendFile(in_progress, "garbage");
  d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(DataFiles(dir_),
            std::vector<std::string>{"ds-p0000-00000000000000000000-00000000000000000005.jsonl"});
  EXPECT_EQ(ReadFile(dir_ + "/" + DataFiles(dir_)[0]), RangeLines(0, 0, 5));
}

// Crash (b): the batch reached the file but not the state: the redelivery replaces it.
TEST_F(RollingFileDestinationTest, CrashBeforeStateUpdateRedeliversExactlyOnce) {
  for (const bool gzip : {false, true}) {
    SCOPED_TRACE(gzip ? "gzip" : "plain");
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    RollingFileDestinationOptions options = Options();
    options.gzip = gzip;
    std::unique_ptr<RollingFileDestination> d = MustCreate(options);
    ASSERT_NE(d, nullptr);
    ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 2)).ok());
    const std::string old_state = ReadFile(StatePath());
    ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 3, 5)).ok());
    d.reset();
    WriteFile(StatePath(), old_state);  // the state update of batch 3-5 "did not happen"

    d = MustCreate(options);
    ASSERT_NE(d, nullptr);
    ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 3, 5)).ok());
    EXPECT_FALSE(report_.already_delivered);
    ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 6, 7)).ok());
    ASSERT_TRUE(d->Close().ok());
    const std::vector<std::string> files = DataFiles(dir_);
    ASSERT_EQ(files.size(), 1u);
    const std::string content = ReadFile(dir_ + "/" + files[0]);
    if (gzip) {
      const Gunzipped inflated = Gunzip(content);
      ASSERT_TRUE(inflated.ok);
      EXPECT_EQ(inflated.members, 3);
      EXPECT_EQ(inflated.data, RangeLines(0, 0, 7));
    } else {
      EXPECT_EQ(content, RangeLines(0, 0, 7));
    }
  }
}

// Crash (c): the file was renamed to its final name, the state still says "in progress".
TEST_F(RollingFileDestinationTest, CrashAfterRenameBeforeStateUpdateIsRecovered) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 2)).ok());
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 3, 5)).ok());
  const std::string open_state = ReadFile(StatePath());
  ASSERT_TRUE(d->Close().ok());
  d.reset();
  WriteFile(StatePath(), open_state);

  d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  EXPECT_NE(ReadFile(StatePath()), open_state);  // recorded as rolled
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 3, 5)).ok());
  EXPECT_TRUE(report_.already_delivered);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 6, 8)).ok());
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(DataFiles(dir_),
            (std::vector<std::string>{"ds-p0000-00000000000000000000-00000000000000000005.jsonl",
                                      "ds-p0000-00000000000000000006-00000000000000000008.jsonl"}));
  EXPECT_EQ(ReadFile(dir_ + "/ds-p0000-00000000000000000000-00000000000000000005.jsonl"),
            RangeLines(0, 0, 5));
  EXPECT_EQ(ReadFile(dir_ + "/ds-p0000-00000000000000000006-00000000000000000008.jsonl"),
            RangeLines(0, 6, 8));
}

// A roll interrupted between link() and unlink() leaves both names for one file.
TEST_F(RollingFileDestinationTest, InterruptedLinkUnlinkIsCompletedByTheRoll) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 2)).ok());
  const std::string open_state = ReadFile(StatePath());
  ASSERT_TRUE(d->Close().ok());
  d.reset();
  const std::string final_path = dir_ + "/ds-p0000-00000000000000000000-00000000000000000002.jsonl";
  const std::string in_progress = dir_ + "/.ds-p0000-00000000000000000000-open.jsonl.inprogress";
  ASSERT_EQ(::link(final_path.c_str(), in_progress.c_str()), 0);
  WriteFile(StatePath(), open_state);

  d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(DataFiles(dir_),
            std::vector<std::string>{"ds-p0000-00000000000000000000-00000000000000000002.jsonl"});
  EXPECT_EQ(ReadFile(final_path), RangeLines(0, 0, 2));
}

TEST_F(RollingFileDestinationTest, ForeignFileUnderTheFinalNameIsNeverOverwritten) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 2)).ok());
  const std::string final_path = dir_ + "/ds-p0000-00000000000000000000-00000000000000000002.jsonl";
  const std::string in_progress = dir_ + "/.ds-p0000-00000000000000000000-open.jsonl.inprogress";
  // Same size, different content: still not "published".
  std::string foreign = RangeLines(0, 0, 2);
  foreign[0] = '[';
  WriteFile(final_path, foreign);

  const absl::Status status = d->Close();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_TRUE(MessageContains(status, final_path));
  EXPECT_EQ(ReadFile(final_path), foreign);
  EXPECT_EQ(ReadFile(in_progress), RangeLines(0, 0, 2));

  // Once the operator moved the foreign file away, the roll completes.
  ASSERT_EQ(::unlink(final_path.c_str()), 0);
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(ReadFile(final_path), RangeLines(0, 0, 2));
  EXPECT_FALSE(Exists(in_progress));
}

TEST_F(RollingFileDestinationTest, CorruptStateFileFailsCreateNamingIt) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 2)).ok());
  d.reset();
  const std::string good = ReadFile(StatePath());
  std::string flipped = good;
  flipped[good.find(" 0 ") + 1] = '7';
  const std::string header = "wharf-rolling-file-state 1\n";
  const std::vector<std::string> corrupt = {
      "",
      "garbage",
      good.substr(0, good.size() / 2),
      flipped,
      good + "p ds 1 1 0 0 0 0 0 0 0 0 -\n",
      StateWithChecksum("wharf-rolling-file-state 9\n"),
      StateWithChecksum(header + "p ds 0 1 2 1 0 1 42 42 2 0 ../../etc/x{last_offset}\n"),
      StateWithChecksum(header + "p ds 0 1 2 1 0 1 42 42 2 0 /abs/x\n"),
      StateWithChecksum(header + "p ds 0 1 2 1 0 1 42 42 2 0 a/{x}\n"),
      StateWithChecksum(header + "p ds 0 1 x 0 0 0 0 0 0 0 -\n"),
      StateWithChecksum(header + "p ds 0 2 2 0 0 0 0 0 0 0 -\n"),
      StateWithChecksum(header + "p ../ds 0 1 2 0 0 0 0 0 0 0 -\n"),
      StateWithChecksum(header + "p ds 0 1 2\n"),
      StateWithChecksum(header + "p ds 0 1 2 0 0 0 0 0 0 0 -\np ds 0 1 3 0 0 0 0 0 0 0 -\n"),
      StateWithChecksum(header + "q ds 0 1 2 0 0 0 0 0 0 0 -\n"),
  };
  for (size_t i = 0; i < corrupt.size(); ++i) {
    WriteFile(StatePath(), corrupt[i]);
    absl::StatusOr<std::unique_ptr<RollingFileDestination>> bad =
        RollingFileDestination::Create(Options());
    ASSERT_FALSE(bad.ok()) << "case " << i;
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << "case " << i;
    EXPECT_TRUE(MessageContains(bad.status(), StatePath())) << "case " << i;
    EXPECT_EQ(ReadFile(StatePath()), corrupt[i]) << "case " << i;  // never reset
  }
  // A state file that is a directory is not "missing" either.
  ASSERT_EQ(::unlink(StatePath().c_str()), 0);
  ASSERT_EQ(::mkdir(StatePath().c_str(), 0755), 0);
  EXPECT_EQ(RollingFileDestination::Create(Options()).status().code(), absl::StatusCode::kDataLoss);
  ASSERT_EQ(::rmdir(StatePath().c_str()), 0);

  // The good state still works.
  WriteFile(StatePath(), good);
  d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 2)).ok());
  EXPECT_TRUE(report_.already_delivered);
}

TEST_F(RollingFileDestinationTest, InProgressFileShorterThanCommittedOrMissingIsDataLoss) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 2)).ok());
  d.reset();
  const std::string in_progress = dir_ + "/.ds-p0000-00000000000000000000-open.jsonl.inprogress";
  ASSERT_EQ(::truncate(in_progress.c_str(), 3), 0);
  absl::StatusOr<std::unique_ptr<RollingFileDestination>> bad =
      RollingFileDestination::Create(Options());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(MessageContains(bad.status(), in_progress));

  ASSERT_EQ(::unlink(in_progress.c_str()), 0);  // and with neither it nor a final file
  bad = RollingFileDestination::Create(Options());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(MessageContains(bad.status(), in_progress));
}

TEST_F(RollingFileDestinationTest, CreateRemovesLeftoverTemporaryStateFileOnly) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 2)).ok());
  d.reset();
  WriteFile(StatePath() + ".tmp", "half a state");
  WriteFile(dir_ + "/.wharf-other.state.tmp", "someone else's");
  WriteFile(dir_ + "/notes.txt", "keep");
  d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  EXPECT_FALSE(Exists(StatePath() + ".tmp"));
  EXPECT_EQ(ReadFile(dir_ + "/.wharf-other.state.tmp"), "someone else's");
  EXPECT_EQ(ReadFile(dir_ + "/notes.txt"), "keep");
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 2)).ok());
  EXPECT_TRUE(report_.already_delivered);
}

TEST_F(RollingFileDestinationTest, ClosePublishesAllOpenFilesAlsoAfterARestart) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("a", 0, 0, 1)).ok());
  ASSERT_TRUE(Deliver(*d, RangeBatch("a", 1, 0, 2)).ok());
  ASSERT_TRUE(Deliver(*d, RangeBatch("b", 0, 5, 5)).ok());
  d.reset();
  d = MustCreate(Options());  // the open files are only in the state now
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("b", 0, 6, 6)).ok());
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(DataFiles(dir_),
            (std::vector<std::string>{"a-p0000-00000000000000000000-00000000000000000001.jsonl",
                                      "a-p0001-00000000000000000000-00000000000000000002.jsonl",
                                      "b-p0000-00000000000000000005-00000000000000000006.jsonl"}));
  EXPECT_EQ(ReadFile(dir_ + "/b-p0000-00000000000000000005-00000000000000000006.jsonl"),
            RangeLines(0, 5, 6));
  ASSERT_TRUE(d->Close().ok());  // nothing open: no-op
  EXPECT_EQ(DataFiles(dir_).size(), 3u);
}

TEST_F(RollingFileDestinationTest, OpenFileKeepsItsNameAndFormatAcrossAConfigChange) {
  std::unique_ptr<RollingFileDestination> d = MustCreate(Options());
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 0, 1)).ok());
  d.reset();
  RollingFileDestinationOptions changed = Options();
  changed.path_template = "new/{partition}-{first_offset}";
  changed.gzip = true;
  d = MustCreate(changed);
  ASSERT_NE(d, nullptr);
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 2, 3)).ok());  // appended to the open plain file
  ASSERT_TRUE(d->Close().ok());
  ASSERT_TRUE(Deliver(*d, RangeBatch("ds", 0, 4, 4)).ok());  // a new file: new configuration
  ASSERT_TRUE(d->Close().ok());
  EXPECT_EQ(DataFiles(dir_),
            (std::vector<std::string>{"ds-p0000-00000000000000000000-00000000000000000003.jsonl",
                                      "new/0000-00000000000000000004.gz"}));
  EXPECT_EQ(ReadFile(dir_ + "/ds-p0000-00000000000000000000-00000000000000000003.jsonl"),
            RangeLines(0, 0, 3));
  EXPECT_EQ(GzRead(dir_ + "/new/0000-00000000000000000004.gz"), RangeLines(0, 4, 4));
}

TEST_F(RollingFileDestinationTest, ConcurrentPartitionsFromFourThreads) {
  RollingFileDestinationOptions options = Options();
  options.max_bytes = 300;
  options.max_age = std::chrono::seconds(3600);
  std::unique_ptr<RollingFileDestination> d = MustCreate(options);
  ASSERT_NE(d, nullptr);
  constexpr uint32_t kPartitions = 4;
  constexpr uint64_t kBatches = 40;
  constexpr uint64_t kRecords = 5;
  std::vector<std::vector<absl::Status>> results(kPartitions);
  std::atomic<bool> done{false};
  std::thread roller([&] {  // RollExpired concurrently, as the pipeline does (nothing expires)
    while (!done.load()) {
      EXPECT_TRUE(d->RollExpired().ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::vector<std::thread> threads;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    threads.emplace_back([&, p] {
      for (uint64_t b = 0; b < kBatches; ++b) {
        DeliveryReport report;
        results[p].push_back(
            d->Deliver(RangeBatch("ds", p, b * kRecords, b * kRecords + kRecords - 1), &report));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  done = true;
  roller.join();
  for (const auto& partition_results : results) {
    for (const absl::Status& s : partition_results) EXPECT_TRUE(s.ok()) << s;
  }
  ASSERT_TRUE(d->Close().ok());

  std::map<uint32_t, std::string> content;
  std::map<uint32_t, int> file_count;
  for (const std::string& name : DataFiles(dir_)) {  // sorted: by partition, then offset
    ASSERT_FALSE(name.starts_with(".")) << name;
    const uint32_t p = static_cast<uint32_t>(std::stoul(name.substr(4, 4)));
    content[p] += ReadFile(dir_ + "/" + name);
    ++file_count[p];
  }
  for (uint32_t p = 0; p < kPartitions; ++p) {
    EXPECT_EQ(content[p], RangeLines(p, 0, kBatches * kRecords - 1)) << "partition " << p;
    EXPECT_GT(file_count[p], 5) << "partition " << p;  // it rolled by size several times
  }
}

// Real kill -9 at arbitrary points: child processes deliver and are killed after random delays;
// each restart redelivers everything from the start (as a pipeline whose cursor did not move
// would). Every record must end up exactly once, in order, in contiguous files.
TEST_F(RollingFileDestinationTest, KillNineAtRandomPointsKeepsExactlyOnce) {
  for (const bool gzip : {false, true}) {
    SCOPED_TRACE(gzip ? "gzip" : "plain");
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    RollingFileDestinationOptions options = Options();
    options.gzip = gzip;
    options.max_bytes = 400;
    std::vector<wharf::v1::StoredBatch> batches;
    uint64_t next = 0;
    std::mt19937 rng(gzip ? 7 : 3);
    for (int i = 0; i < 80; ++i) {
      for (uint32_t p = 0; p < 2; ++p) {
        const uint64_t n = 1 + rng() % 6;
        batches.push_back(RangeBatch("ds", p, next, next + n - 1));
      }
      next += 6;
    }
    auto deliver_all = [&](RollingFileDestination& d) {
      for (const wharf::v1::StoredBatch& b : batches) {
        DeliveryReport report;
        if (!d.Deliver(b, &report).ok()) return false;
      }
      return true;
    };
    // Without fsync a child gets through all batches in a few milliseconds, so the kills land
    // anywhere, rolls included (kill -9 keeps the page cache: exactly-once does not depend on
    // fsync); the rounds with fsync exercise the synced paths in the first batches.
    for (int round = 0; round < 12; ++round) {
      RollingFileDestinationOptions round_options = options;
      round_options.fsync = round % 3 == 2;
      const pid_t pid = ::fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        absl::StatusOr<std::unique_ptr<RollingFileDestination>> d =
            RollingFileDestination::Create(round_options);
        if (!d.ok()) ::_exit(2);
        ::_exit(deliver_all(**d) ? 0 : 3);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200 + rng() % 30000));
      ::kill(pid, SIGKILL);
      int wstatus = 0;
      ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
      ASSERT_TRUE(WIFSIGNALED(wstatus) || (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0))
          << "round " << round << ": child exit " << WEXITSTATUS(wstatus);
    }
    std::unique_ptr<RollingFileDestination> d = MustCreate(options);
    ASSERT_NE(d, nullptr);
    ASSERT_TRUE(deliver_all(*d));
    ASSERT_TRUE(d->Close().ok());

    std::map<uint32_t, std::string> content;
    std::map<uint32_t, uint64_t> expected_first;
    for (const std::string& name : DataFiles(dir_)) {
      ASSERT_FALSE(name.starts_with(".")) << name;
      const uint32_t p = static_cast<uint32_t>(std::stoul(name.substr(4, 4)));
      const uint64_t first = std::stoull(name.substr(9, 20));
      const uint64_t last = std::stoull(name.substr(30, 20));
      EXPECT_LE(first, last) << name;
      std::string data = ReadFile(dir_ + "/" + name);
      if (gzip) {
        const Gunzipped inflated = Gunzip(data);
        ASSERT_TRUE(inflated.ok) << name;
        data = inflated.data;
      }
      // Files of a partition follow each other in offset order without overlap.
      if (expected_first.count(p) != 0) {
        EXPECT_GE(first, expected_first[p]) << name;
      }
      expected_first[p] = last + 1;
      content[p] += data;
    }
    for (uint32_t p = 0; p < 2; ++p) {
      std::string expected;
      for (const wharf::v1::StoredBatch& b : batches) {
        if (b.manifest().partition() != p) continue;
        expected += RangeLines(p, b.manifest().first_offset(), b.manifest().last_offset());
      }
      EXPECT_EQ(content[p], expected) << "partition " << p;
    }
  }
}

}  // namespace
}  // namespace wharf::pipeline
