// Integration test of one dataset fanning out to a file, an HTTP and a PostgreSQL destination:
// a destination that is down holds only its own backlog while the others keep delivering, and
// catches up exactly once when it comes back.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/checker.h"
#include "tests/support/http_test_server.h"
#include "tests/support/postgres_server.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;

bool Drained(client::ControlClient& control, const std::string& destination) {
  auto d = FindDestinationStatus(control, "orders", destination);
  return d.has_value() && d->backlog_records() == 0;
}

TEST(DestinationsFanout, PostgresDownOthersKeepDelivering) {
  TempDir tmp;
  PostgresServer pg;
  ASSERT_TRUE(pg.Start().ok());  // initdb and the port
  ASSERT_TRUE(pg.Shutdown().ok());

  HttpTestServer server;
  ASSERT_TRUE(server.Start().ok());
  server.SetAcceptKeysOnce(true);
  std::mutex mu;
  std::vector<std::string> http_lines;  // guarded by mu
  server.SetHandler([&](const HttpRequest& r) {
    std::istringstream in(r.body);
    std::string line;
    std::lock_guard<std::mutex> lock(mu);
    while (std::getline(in, line)) http_lines.push_back(line);
    return HttpResponse{};
  });

  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.linger = "20ms";
  config.max_records = 500;
  config.extra_destinations = HttpDestinationYaml(server.Url("/ingest")) +
                              PostgresDestinationYaml("warehouse", pg.ConnInfo(), "events", true);
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());

  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 2;
  lo.records_per_producer = 3000;
  lo.batch = 100;
  lo.pause = 5ms;
  ProducerLoad load(lo);
  load.Start();
  load.Stop();
  ASSERT_EQ(load.failed(), 0u);
  ASSERT_EQ(load.acked_count(), 6000u);
  const auto acked = load.acked();
  std::vector<std::string> payloads;
  for (const auto& [pos, payload] : acked) payloads.push_back(payload);

  ASSERT_TRUE(WaitFor([&] { return Drained(wharfd.control(), "files"); }, 60s))
      << "the file destination stalled while PostgreSQL is down";
  ASSERT_TRUE(WaitFor([&] { return Drained(wharfd.control(), "api"); }, 60s))
      << "the HTTP destination stalled while PostgreSQL is down";

  auto pgd = FindDestinationStatus(wharfd.control(), "orders", "warehouse");
  ASSERT_TRUE(pgd.has_value());
  std::printf("postgres down: state=%s backlog=%llu last_error=\"%s\"\n",
              wharf::v1::DestinationState_Name(pgd->state()).c_str(),
              static_cast<unsigned long long>(pgd->backlog_records()), pgd->last_error().c_str());
  EXPECT_TRUE(pgd->state() == wharf::v1::RETRYING || pgd->state() == wharf::v1::OPEN)
      << wharf::v1::DestinationState_Name(pgd->state());
  EXPECT_FALSE(pgd->last_error().empty());
  EXPECT_EQ(pgd->backlog_records(), acked.size()) << "nothing reached PostgreSQL";
  EXPECT_EQ(pgd->records_delivered(), 0u);

  std::vector<std::string> file_lines;
  for (const auto& f : ReadDestination(config.out_dir, "orders")) {
    file_lines.insert(file_lines.end(), f.lines.begin(), f.lines.end());
  }
  const ExactlyOnceCounts fc = CompareExactlyOnce(payloads, file_lines);
  std::vector<std::string> http_copy;
  {
    std::lock_guard<std::mutex> lock(mu);
    http_copy = http_lines;
  }
  const ExactlyOnceCounts hc = CompareExactlyOnce(payloads, http_copy);
  std::printf("while postgres is down: file %s; http %s\n", fc.ToString().c_str(),
              hc.ToString().c_str());
  EXPECT_TRUE(fc.ok()) << fc.ToString();
  EXPECT_TRUE(hc.ok()) << hc.ToString();

  const auto up_since = std::chrono::steady_clock::now();
  ASSERT_TRUE(pg.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 60s))
      << "PostgreSQL did not catch up";
  std::printf("postgres caught up %.1f s after it came back\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - up_since).count());
  const ExactlyOnceCounts pc =
      CompareExactlyOnce(AckedIdentities(acked), PostgresRowIdentities(pg, "events"));
  // The other two again: catching up must not have re-delivered anything there.
  file_lines.clear();
  for (const auto& f : ReadDestination(config.out_dir, "orders")) {
    file_lines.insert(file_lines.end(), f.lines.begin(), f.lines.end());
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    http_copy = http_lines;
  }
  const ExactlyOnceCounts fc2 = CompareExactlyOnce(payloads, file_lines);
  const ExactlyOnceCounts hc2 = CompareExactlyOnce(payloads, http_copy);
  std::printf("final: postgres %s; file %s; http %s\n", pc.ToString().c_str(),
              fc2.ToString().c_str(), hc2.ToString().c_str());
  EXPECT_TRUE(pc.ok()) << pc.ToString();
  EXPECT_TRUE(fc2.ok()) << fc2.ToString();
  EXPECT_TRUE(hc2.ok()) << hc2.ToString();
  // The shared checker, once per destination, over the producers' history.
  auto quarantined = QuarantinedRecords(wharfd.control(), "orders");
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  auto rows = PostgresRecords(pg, "events");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ExpectCheckerOk(Check(load.history(), *rows, *quarantined), "fan-out: postgres after its outage");
  ExpectCheckerOk(
      Check(load.history(), FileDestinationRecords(config.out_dir, "orders"), *quarantined),
      "fan-out: file destination (postgres down, then back)");
  ExpectCheckerOk(Check(load.history(), PayloadRecords(http_copy), *quarantined),
                  "fan-out: http destination (postgres down, then back)");
  auto d = FindDestinationStatus(wharfd.control(), "orders", "warehouse");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->state(), wharf::v1::HEALTHY);
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
  server.Stop();
  pg.Stop();
}

TEST(DestinationsFanout, PausedDestinationHoldsItsBacklog) {
  TempDir tmp;
  HttpTestServer server;
  ASSERT_TRUE(server.Start().ok());
  server.SetAcceptKeysOnce(true);
  std::mutex mu;
  std::vector<std::string> http_lines;  // guarded by mu
  server.SetHandler([&](const HttpRequest& r) {
    std::istringstream in(r.body);
    std::string line;
    std::lock_guard<std::mutex> lock(mu);
    while (std::getline(in, line)) http_lines.push_back(line);
    return HttpResponse{};
  });
  auto http_copy = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return http_lines;
  };

  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.linger = "20ms";
  config.max_records = 500;
  config.extra_destinations = HttpDestinationYaml(server.Url("/ingest"));
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());
  ASSERT_TRUE(wharfd.control().PauseDestination("orders", "api").ok());
  EXPECT_EQ(wharfd.control().PauseDestination("orders", "nonexistent").code(),
            absl::StatusCode::kNotFound);

  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 2;
  lo.records_per_producer = 2000;
  lo.batch = 100;
  lo.pause = 0ms;
  ProducerLoad load(lo);
  load.Start();
  load.Stop();
  ASSERT_EQ(load.failed(), 0u);
  ASSERT_EQ(load.acked_count(), 4000u);
  std::vector<std::string> payloads;
  for (const auto& [pos, payload] : load.acked()) payloads.push_back(payload);

  ASSERT_TRUE(WaitFor([&] { return Drained(wharfd.control(), "files"); }, 60s))
      << "the file destination stalled while api is paused";
  // Paused survives a restart (it is persisted).
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
  ASSERT_TRUE(wharfd.Start().ok());
  std::this_thread::sleep_for(1s);
  auto api = FindDestinationStatus(wharfd.control(), "orders", "api");
  ASSERT_TRUE(api.has_value());
  std::printf("paused: state=%s backlog=%llu http requests=%zu\n",
              wharf::v1::DestinationState_Name(api->state()).c_str(),
              static_cast<unsigned long long>(api->backlog_records()), server.RequestCount());
  EXPECT_EQ(api->state(), wharf::v1::PAUSED);
  EXPECT_EQ(api->backlog_records(), payloads.size());
  EXPECT_EQ(server.RequestCount(), 0u) << "a paused destination is not attempted";
  auto metrics = HttpGet(wharfd.config().metrics_port, "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(
      MetricSum(*metrics, "wharf_destination_state", {R"(destination="api")", R"(state="paused")"}),
      1);

  ASSERT_TRUE(wharfd.control().ResumeDestination("orders", "api").ok());
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 60s))
      << "api did not catch up after resume";
  std::vector<std::string> file_lines;
  for (const auto& f : ReadDestination(config.out_dir, "orders")) {
    file_lines.insert(file_lines.end(), f.lines.begin(), f.lines.end());
  }
  const ExactlyOnceCounts fc = CompareExactlyOnce(payloads, file_lines);
  const ExactlyOnceCounts hc = CompareExactlyOnce(payloads, http_copy());
  std::printf("after resume: file %s; http %s\n", fc.ToString().c_str(), hc.ToString().c_str());
  EXPECT_TRUE(fc.ok()) << fc.ToString();
  EXPECT_TRUE(hc.ok()) << hc.ToString();
  auto quarantined = QuarantinedRecords(wharfd.control(), "orders");
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  ExpectCheckerOk(Check(load.history(), PayloadRecords(http_copy()), *quarantined),
                  "fan-out: http destination paused across a restart, then resumed");
  ExpectCheckerOk(
      Check(load.history(), FileDestinationRecords(config.out_dir, "orders"), *quarantined),
      "fan-out: file destination while http is paused");
  api = FindDestinationStatus(wharfd.control(), "orders", "api");
  ASSERT_TRUE(api.has_value());
  EXPECT_EQ(api->state(), wharf::v1::HEALTHY);
  code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
  server.Stop();
}

}  // namespace
}  // namespace wharf::testing
