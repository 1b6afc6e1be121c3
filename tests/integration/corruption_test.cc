// Corruption tests: a wharfd data_dir holding acknowledged records gets one flipped bit in a WAL
// (*.log), SST (*.sst) or MANIFEST file, then wharfd is restarted. Allowed outcomes:
//   recovered  wharfd starts and every acked record reaches the file destination exactly once;
//   refused    wharfd exits with code 3 at start-up and its log names the damaged file;
//   detected   wharfd starts, but reading the damaged block fails: the partition stops with a
//              DATA_LOSS error naming the file (log), nothing unacked, garbled or duplicated is
//              delivered (a flipped bit in a data block is only read when that block is used).
// Anything else (opened short, other exit code, hang) is a failure. The seed, file and offset of
// every case are printed; WHARF_CORRUPTION_SEED replays a run. WHARF_EXTENDED=1: 100 cases per
// file kind instead of 10.
//
// Also `wharfd --verify`: healthy store, flipped SST byte, damaged WAL, malformed arguments,
// store in use.

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

enum class FileKind { kWal, kSst, kManifest };

const char* KindName(FileKind k) {
  switch (k) {
    case FileKind::kWal:
      return "wal";
    case FileKind::kSst:
      return "sst";
    case FileKind::kManifest:
      return "manifest";
  }
  return "?";
}

bool IsKind(FileKind k, const std::string& name) {
  auto ends = [&](const std::string& suffix) {
    return name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
  };
  switch (k) {
    case FileKind::kWal:
      return ends(".log");
    case FileKind::kSst:
      return ends(".sst");
    case FileKind::kManifest:
      return name.rfind("MANIFEST-", 0) == 0;
  }
  return false;
}

// How the pristine store was left: kill -9 (acked data in the WAL only) or SIGTERM (memtables
// flushed to SSTs).
enum class Stop { kKill9, kSigterm };

// A store with acknowledged records, none of them delivered yet (the destination is paused, and
// the pause is stored), plus what was acked. Copied for every case.
struct Pristine {
  TempDir tmp;
  WharfdConfig config;
  std::map<std::pair<uint32_t, uint64_t>, std::string> acked;
};

WharfdConfig BaseConfig(const std::string& root) {
  WharfdConfig c;
  c.data_dir = root + "/data";
  c.out_dir = root + "/out";
  c.durability = "sync";
  c.partitions = 2;
  c.linger = "20ms";
  c.max_records = 100;
  return c;
}

void MakePristine(Stop stop, Pristine* out) {
  out->config = BaseConfig(out->tmp.path());
  WharfdProcess wharfd(out->config);
  ASSERT_TRUE(wharfd.Start().ok());
  ASSERT_TRUE(wharfd.control().PauseDestination("orders", "files").ok());
  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 2;
  lo.batch = 50;
  lo.records_per_producer = 400;
  lo.pause = 0ms;
  lo.flush_timeout = 60s;
  {
    ProducerLoad load(lo);
    load.Start();
    load.Stop();
    ASSERT_EQ(load.failed(), 0u);
    out->acked = load.acked();
  }
  ASSERT_EQ(out->acked.size(), 800u);
  // Every record validated into batches: the store then holds raw records, batches, cursors.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = wharfd.control().GetStatus({}, 2s);
        if (!st.ok() || st->datasets_size() == 0) return false;
        for (const auto& p : st->datasets(0).partition_status()) {
          if (p.validated_offset() != p.next_offset()) return false;
        }
        return true;
      },
      30s));
  if (stop == Stop::kKill9) {
    wharfd.Kill9();
  } else {
    auto code = wharfd.Terminate();
    ASSERT_TRUE(code.ok());
    ASSERT_EQ(*code, 0);
  }
  ASSERT_TRUE(ReadDestination(out->config.out_dir, "orders").empty())
      << "the paused destination received records";
}

std::vector<std::string> FilesOfKind(const std::string& dir, FileKind kind) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (IsKind(kind, name) && e.is_regular_file() && e.file_size() > 0) files.push_back(name);
  }
  std::sort(files.begin(), files.end());
  return files;
}

void FlipBit(const std::string& path, uint64_t offset, int bit) {
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(io.good()) << path;
  io.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  io.get(c);
  c = static_cast<char>(c ^ (1 << bit));
  io.seekp(static_cast<std::streamoff>(offset));
  io.put(c);
  io.flush();
  ASSERT_TRUE(io.good()) << path;
}

int ExitCode(int wait_status) { return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : -1; }

// Delivered payloads per (partition, offset), with copies counted.
struct Delivered {
  std::map<std::pair<uint32_t, uint64_t>, std::string> at;
  size_t copies = 0;
};
Delivered ReadDelivered(const std::string& out_dir) {
  Delivered d;
  for (const auto& f : ReadDestination(out_dir, "orders")) {
    for (size_t i = 0; i < f.lines.size(); ++i) {
      ++d.copies;
      d.at[{f.partition, f.first_offset + i}] = f.lines[i];
    }
  }
  return d;
}

enum class Outcome { kRecovered, kRefused, kDetected, kFailed };

struct CaseResult {
  Outcome outcome = Outcome::kFailed;
  std::string detail;
};

// Restarts wharfd on a damaged copy and classifies what happens.
CaseResult RunCase(const Pristine& pristine, const std::string& case_root,
                   const std::string& damaged_name) {
  CaseResult r;
  WharfdConfig config = BaseConfig(case_root);
  WharfdProcess wharfd(config);
  absl::Status started = wharfd.Start(30s);
  if (!started.ok()) {
    const int code = ExitCode(wharfd.exit_status());
    const std::string log = wharfd.Log();
    if (wharfd.exit_status() != -1 && code == 3 && log.find(damaged_name) != std::string::npos) {
      r.outcome = Outcome::kRefused;
      const size_t at = log.find("damaged");
      r.detail = log.substr(at == std::string::npos ? 0 : at, 300);
    } else {
      r.detail = absl::StrCat("start failed (exit code ", code, "): ", started.message());
    }
    return r;
  }
  if (absl::Status st = wharfd.control().ResumeDestination("orders", "files"); !st.ok()) {
    r.detail = absl::StrCat("resume failed: ", st.message());
    return r;
  }
  // Until everything is delivered, or wharfd reports the damaged file (then a moment more for
  // deliveries in flight), or it exits.
  bool drained = false;
  WaitFor(
      [&] {
        drained = AllDelivered(wharfd.control());
        return drained || wharfd.Log().find(damaged_name) != std::string::npos ||
               wharfd.CheckExited();
      },
      20s);
  if (!drained) {
    std::this_thread::sleep_for(1s);
    drained = AllDelivered(wharfd.control());
  }
  const bool exited = wharfd.CheckExited();
  const int exit_status = wharfd.exit_status();
  if (!exited) {
    auto code = wharfd.Terminate(30s);
    if (!code.ok() || *code != 0) {
      r.detail = absl::StrCat("SIGTERM did not stop wharfd cleanly");
      return r;
    }
  }
  const Delivered d = ReadDelivered(config.out_dir);
  size_t wrong = 0;
  for (const auto& [pos, payload] : d.at) {
    auto it = pristine.acked.find(pos);
    if (it == pristine.acked.end() || it->second != payload) ++wrong;
  }
  const bool exact = d.copies == d.at.size() && wrong == 0;
  if (!exact) {
    r.detail = absl::StrCat("destination holds ", wrong, " wrong records and ",
                            d.copies - d.at.size(), " duplicates");
    return r;
  }
  if (!exited && drained && d.at.size() == pristine.acked.size()) {
    r.outcome = Outcome::kRecovered;
    return r;
  }
  // Not everything arrived: acceptable only when wharfd said loudly which file is damaged.
  const std::string log = wharfd.Log();
  const bool named =
      log.find(damaged_name) != std::string::npos &&
      (log.find("DATA_LOSS") != std::string::npos || log.find("Corruption") != std::string::npos);
  if (named && (!exited || ExitCode(exit_status) == 3)) {
    r.outcome = Outcome::kDetected;
    const size_t at = log.find(damaged_name);
    r.detail = absl::StrCat(d.at.size(), "/", pristine.acked.size(), " delivered; ",
                            log.substr(at > 200 ? at - 200 : 0, 260));
    return r;
  }
  r.detail = absl::StrCat("OPENED SHORT: ", d.at.size(), " of ", pristine.acked.size(),
                          " acked records delivered, exited=", exited, " status=", exit_status,
                          ", the log does not name ", damaged_name, "; log tail:\n",
                          log.substr(log.size() > 3000 ? log.size() - 3000 : 0));
  return r;
}

uint64_t BaseSeed() {
  if (const char* s = std::getenv("WHARF_CORRUPTION_SEED"); s != nullptr && *s != '\0') {
    return std::strtoull(s, nullptr, 10);
  }
  return std::random_device{}();
}

void RunCampaign(FileKind kind) {
  const int cases = Extended() ? 100 : 10;
  const uint64_t seed = BaseSeed();
  std::printf("corruption %s: seed %llu (WHARF_CORRUPTION_SEED=%llu replays this run)\n",
              KindName(kind), static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  // WAL damage needs acked data in the WAL (kill -9); SST damage needs flushed SSTs (SIGTERM);
  // the MANIFEST is exercised after both.
  std::map<Stop, std::unique_ptr<Pristine>> pristine;
  auto get = [&](Stop stop) -> const Pristine* {
    auto& p = pristine[stop];
    if (!p) {
      p = std::make_unique<Pristine>();
      MakePristine(stop, p.get());
    }
    return p.get();
  };
  int recovered = 0, refused = 0, detected = 0, failed = 0;
  for (int i = 0; i < cases; ++i) {
    const Stop stop = kind == FileKind::kWal   ? Stop::kKill9
                      : kind == FileKind::kSst ? Stop::kSigterm
                                               : (i % 2 == 0 ? Stop::kKill9 : Stop::kSigterm);
    const Pristine* p = get(stop);
    if (::testing::Test::HasFatalFailure()) return;
    TempDir case_dir;
    fs::copy(p->config.data_dir, case_dir.path() + "/data", fs::copy_options::recursive);
    fs::create_directories(case_dir.path() + "/out");
    const std::vector<std::string> files = FilesOfKind(case_dir.path() + "/data", kind);
    ASSERT_FALSE(files.empty()) << "no " << KindName(kind) << " file in the store";
    const std::string name = files[rng() % files.size()];
    const std::string path = case_dir.path() + "/data/" + name;
    const uint64_t size = fs::file_size(path);
    const uint64_t offset = rng() % size;
    const int bit = static_cast<int>(rng() % 8);
    FlipBit(path, offset, bit);
    const CaseResult r = RunCase(*p, case_dir.path(), name);
    const char* label = r.outcome == Outcome::kRecovered  ? "recovered"
                        : r.outcome == Outcome::kRefused  ? "refused"
                        : r.outcome == Outcome::kDetected ? "detected"
                                                          : "FAILED";
    std::printf("  case %d (%s): %s offset %llu of %llu bit %d -> %s %s\n", i,
                stop == Stop::kKill9 ? "after kill -9" : "after SIGTERM", name.c_str(),
                static_cast<unsigned long long>(offset), static_cast<unsigned long long>(size), bit,
                label, r.detail.substr(0, 400).c_str());
    switch (r.outcome) {
      case Outcome::kRecovered:
        ++recovered;
        break;
      case Outcome::kRefused:
        ++refused;
        break;
      case Outcome::kDetected:
        ++detected;
        break;
      case Outcome::kFailed: {
        ++failed;
        // Kept for inspection (the case directory itself is removed).
        const std::string kept = absl::StrCat("/tmp/wharf-corruption-failed-", seed, "-", i);
        std::error_code ec;
        fs::copy(case_dir.path(), kept, fs::copy_options::recursive, ec);
        ADD_FAILURE() << "case " << i << " (seed " << seed << "): " << name << " offset " << offset
                      << " bit " << bit << ": " << r.detail << "\nstore kept in " << kept;
        break;
      }
    }
  }
  std::printf("corruption %s: cases=%d recovered=%d refused=%d detected=%d failed=%d\n",
              KindName(kind), cases, recovered, refused, detected, failed);
  EXPECT_EQ(failed, 0);
}

TEST(Corruption, FlippedBitInWal) { RunCampaign(FileKind::kWal); }
TEST(Corruption, FlippedBitInSst) { RunCampaign(FileKind::kSst); }
TEST(Corruption, FlippedBitInManifest) { RunCampaign(FileKind::kManifest); }

// A damaged record in the middle of the WAL must refuse the start (exit 3, file named) instead
// of opening short: the regression test for the recovery mode (kPointInTimeRecovery would stop
// the replay there and drop every later acknowledged record).
TEST(Corruption, MidWalDamageRefusesToOpenShort) {
  Pristine p;
  MakePristine(Stop::kKill9, &p);
  ASSERT_FALSE(HasFatalFailure());
  const std::vector<std::string> wals = FilesOfKind(p.config.data_dir, FileKind::kWal);
  ASSERT_FALSE(wals.empty());
  const std::string path = p.config.data_dir + "/" + wals.back();
  const uint64_t size = fs::file_size(path);
  ASSERT_GT(size, 4096u);
  FlipBit(path, size / 3, 2);
  WharfdProcess wharfd(p.config);
  absl::Status st = wharfd.Start(30s);
  ASSERT_FALSE(st.ok()) << "wharfd opened a store with a damaged WAL record";
  EXPECT_EQ(ExitCode(wharfd.exit_status()), 3);
  EXPECT_NE(wharfd.Log().find(wals.back()), std::string::npos) << wharfd.Log();
}

// Regression: RocksDB reads the MANIFEST like a WAL and takes a record that runs past the end of
// the file for a torn tail. A flipped bit in the high byte of a record's length field made it
// stop after the first record and open an empty store (every flushed, acknowledged record gone,
// exit 0; found by FlippedBitInManifest). The flushed-sequence guard must refuse that store.
TEST(Corruption, ManifestReadShortIsRefused) {
  Pristine p;
  MakePristine(Stop::kSigterm, &p);
  ASSERT_FALSE(HasFatalFailure());
  const std::vector<std::string> manifests = FilesOfKind(p.config.data_dir, FileKind::kManifest);
  ASSERT_EQ(manifests.size(), 1u);
  const std::string path = p.config.data_dir + "/" + manifests[0];
  const std::string bytes = ReadFile(path);
  // Log format: 32 KiB blocks of records <crc32c: 4> <length: 2, little-endian> <type: 1>.
  // The found case: the record that adds a batches column family (found with the layout of one
  // "batches" column family; now the first "batches/<dataset>/<partition>", after that
  // partition's raw one) reads as a torn tail; RocksDB then recreates the later column families
  // empty and forgets every flushed SST.
  ASSERT_GT(bytes.size(), 7u);
  ASSERT_LT(bytes.size(), 32768u - 7);
  size_t target = std::string::npos;
  for (size_t off = 0; off + 7 <= bytes.size();) {
    const size_t length = static_cast<unsigned char>(bytes[off + 4]) |
                          (static_cast<size_t>(static_cast<unsigned char>(bytes[off + 5])) << 8);
    if (bytes.substr(off + 7, length).find("batches") != std::string::npos) {
      target = off;
      break;
    }
    off += 7 + length;
  }
  ASSERT_NE(target, std::string::npos) << "no MANIFEST record adds the batches column family";
  FlipBit(path, target + 5, 3);  // length += 2048: now past the end of the file

  const std::string config = p.config.data_dir + "-verify.yaml";
  WriteFile(config, RenderConfig(p.config));
  auto [vcode, vout] = RunCommand({WHARFD_PATH, "--verify", "--config", config});
  EXPECT_EQ(vcode, 3) << vout;
  EXPECT_NE(vout.find(manifests[0]), std::string::npos) << vout;

  WharfdProcess wharfd(p.config);
  absl::Status st = wharfd.Start(30s);
  ASSERT_FALSE(st.ok()) << "wharfd opened a store whose MANIFEST was read short";
  EXPECT_EQ(ExitCode(wharfd.exit_status()), 3);
  EXPECT_NE(wharfd.Log().find(manifests[0]), std::string::npos) << wharfd.Log();
  // Caught by the column-family guard (the record read short adds column families) or, where
  // those survive, by the flushed-sequence guard: both say what the MANIFEST lost.
  EXPECT_NE(wharfd.Log().find("the MANIFEST lost track of"), std::string::npos) << wharfd.Log();
  // And it stays refused: the next start does not accept the shortened store either.
  EXPECT_FALSE(wharfd.Start(30s).ok());
  EXPECT_EQ(ExitCode(wharfd.exit_status()), 3);
}

// wharfd --verify ---------------------------------------------------------------------------------

std::pair<int, std::string> Verify(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {WHARFD_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

std::string WriteConfig(const WharfdConfig& c) {
  const std::string path = c.data_dir + "-verify.yaml";
  WriteFile(path, RenderConfig(c));
  return path;
}

TEST(WharfdVerify, HealthyStoreExitsZeroAndChangesNothing) {
  Pristine p;
  MakePristine(Stop::kSigterm, &p);
  ASSERT_FALSE(HasFatalFailure());
  std::map<std::string, std::string> before;
  for (const auto& e : fs::directory_iterator(p.config.data_dir)) {
    before[e.path().filename().string()] = ReadFile(e.path().string());
  }
  const std::string config = WriteConfig(p.config);
  auto [code, out] = Verify({"--verify", "--config", config});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("healthy"), std::string::npos) << out;
  EXPECT_NE(out.find("partition orders/0"), std::string::npos) << out;
  std::map<std::string, std::string> after;
  for (const auto& e : fs::directory_iterator(p.config.data_dir)) {
    after[e.path().filename().string()] = ReadFile(e.path().string());
  }
  EXPECT_TRUE(before == after) << "--verify changed the store";
  // The store still opens and delivers everything after a verification.
  WharfdProcess wharfd(p.config);
  ASSERT_TRUE(wharfd.Start().ok());
  ASSERT_TRUE(wharfd.control().ResumeDestination("orders", "files").ok());
  EXPECT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 30s));
  EXPECT_EQ(ReadDelivered(p.config.out_dir).at.size(), p.acked.size());
}

TEST(WharfdVerify, UnflushedWalIsReplayedAndChecked) {
  Pristine p;
  MakePristine(Stop::kKill9, &p);
  ASSERT_FALSE(HasFatalFailure());
  const std::string config = WriteConfig(p.config);
  auto [code, out] = Verify({"--verify", "--config", config});
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("raw records 400 "), std::string::npos) << out;
  const std::vector<std::string> wals = FilesOfKind(p.config.data_dir, FileKind::kWal);
  ASSERT_FALSE(wals.empty());
  const std::string path = p.config.data_dir + "/" + wals.back();
  FlipBit(path, fs::file_size(path) / 2, 5);
  auto [code2, out2] = Verify({"--verify", "--config", config});
  EXPECT_EQ(code2, 3) << out2;
  EXPECT_NE(out2.find(wals.back()), std::string::npos) << out2;
}

TEST(WharfdVerify, FlippedSstByteExitsThreeNamingTheFile) {
  Pristine p;
  MakePristine(Stop::kSigterm, &p);
  ASSERT_FALSE(HasFatalFailure());
  // The largest SST holds raw records; byte 20 is inside its first data block, which only a full
  // read sees (wharfd itself would open this store and fail when delivering).
  std::string largest;
  uint64_t largest_size = 0;
  for (const std::string& f : FilesOfKind(p.config.data_dir, FileKind::kSst)) {
    const uint64_t size = fs::file_size(p.config.data_dir + "/" + f);
    if (size > largest_size) {
      largest = f;
      largest_size = size;
    }
  }
  ASSERT_FALSE(largest.empty());
  FlipBit(p.config.data_dir + "/" + largest, 20, 3);
  const std::string config = WriteConfig(p.config);
  auto [code, out] = Verify({"--verify", "--config", config});
  EXPECT_EQ(code, 3) << out;
  EXPECT_NE(out.find("DAMAGED"), std::string::npos) << out;
  EXPECT_NE(out.find(largest), std::string::npos) << out;
}

TEST(WharfdVerify, RefusesAStoreInUse) {
  TempDir tmp;
  WharfdConfig c = BaseConfig(tmp.path());
  WharfdProcess wharfd(c);
  ASSERT_TRUE(wharfd.Start().ok());
  const std::string config = WriteConfig(c);
  auto [code, out] = Verify({"--verify", "--config", config});
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("store in use"), std::string::npos) << out;
  EXPECT_NE(out.find(absl::StrCat("process ", wharfd.pid())), std::string::npos) << out;
  // The running wharfd is unaffected.
  EXPECT_TRUE(wharfd.control().GetStatus({}, 5s).ok());
  auto stopped = wharfd.Terminate();
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(*stopped, 0);
  auto [code2, out2] = Verify({"--verify", "--config", config});
  EXPECT_EQ(code2, 0) << out2;
}

TEST(WharfdVerify, MalformedArgumentsAndMissingStore) {
  TempDir tmp;
  WharfdConfig c = BaseConfig(tmp.path());
  const std::string config = WriteConfig(c);
  // No config: a usage error (2), as for every wharfd invocation.
  EXPECT_EQ(Verify({"--verify"}).first, 2);
  EXPECT_EQ(Verify({"--verify", "--config"}).first, 2);
  EXPECT_EQ(Verify({"--verify=maybe", "--config", config}).first, 2);
  EXPECT_EQ(Verify({"--verify", "--config", config, "extra"}).first, 2);
  EXPECT_EQ(Verify({"--verify", "--config", tmp.path() + "/missing.yaml"}).first, 2);
  WriteFile(tmp.path() + "/bad.yaml", "data_dir: [unterminated\n");
  EXPECT_EQ(Verify({"--verify", "--config", tmp.path() + "/bad.yaml"}).first, 2);
  // A valid config whose data_dir holds no store: cannot check (1), and nothing is created.
  auto [code, out] = Verify({"--verify", "--config", config});
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("no staging store"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(c.data_dir));
  fs::create_directories(c.data_dir);
  auto [code2, out2] = Verify({"--verify", "--config", config});
  EXPECT_EQ(code2, 1) << out2;
  EXPECT_NE(out2.find("no staging store"), std::string::npos) << out2;
  EXPECT_TRUE(fs::is_empty(c.data_dir)) << "--verify created files in an empty directory";
}

}  // namespace
}  // namespace wharf::testing
