// Reliability campaign, pauses and clocks: wharfd and a destination frozen by SIGSTOP, and the
// wall clock stepped backwards and forwards under wharfd (libfaketime), while producers stream.
// Every test passes only when the shared checker (tests/support/checker.h) finds lost =
// duplicated = unexpected = 0; the tests also bound how long everything takes to arrive (no
// stuck partition) and how many delivery attempts a failure costs (no retry storm).
//
// Figures and the fixes these tests led to: docs/reliability/pauses_and_clocks.md.
// WHARF_EXTENDED=1 runs more and longer pauses.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/channel.h"
#include "client/producer.h"
#include "tests/support/checker.h"
#include "tests/support/postgres_server.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kFaketimeLib[] = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// The parent pid of `pid` from /proc/<pid>/stat (-1 when it is gone).
pid_t ParentOf(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the last ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(stat.substr(close + 1));
  std::string state;
  long ppid = -1;
  rest >> state >> ppid;
  return static_cast<pid_t>(ppid);
}

// `root` and every process below it (PostgreSQL's postmaster and its backends).
std::vector<pid_t> ProcessTree(pid_t root) {
  std::map<pid_t, pid_t> parent;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    parent[pid] = ParentOf(pid);
  }
  std::vector<pid_t> tree = {root};
  for (size_t i = 0; i < tree.size(); ++i) {
    for (const auto& [pid, ppid] : parent) {
      if (ppid == tree[i]) tree.push_back(pid);
    }
  }
  return tree;
}

// Processes stopped with SIGSTOP; they get SIGCONT when this goes out of scope (also when an
// assertion ends the test early: a stopped PostgreSQL backend would never end otherwise).
class Frozen {
 public:
  Frozen() = default;
  ~Frozen() { Thaw(); }
  Frozen(const Frozen&) = delete;
  Frozen& operator=(const Frozen&) = delete;
  // SIGSTOPs `pids` in order.
  void Freeze(const std::vector<pid_t>& pids) {
    for (pid_t pid : pids) {
      if (::kill(pid, SIGSTOP) == 0) pids_.push_back(pid);
    }
  }
  // SIGSTOPs `root` and every process it forked, parents before children, listing the tree
  // again until a pass finds nothing new: a child forked between listing the tree and stopping
  // its parent (a PostgreSQL backend for a new connection) would otherwise keep serving while
  // the test believes the whole server is stopped. Stopped processes fork nothing, so the
  // passes end.
  void FreezeTree(pid_t root) {
    for (int pass = 0; pass < 100; ++pass) {
      bool added = false;
      for (pid_t pid : ProcessTree(root)) {
        if (std::find(pids_.begin(), pids_.end(), pid) != pids_.end()) continue;
        if (::kill(pid, SIGSTOP) == 0) {
          pids_.push_back(pid);
          added = true;
        }
      }
      if (!added) return;
      // A stop takes effect when the process next returns from the kernel; give a fork in
      // progress time to finish, so that the next pass sees the child.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  void Thaw() {
    for (pid_t pid : pids_) ::kill(pid, SIGCONT);
    pids_.clear();
  }
  size_t count() const { return pids_.size(); }

 private:
  std::vector<pid_t> pids_;
};

// User + system CPU seconds of `pid` so far.
double CpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 2));
  std::vector<std::string> fields;
  std::string f;
  while (rest >> f) fields.push_back(f);
  // Fields after the comm, from "state" (field 3 of proc(5)): utime is field 14, stime 15.
  if (fields.size() < 13) return 0;
  double utime = 0, stime = 0;
  if (!absl::SimpleAtod(fields[11], &utime) || !absl::SimpleAtod(fields[12], &stime)) return 0;
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The records of every published file of a rolling file destination under `dir` (in-progress
// files are dot-prefixed and not counted: their records are not delivered yet).
std::vector<FoundRecord> RolledRecords(const std::string& dir) {
  std::vector<FoundRecord> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!it->is_regular_file() || name.empty() || name[0] == '.' || name.size() < 6 ||
        name.substr(name.size() - 6) != ".jsonl") {
      continue;
    }
    std::istringstream in(ReadFile(it->path().string()));
    std::string line;
    while (std::getline(in, line)) out.push_back(FoundRecord{LoadPayloadId(line), std::nullopt});
  }
  return out;
}

// Ids of the records acked so far.
std::set<uint64_t> AckedIds(const History& history) {
  std::set<uint64_t> ids;
  for (const auto& [id, outcome] : history.Outcomes()) {
    if (outcome == RequestOutcome::kAcked) ids.insert(id);
  }
  return ids;
}

// True when every id of `ids` is in `found`.
bool AllFound(const std::set<uint64_t>& ids, const std::vector<FoundRecord>& found) {
  std::set<uint64_t> have;
  for (const auto& f : found) have.insert(f.id);
  return std::includes(have.begin(), have.end(), ids.begin(), ids.end());
}

double Metric(const WharfdProcess& wharfd, const std::string& name,
              const std::vector<std::string>& labels = {}) {
  auto text = HttpGet(wharfd.config().metrics_port, "/metrics");
  return text.ok() ? MetricSum(*text, name, labels) : -1;
}

// ---------------------------------------------------------------------------------------------
// SIGSTOP of wharfd.

// Producer threads that behave like clients with a request deadline: each request is waited
// for at most `deadline` (Flush); past it the client gives up, closes its producer (the
// unanswered requests end CANCELLED: outcome unknown) and goes on with a new producer and the
// next records, without resending. Every outcome goes to one History for the checker.
//
// Thread safety: Start() and Stop() from the test thread; the accessors may be called any time.
class DeadlineClients {
 public:
  DeadlineClients(std::string target, int clients, std::chrono::milliseconds deadline)
      : target_(std::move(target)), clients_(clients), deadline_(deadline) {}
  ~DeadlineClients() { Stop(); }
  void Start() {
    for (int c = 0; c < clients_; ++c) threads_.emplace_back([this, c] { Run(c); });
  }
  void Stop() {
    stop_.store(true);
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  const History& history() const { return history_; }
  size_t acked() const { return acked_.load(); }
  size_t gave_up() const { return gave_up_.load(); }

 private:
  void Run(int c) {
    int64_t next = 0;
    while (!stop_.load()) {
      client::ProducerOptions opts;
      opts.dataset = "orders";
      opts.producer_id = absl::StrCat("deadline-", client::RandomProducerId(), "-", c);
      opts.initial_backoff = 20ms;
      opts.max_backoff = 500ms;
      auto producer = client::Producer::Create(client::CreateChannel(target_), opts);
      if (!producer.ok()) {
        ADD_FAILURE() << "producer: " << producer.status();
        return;
      }
      while (!stop_.load()) {
        std::vector<wharf::v1::Record> records;
        std::vector<uint64_t> ids;
        for (int k = 0; k < 20; ++k, ++next) {
          wharf::v1::Record r;
          r.set_payload(LoadPayload(c, next));
          ids.push_back(LoadPayloadId(r.payload()));
          records.push_back(std::move(r));
        }
        const absl::Status sent =
            (*producer)->Send(std::move(records), [this, ids](const client::SendResult& r) {
              history_.Log(ids, r);
              if (r.status.ok()) acked_ += ids.size();
            });
        if (!sent.ok()) {
          history_.LogRefused(ids);
          break;
        }
        if (!(*producer)->Flush(deadline_).ok()) {
          ++gave_up_;
          break;
        }
        std::this_thread::sleep_for(20ms);
      }
      (*producer)->Close();
    }
  }

  const std::string target_;
  const int clients_;
  const std::chrono::milliseconds deadline_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> acked_{0};
  std::atomic<size_t> gave_up_{0};
  std::vector<std::thread> threads_;
  History history_;
};

TEST(PausesClocks, SigstopWharfdWhileProducing) {
  const int pauses = Extended() ? 10 : 3;
  const auto pause = Extended() ? 5s : 3s;
  TempDir tmp;
  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());

  // A stopped server breaks no stream (its kernel keeps the connections), so a producer without
  // a deadline just waits; these clients give up after 1 s, as a client with a deadline would.
  DeadlineClients clients(wharfd.target(), 4, 1s);
  clients.Start();
  std::this_thread::sleep_for(1s);
  for (int i = 0; i < pauses; ++i) {
    SCOPED_TRACE(absl::StrCat("pause ", i));
    const size_t acked_before = clients.acked();
    {
      Frozen frozen;
      frozen.Freeze({wharfd.pid()});
      ASSERT_EQ(frozen.count(), 1u);
      std::this_thread::sleep_for(pause);
    }
    // Everything continues after SIGCONT: status answers and new records are acked.
    const auto resumed = std::chrono::steady_clock::now();
    EXPECT_TRUE(WaitFor([&] { return clients.acked() > acked_before; }, 15s))
        << "no record acked after SIGCONT";
    const double acks_again_s = Seconds(resumed);
    EXPECT_TRUE(wharfd.control().GetStatus({}, 5s).ok());
    std::printf("pause %d: %.1f s stopped, acks again %.2f s after SIGCONT\n", i,
                std::chrono::duration<double>(pause).count(), acks_again_s);
    std::this_thread::sleep_for(1s);
  }
  clients.Stop();
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 60s))
      << "backlog did not drain";
  auto quarantined = QuarantinedRecords(wharfd.control(), "orders");
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  const CheckerCounts c =
      Check(clients.history(), FileDestinationRecords(config.out_dir, "orders"), *quarantined);
  ExpectCheckerOk(c, absl::StrCat("sigstop wharfd: ", pauses, " pauses of ",
                                  std::chrono::duration<double>(pause).count(), " s"));
  std::printf("clients gave up on a request %zu times\n", clients.gave_up());
  EXPECT_EQ(c.failed, 0u);
  EXPECT_GT(c.acked, 0u);
  // Every pause outlasted the clients' deadline: the unknown outcomes are what the checker
  // resolves (recovered when stored, else never acked and never delivered).
  EXPECT_GE(clients.gave_up(), static_cast<size_t>(pauses));
  EXPECT_GT(c.unknown, 0u);
  EXPECT_LE(c.recovered, c.unknown);
  auto d = FindDestinationStatus(wharfd.control(), "orders", "files");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->delivery_failures(), 0u);
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

// ---------------------------------------------------------------------------------------------
// SIGSTOP of the PostgreSQL destination.

// A postgres destination item like PostgresDestinationYaml() with connect_timeout 1 s and the
// given statement_timeout (the destination gives a statement up 2 s after it, for a server that
// cannot enforce it).
std::string PostgresYaml(const PostgresServer& pg, const std::string& statement_timeout) {
  return absl::StrCat("      - name: warehouse\n", "        type: postgres\n",
                      "        conninfo: \"", pg.ConnInfo(), "\"\n", "        table: events\n",
                      "        create_table: true\n", "        connect_timeout: 1s\n",
                      "        statement_timeout: ", statement_timeout, "\n", "        columns:\n",
                      "          - {name: id, source: /id, type: bigint}\n",
                      "          - {name: src_partition, source: $partition, type: integer}\n",
                      "          - {name: src_offset, source: $offset, type: bigint}\n",
                      "          - {name: doc, source: \"\", type: jsonb}\n",
                      "        retry: {initial_backoff: 50ms, max_backoff: 1s, down_after: 5, ",
                      "probe_interval: 1s}\n");
}

// A wharfd whose only destination is PostgreSQL (`timeout`: connect and statement timeouts).
WharfdConfig PgOnlyConfig(const TempDir& tmp, const PostgresServer& pg,
                          const std::string& timeout) {
  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.linger = "20ms";
  config.max_records = 500;
  config.file_destination = false;
  config.extra_destinations = PostgresYaml(pg, timeout);
  return config;
}

// Two producers streaming small requests at a moderate pace into `wharfd`.
ProducerLoadOptions PgLoad(const WharfdProcess& wharfd) {
  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 2;
  lo.batch = 50;
  lo.pause = 30ms;
  return lo;
}

TEST(PausesClocks, SigstopPostgresDestination) {
  const auto pause = Extended() ? 20s : 6s;
  TempDir tmp;
  PostgresServer pg;
  ASSERT_TRUE(pg.Start().ok());
  // Short client timeouts, so that the stopped server is given up quickly.
  WharfdConfig config = PgOnlyConfig(tmp, pg, "1s");
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());

  ProducerLoadOptions lo = PgLoad(wharfd);
  // Bounds the final flush should an assertion leave wharfd dead (the producers retry until
  // acked, across the wharfd restart below).
  lo.flush_timeout = 30s;
  ProducerLoad load(lo);
  load.Start();
  ASSERT_TRUE(WaitFor([&] { return DeliveredRecords(wharfd.control(), "orders") > 0; }, 20s));

  // 1. The server (postmaster and every backend) stopped for longer than all client timeouts.
  {
    auto before = FindDestinationStatus(wharfd.control(), "orders", "warehouse");
    ASSERT_TRUE(before.has_value());
    Frozen frozen;
    frozen.FreezeTree(pg.pid());
    ASSERT_GE(frozen.count(), 2u) << "postmaster and backends";
    const auto t0 = std::chrono::steady_clock::now();
    // The delivery must notice the hang by itself (a stopped server answers nothing, and its
    // kernel still acknowledges TCP, so keepalives see nothing either).
    const bool detected = WaitFor(
        [&] {
          auto d = FindDestinationStatus(wharfd.control(), "orders", "warehouse");
          return d.has_value() && d->delivery_failures() > before->delivery_failures();
        },
        pause);
    const double detect_s = Seconds(t0);
    std::this_thread::sleep_until(t0 + pause);
    auto during = FindDestinationStatus(wharfd.control(), "orders", "warehouse");
    ASSERT_TRUE(during.has_value());
    const size_t frozen_processes = frozen.count();
    frozen.Thaw();
    const uint64_t attempts = during->delivery_failures() - before->delivery_failures();
    const double pause_s = std::chrono::duration<double>(pause).count();
    std::printf(
        "postgres stopped %.0f s (%zu processes): hang detected after %.1f s, %llu failed "
        "attempts, state %s, last error: %s\n",
        pause_s, frozen_processes, detect_s, static_cast<unsigned long long>(attempts),
        wharf::v1::DestinationState_Name(during->state()).c_str(), during->last_error().c_str());
    EXPECT_TRUE(detected) << "the delivery never gave up on the stopped server";
    // The retry policy's pace: every attempt waits at least connect_timeout (1 s) or the
    // statement bound (3 s) before failing, and backoff/probes add to that, so at most about one
    // round of attempts per second; a round tries each partition with a backlog, up to
    // kMaxParallelPartitions (4) at once, and each failed partition counts. A storm would show
    // hundreds.
    const uint64_t per_round = std::min<uint64_t>(config.partitions, 4);
    EXPECT_LE(attempts, (static_cast<uint64_t>(pause_s) + 2) * per_round);
    EXPECT_NE(during->state(), wharf::v1::HEALTHY);
  }
  const auto thawed = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor(
      [&] {
        auto d = FindDestinationStatus(wharfd.control(), "orders", "warehouse");
        return d.has_value() && d->state() == wharf::v1::HEALTHY && d->consecutive_failures() == 0;
      },
      30s))
      << "delivery did not recover after SIGCONT";
  std::printf("postgres resumed: delivery healthy again after %.1f s\n", Seconds(thawed));

  // 2. SIGTERM of wharfd while the server is stopped (a delivery hangs in it): bounded stop.
  {
    Frozen frozen;
    frozen.FreezeTree(pg.pid());
    std::this_thread::sleep_for(1s);  // deliveries are now waiting on the stopped server
    const auto t0 = std::chrono::steady_clock::now();
    auto code = wharfd.Terminate(30s);
    const double stop_s = Seconds(t0);
    std::printf("SIGTERM with postgres stopped: wharfd exited after %.1f s\n", stop_s);
    ASSERT_TRUE(code.ok()) << code.status();
    // Graceful (0), not the shutdown_timeout (10 s) fallback: the statement bound ended the
    // hung delivery.
    EXPECT_EQ(*code, 0);
    EXPECT_LT(stop_s, 10.0);
  }
  ASSERT_TRUE(wharfd.Start().ok());
  std::this_thread::sleep_for(2s);
  load.Stop();
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 60s))
      << "backlog did not drain";
  auto rows = PostgresRecords(pg, "events");
  ASSERT_TRUE(rows.ok()) << rows.status();
  auto quarantined = QuarantinedRecords(wharfd.control(), "orders");
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  const CheckerCounts c = Check(load.history(), *rows, *quarantined);
  ExpectCheckerOk(c, absl::StrCat("sigstop postgres ", std::chrono::duration<double>(pause).count(),
                                  " s, sigterm wharfd while postgres stopped"));
  EXPECT_EQ(c.unknown, 0u) << "the producers retry until acked";
  EXPECT_EQ(c.quarantined, 0u);
  EXPECT_EQ(c.delivered, c.acked);
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  pg.Stop();
}

// SIGTERM while a delivery waits on a stopped server longer than shutdown_timeout (10 s in the
// test config; statement_timeout 30 s): wharfd exits at the bound (exit code 1, as safe as kill
// -9) instead of waiting for the server, and after a restart everything is delivered once.
TEST(PausesClocks, StopIsBoundedWhileDestinationHangs) {
  TempDir tmp;
  PostgresServer pg;
  ASSERT_TRUE(pg.Start().ok());
  WharfdConfig config = PgOnlyConfig(tmp, pg, "30s");
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());
  ProducerLoadOptions lo = PgLoad(wharfd);
  lo.flush_timeout = 30s;
  ProducerLoad load(lo);
  load.Start();
  ASSERT_TRUE(WaitFor([&] { return DeliveredRecords(wharfd.control(), "orders") > 0; }, 20s));
  {
    Frozen frozen;
    frozen.FreezeTree(pg.pid());
    std::this_thread::sleep_for(1s);  // a delivery now waits on the stopped server
    const auto t0 = std::chrono::steady_clock::now();
    auto code = wharfd.Terminate(30s);
    const double stop_s = Seconds(t0);
    std::printf("SIGTERM with postgres stopped, statement_timeout 30s: exit code %d after %.1f s\n",
                code.ok() ? *code : -999, stop_s);
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 1) << "expected the shutdown_timeout exit";
    EXPECT_GE(stop_s, 9.0);
    EXPECT_LT(stop_s, 15.0);
  }
  ASSERT_TRUE(wharfd.Start().ok());
  std::this_thread::sleep_for(1s);
  load.Stop();
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 60s))
      << "backlog did not drain";
  auto rows = PostgresRecords(pg, "events");
  ASSERT_TRUE(rows.ok()) << rows.status();
  auto quarantined = QuarantinedRecords(wharfd.control(), "orders");
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  const CheckerCounts c = Check(load.history(), *rows, *quarantined);
  ExpectCheckerOk(c, "sigterm wharfd after shutdown_timeout while postgres stopped");
  EXPECT_EQ(c.delivered, c.acked);
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  pg.Stop();
}

// ---------------------------------------------------------------------------------------------
// Wall-clock steps under wharfd (libfaketime).

// The environment that runs wharfd under libfaketime with the offset read from `offset_file`,
// re-read at most every second (FAKETIME_CACHE_DURATION; FAKETIME_NO_CACHE would read the file
// at every clock read, and wharfd reads clocks all the time), so writing the file steps wharfd's
// clock within a second. Only CLOCK_REALTIME moves, as in an NTP or operator step
// (FAKETIME_DONT_FAKE_MONOTONIC). Faking CLOCK_MONOTONIC too is not a faithful model of anything
// here: libfaketime 0.9.10 does not intercept pthread_cond_clockwait, which libstdc++'s
// condition variables use, so every timed wait after a forward jump of a day waits a real day
// (see docs/reliability/pauses_and_clocks.md).
std::vector<std::string> FaketimeEnv(const std::string& offset_file) {
  std::vector<std::string> env = {absl::StrCat("LD_PRELOAD=", kFaketimeLib),
                                  "FAKETIME_TIMESTAMP_FILE=" + offset_file,
                                  "FAKETIME_CACHE_DURATION=1", "FAKETIME_DONT_FAKE_MONOTONIC=1"};
  // An ASan wharfd (the ASan stage of tests/run.sh) refuses to start when a library is preloaded
  // ahead of the ASan runtime. libfaketime wraps only clock functions, which ASan does not
  // intercept, so the link-order check may be turned off; the test's other ASan options stay.
  const char* asan = std::getenv("ASAN_OPTIONS");
  env.push_back(absl::StrCat("ASAN_OPTIONS=", asan != nullptr ? absl::StrCat(asan, ":") : "",
                             "verify_asan_link_order=0"));
  return env;
}

// Invalid JSON (the closing brace dropped) for every 97th record: validation sends it to
// quarantine, which then holds entries for quarantine retention to judge.
bool IsInvalidRecord(int64_t i) { return i % 97 == 13; }
std::string MaybeInvalidPayload(int producer, int64_t i) {
  std::string p = LoadPayload(producer, i, 200);
  if (IsInvalidRecord(i)) p.pop_back();
  return p;
}

// Ids of the acked records that are valid (those a destination must receive).
std::set<uint64_t> AckedValidIds(const History& history) {
  std::set<uint64_t> ids;
  for (uint64_t id : AckedIds(history)) {
    if (!IsInvalidRecord(static_cast<int64_t>(id % 1000000000ull) - 1)) ids.insert(id);
  }
  return ids;
}

// A wharfd under libfaketime (offset file `<tmp>/faketime`, "+0" at first) with the file
// destination `files` and a rolling file destination `rolled` (max_age 2 s) under
// `<tmp>/rolled`, a linger of 2 s (partial batches are always pending when the clock steps) and
// raw retention of 1 s checked every second. `quarantine_retention`: the dataset's quarantine
// retention (empty: none).
WharfdConfig FaketimeConfig(const TempDir& tmp, const std::string& quarantine_retention) {
  WriteFile(tmp.path() + "/faketime", "+0\n");
  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.linger = "2s";
  config.max_records = 1000;
  config.retention_raw = "1s";
  config.retention_interval = "1s";
  if (!quarantine_retention.empty()) {
    config.extra_dataset =
        absl::StrCat("    quarantine: {retention: ", quarantine_retention, "}\n");
  }
  config.extra_destinations = absl::StrCat("      - name: rolled\n", "        type: file\n",
                                           "        directory: ", tmp.path(), "/rolled\n",
                                           "        roll: {max_bytes: 0, max_age: 2s}\n");
  config.env = FaketimeEnv(tmp.path() + "/faketime");
  // libfaketime hangs in a jemalloc-linked wharfd: this one has glibc's malloc (tests/CMakeLists).
  config.binary = WHARFD_GLIBC_MALLOC_PATH;
  return config;
}

// A slow stream (about 800 records/s, well below a full batch per linger) in which every 97th
// record is invalid JSON.
ProducerLoadOptions SlowLoad(const WharfdProcess& wharfd) {
  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 2;
  lo.batch = 20;
  lo.pause = 50ms;
  lo.payload = MaybeInvalidPayload;
  return lo;
}

// After the load stopped: everything is delivered to both destinations (published, for the
// rolling one) within 20 s, no delivery failed, each committed batch was delivered once per
// destination, an idle wharfd idles, and the checker is satisfied for both destinations.
void ExpectDrainedAndChecked(WharfdProcess& wharfd, const TempDir& tmp, const ProducerLoad& load,
                             const std::string& what) {
  const std::string rolled_dir = tmp.path() + "/rolled";
  const std::set<uint64_t> acked = AckedValidIds(load.history());
  const auto stopped = std::chrono::steady_clock::now();
  const bool drained = WaitFor(
      [&] { return AllDelivered(wharfd.control()) && AllFound(acked, RolledRecords(rolled_dir)); },
      20s);
  std::printf("%s: everything delivered and published %.1f s after the load stopped\n",
              what.c_str(), Seconds(stopped));
  EXPECT_TRUE(drained) << "a partition or a rolling file got stuck";

  // No retry storm, and no spinning: no failed delivery at all, each committed batch delivered
  // once to each destination, and an idle wharfd idles.
  auto st = wharfd.control().GetStatus({}, 5s);
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ(st->datasets_size(), 1);
  const auto& ds = st->datasets(0);
  for (const auto& d : ds.destinations()) {
    std::printf("%s: destination %s: batches delivered %llu of %llu committed, failures %llu\n",
                what.c_str(), d.name().c_str(),
                static_cast<unsigned long long>(d.batches_delivered()),
                static_cast<unsigned long long>(ds.batches_committed()),
                static_cast<unsigned long long>(d.delivery_failures()));
    EXPECT_EQ(d.delivery_failures(), 0u) << d.name() << ": " << d.last_error();
    EXPECT_LE(d.batches_delivered(), ds.batches_committed()) << d.name();
  }
  const double cpu0 = CpuSeconds(wharfd.pid());
  std::this_thread::sleep_for(3s);
  const double idle_cpu = CpuSeconds(wharfd.pid()) - cpu0;
  std::printf("%s: idle wharfd: %.2f CPU s in 3 s\n", what.c_str(), idle_cpu);
  EXPECT_LT(idle_cpu, 1.0) << "wharfd spins after the clock steps";

  auto quarantined = QuarantinedRecords(wharfd.control(), "orders");
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  const CheckerCounts files = Check(
      load.history(), FileDestinationRecords(wharfd.config().out_dir, "orders"), *quarantined);
  ExpectCheckerOk(files, what + ", file destination");
  const CheckerCounts rolled = Check(load.history(), RolledRecords(rolled_dir), *quarantined);
  ExpectCheckerOk(rolled, what + ", rolling file destination (max_age 2s)");
  EXPECT_GT(files.quarantined, 0u) << "the invalid records must sit in quarantine";
  EXPECT_EQ(files.unknown, 0u);
}

// CLOCK_REALTIME stepped as NTP or an operator would step it; CLOCK_MONOTONIC runs on.
TEST(PausesClocks, WallClockStepsBackwardsAndForwards) {
  ASSERT_EQ(::access(kFaketimeLib, R_OK), 0)
      << kFaketimeLib << " is missing: install the Debian package faketime";
  const auto phase = Extended() ? 15s : 4s;
  TempDir tmp;
  const std::string offset_file = tmp.path() + "/faketime";
  const std::string rolled_dir = tmp.path() + "/rolled";
  // Quarantine entries are kept an hour: a run of a minute must not expire any, whatever the
  // wall clock says.
  WharfdProcess wharfd(FaketimeConfig(tmp, "1h"));
  ASSERT_TRUE(wharfd.Start().ok());
  ProducerLoad load(SlowLoad(wharfd));
  load.Start();
  std::this_thread::sleep_for(phase);

  // 1. Two days back: beyond a day, which raw retention's old wall-clock cutoff tolerated.
  const std::set<uint64_t> acked_before_back = AckedValidIds(load.history());
  const uint64_t offsets_before_back = load.acked_count();
  WriteFile(offset_file, "-2d\n");
  const auto back = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(phase);
  // Everything acked before the step is delivered (in files published by the rolling
  // destination) and its raw records are deleted, within a bound: the linger, the file age and
  // raw retention do not wait for the wall clock to catch up.
  bool published = false;
  const bool bounded = WaitFor(
      [&] {
        published = published || AllFound(acked_before_back, RolledRecords(rolled_dir));
        return published && Metric(wharfd, "wharf_retention_deleted_records_total") >=
                                static_cast<double>(offsets_before_back);
      },
      20s);
  std::printf(
      "clock -2d: records acked before the step published by the rolling destination: %s, raw "
      "records deleted %.0f of %llu, %.1f s after the step\n",
      published ? "yes" : "NO", Metric(wharfd, "wharf_retention_deleted_records_total"),
      static_cast<unsigned long long>(offsets_before_back), Seconds(back));
  EXPECT_TRUE(published) << "files opened before the step stayed unpublished";
  EXPECT_TRUE(bounded) << "raw retention stopped at records ingested before the step";

  // 2. One day forward of the real time (three days forward of the clock just before).
  WriteFile(offset_file, "+1d\n");
  std::this_thread::sleep_for(phase);
  load.Stop();
  ExpectDrainedAndChecked(wharfd, tmp, load, "clock steps -2d/+1d");
  EXPECT_EQ(Metric(wharfd, "wharf_quarantine_expired_total"), 0)
      << "quarantine entries of minutes ago expired under a retention of an hour";
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace wharf::testing
