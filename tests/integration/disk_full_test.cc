// Disk full on a real file system: wharfd's data_dir is on a 256 MiB ext4 image mounted through a
// loop device (not tmpfs, which ignores fsync and has no ENOSPC behaviour of a disk). While
// producers stream, the test fills the file system with `fallocate` below wharfd's min_free_disk:
// ingest must be refused with RESOURCE_EXHAUSTED before RocksDB ever sees ENOSPC, wharfd stays
// up, and once the space is freed ingest resumes by itself; in the end every acknowledged record
// is delivered exactly once.
//
// Needs root, /dev/loop*, mkfs.ext4 (e2fsprogs), losetup and mount (util-linux). When the
// sandbox refuses them the test FAILS with the reason: it is never skipped silently.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/channel.h"
#include "tests/support/wharfd_process.h"
#include "wharf/v1/ingest.grpc.pb.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// Absolute path of a system tool (RunCommand execs without a PATH search).
std::string Tool(const std::string& name) {
  for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
    const std::string p = absl::StrCat(dir, "/", name);
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return name;
}

uint64_t FreeBytes(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

// A small ext4 file system on a loop device, mounted at mount_point(). Unmounted and detached on
// destruction, also when the test fails half-way. Thread safety: none (test thread only).
class LoopFilesystem {
 public:
  LoopFilesystem(const std::string& root, uint64_t bytes) {
    image_ = root + "/fs.img";
    mount_point_ = root + "/mnt";
    fs::create_directories(mount_point_);
    if (!Run({Tool("truncate"), "-s", std::to_string(bytes), image_})) return;
    // -m 0: no blocks reserved for root (wharfd runs as root here; reserved blocks would let it
    // write past the free space the watermark sees).
    if (!Run({Tool("mkfs.ext4"), "-q", "-F", "-m", "0", image_})) return;
    auto [code, out] = RunCommand({Tool("losetup"), "--find", "--show", image_});
    if (code != 0) {
      error_ = absl::StrCat("losetup --find --show failed (", code, "): ", out);
      return;
    }
    device_ = out.substr(0, out.find('\n'));
    if (!Run({Tool("mount"), "-t", "ext4", device_, mount_point_})) return;
    mounted_ = true;
  }

  ~LoopFilesystem() {
    if (mounted_) {
      // A wharfd that is still running (failed test) holds files: the caller kills it first; a
      // lazy unmount is the fallback so the loop device is always released.
      if (!Run({Tool("umount"), mount_point_})) Run({Tool("umount"), "-l", mount_point_});
    }
    if (!device_.empty()) Run({Tool("losetup"), "-d", device_});
  }

  bool ok() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::string& mount_point() const { return mount_point_; }

 private:
  bool Run(const std::vector<std::string>& argv) {
    auto [code, out] = RunCommand(argv);
    if (code == 0) return true;
    std::string cmd;
    for (const auto& a : argv) absl::StrAppend(&cmd, cmd.empty() ? "" : " ", a);
    absl::StrAppend(&error_, "`", cmd, "` failed (exit ", code, "): ", out, "\n");
    return false;
  }

  std::string image_;
  std::string mount_point_;
  std::string device_;
  std::string error_;
  bool mounted_ = false;
};

// Prints wharfd's warning and error lines (at most 12): what the disk-full runs document.
void PrintProblems(const std::string& log, const char* phase) {
  size_t start = 0;
  int printed = 0;
  while (start < log.size() && printed < 12) {
    size_t end = log.find('\n', start);
    if (end == std::string::npos) end = log.size();
    const std::string line = log.substr(start, end - start);
    if (line.find(" warning ") != std::string::npos || line.find(" error ") != std::string::npos ||
        line.find(" critical ") != std::string::npos) {
      std::printf("  [%s] %s\n", phase, line.substr(0, 300).c_str());
      ++printed;
    }
    start = end + 1;
  }
}

// One ProduceOne call; returns its gRPC status.
grpc::Status ProduceOnce(const std::string& target) {
  auto stub = wharf::v1::Ingest::NewStub(client::CreateChannel(target));
  wharf::v1::ProduceRequest req;
  req.set_dataset("orders");
  req.add_records()->set_payload(R"({"probe":true})");
  wharf::v1::ProduceResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  return stub->ProduceOne(&ctx, req, &resp);
}

TEST(DiskFull, IngestIsRefusedBeforeEnospcAndResumesWhenSpaceIsFreed) {
  TempDir tmp;
  ASSERT_EQ(geteuid(), 0u) << "the disk-full test needs root (loop devices and mount)";
  // 256 MiB: RocksDB preallocates each WAL file (1.1 x the 32 MiB write buffer), so 64 MiB would
  // leave too little to test with. The image file is sparse.
  LoopFilesystem lfs(tmp.path(), 256ull << 20);
  ASSERT_TRUE(lfs.ok()) << "cannot set up a loop-mounted ext4 file system (the sandbox refuses "
                           "mount or losetup?); this test cannot run here:\n"
                        << lfs.error();

  WharfdConfig config;
  config.data_dir = lfs.mount_point() + "/data";
  config.out_dir = tmp.path() + "/out";  // deliveries go to the big disk
  config.min_free_disk = "24MiB";
  config.partitions = 2;
  config.linger = "50ms";
  config.max_records = 200;
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());

  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 2;
  lo.batch = 20;
  lo.pause = 50ms;
  lo.flush_timeout = 120s;
  ProducerLoad load(lo);
  load.Start();
  ASSERT_TRUE(WaitFor([&] { return load.acked_count() >= 400; }, 30s)) << "no ingest at all";

  // Fill the file system so that 12 MiB stay free, below the 24 MiB watermark: ingest must stop.
  const std::string filler = lfs.mount_point() + "/filler";
  const uint64_t free_now = FreeBytes(lfs.mount_point());
  ASSERT_GT(free_now, 48ull << 20);
  const uint64_t fill = free_now - (12ull << 20);
  auto [fcode, fout] = RunCommand({Tool("fallocate"), "-l", std::to_string(fill), filler});
  ASSERT_EQ(fcode, 0) << fout;
  std::printf("disk full: filled %llu bytes, %llu bytes free\n",
              static_cast<unsigned long long>(fill),
              static_cast<unsigned long long>(FreeBytes(lfs.mount_point())));

  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = wharfd.control().GetStatus({}, 2s);
        return st.ok() && !st->accepting();
      },
      15s))
      << "wharfd kept accepting with the disk below its watermark";
  auto status = wharfd.control().GetStatus({}, 2s);
  ASSERT_TRUE(status.ok());
  EXPECT_NE(status->not_accepting_reason().find("free disk space"), std::string::npos)
      << status->not_accepting_reason();
  const grpc::Status refused = ProduceOnce(wharfd.target());
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();

  // Stay full for a while under load: wharfd must stay up and acknowledge nothing new.
  const size_t acked_when_full = load.acked_count();
  std::this_thread::sleep_for(3s);
  ASSERT_FALSE(wharfd.CheckExited()) << "wharfd died with the disk full:\n" << wharfd.Log();
  EXPECT_LE(load.acked_count(), acked_when_full + 100)  // requests already in flight
      << "ingest went on below the watermark";
  const uint64_t free_full = FreeBytes(lfs.mount_point());
  std::printf("disk full: after 3 s full: %llu bytes free, acked %zu -> %zu\n",
              static_cast<unsigned long long>(free_full), acked_when_full, load.acked_count());
  EXPECT_GT(free_full, 0u) << "the file system filled up completely";

  // Free the space: ingest resumes by itself (producers retry RESOURCE_EXHAUSTED).
  fs::remove(filler);
  const size_t acked_before_free = load.acked_count();
  ASSERT_TRUE(WaitFor([&] { return load.acked_count() >= acked_before_free + 400; }, 30s))
      << "ingest did not resume after the space was freed:\n"
      << wharfd.Log();
  auto after = wharfd.control().GetStatus({}, 2s);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->accepting()) << after->not_accepting_reason();
  EXPECT_TRUE(ProduceOnce(wharfd.target()).ok());

  load.Stop();
  EXPECT_EQ(load.failed(), 0u);
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 60s))
      << "backlog did not drain";
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);

  // Every acked record exactly once (the two probes are acked outside the load: not counted).
  std::vector<std::string> acked;
  for (const auto& [pos, payload] : load.acked()) acked.push_back(payload);
  std::vector<std::string> delivered;
  for (const auto& f : ReadDestination(config.out_dir, "orders")) {
    for (const auto& line : f.lines) {
      if (line.find("\"probe\"") == std::string::npos) delivered.push_back(line);
    }
  }
  const ExactlyOnceCounts counts = CompareExactlyOnce(acked, delivered);
  std::printf("disk full: %s\n", counts.ToString().c_str());
  EXPECT_TRUE(counts.ok()) << counts.ToString();
  EXPECT_EQ(wharfd.Log().find("No space left"), std::string::npos) << "RocksDB hit ENOSPC:\n"
                                                                   << wharfd.Log();
}

// The file system fills up completely (someone else's file, not wharfd's ingest): RocksDB's
// flush at shutdown and its next open need space it cannot get. wharfd must neither abort nor
// open short: a graceful stop still exits, a start on the full disk fails with the runtime exit
// code (systemd retries it), and once space is back every acked record is delivered once.
TEST(DiskFull, CompletelyFullDiskNeverLosesAckedRecords) {
  TempDir tmp;
  ASSERT_EQ(geteuid(), 0u) << "the disk-full test needs root (loop devices and mount)";
  LoopFilesystem lfs(tmp.path(), 256ull << 20);
  ASSERT_TRUE(lfs.ok()) << "cannot set up a loop-mounted ext4 file system (the sandbox refuses "
                           "mount or losetup?); this test cannot run here:\n"
                        << lfs.error();
  WharfdConfig config;
  config.data_dir = lfs.mount_point() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.min_free_disk = "24MiB";
  config.partitions = 2;
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());
  // Nothing delivered yet: the records stay in the memtables and the WAL.
  ASSERT_TRUE(wharfd.control().PauseDestination("orders", "files").ok());
  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 2;
  lo.batch = 50;
  lo.records_per_producer = 500;
  lo.pause = 0ms;
  // About 2 KB of random hex per record, which LZ4 cannot shrink much: the memtables then hold
  // megabytes that a flush must write (compressible payloads would fit in the last free blocks).
  lo.payload = [](int p, int64_t i) {
    std::mt19937_64 rng(static_cast<uint64_t>(p) * 1000003u + static_cast<uint64_t>(i));
    std::string pad;
    for (int k = 0; k < 128; ++k) absl::StrAppend(&pad, absl::Hex(rng(), absl::kZeroPad16));
    return absl::StrCat(R"({"producer":)", p, R"(,"i":)", i, R"(,"pad":")", pad, R"("})");
  };
  lo.flush_timeout = 60s;
  std::map<std::pair<uint32_t, uint64_t>, std::string> acked;
  {
    ProducerLoad load(lo);
    load.Start();
    load.Stop();
    ASSERT_EQ(load.failed(), 0u);
    acked = load.acked();
  }
  ASSERT_EQ(acked.size(), 1000u);

  // Fill every free block (a file of exactly the free size does not fit: ext4 needs blocks for
  // its extent tree), halving the size of each further file until less than 64 KiB is free.
  std::vector<std::string> fillers;
  for (int i = 0; i < 64 && FreeBytes(lfs.mount_point()) >= (64u << 10); ++i) {
    const uint64_t free_bytes = FreeBytes(lfs.mount_point());
    const uint64_t chunk = i == 0 ? free_bytes - (1u << 20) : free_bytes / 2;
    const std::string filler = absl::StrCat(lfs.mount_point(), "/filler", i);
    if (RunCommand({Tool("fallocate"), "-l", std::to_string(chunk), filler}).first == 0) {
      fillers.push_back(filler);
    }
  }
  ASSERT_LT(FreeBytes(lfs.mount_point()), 64u << 10);
  std::printf("disk completely full: %llu bytes free\n",
              static_cast<unsigned long long>(FreeBytes(lfs.mount_point())));
  auto status = wharfd.control().GetStatus({}, 2s);
  ASSERT_TRUE(status.ok());

  // Graceful stop with a full disk: the flush at shutdown fails; the WAL still has everything.
  auto code = wharfd.Terminate(60s);
  ASSERT_TRUE(code.ok()) << code.status();
  std::printf("disk completely full: SIGTERM exit code %d\n", *code);
  PrintProblems(wharfd.Log(), "full");
  EXPECT_EQ(*code, 0) << wharfd.Log();

  // A start on the full disk: whatever RocksDB needs to write fails; wharfd must exit with a
  // code (not abort, not hang) and must not open short.
  absl::Status started = wharfd.Start(60s);
  if (started.ok()) {
    std::printf("disk completely full: wharfd started on the full disk\n");
    auto c = wharfd.Terminate(60s);
    ASSERT_TRUE(c.ok());
    std::printf("disk completely full: SIGTERM exit code %d\n", *c);
  } else {
    const int status_code = wharfd.exit_status();
    std::printf("disk completely full: start refused, wait status %d (exit code %d)\n", status_code,
                WIFEXITED(status_code) ? WEXITSTATUS(status_code) : -1);
    EXPECT_TRUE(WIFEXITED(status_code)) << "wharfd crashed on the full disk:\n" << wharfd.Log();
    EXPECT_EQ(WEXITSTATUS(status_code), 1) << wharfd.Log();
  }

  // Space back: everything acked is delivered exactly once.
  for (const auto& f : fillers) fs::remove(f);
  ASSERT_TRUE(wharfd.Start(60s).ok());
  ASSERT_TRUE(wharfd.control().ResumeDestination("orders", "files").ok());
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 60s))
      << "backlog did not drain";
  auto stopped = wharfd.Terminate();
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(*stopped, 0);
  std::vector<std::string> want, got;
  for (const auto& [pos, payload] : acked) want.push_back(payload);
  for (const auto& f : ReadDestination(config.out_dir, "orders")) {
    for (const auto& line : f.lines) got.push_back(line);
  }
  PrintProblems(wharfd.Log(), "all");
  const ExactlyOnceCounts counts = CompareExactlyOnce(want, got);
  std::printf("disk completely full: %s\n", counts.ToString().c_str());
  EXPECT_TRUE(counts.ok()) << counts.ToString();
}

}  // namespace
}  // namespace wharf::testing
