// Integration tests of the HTTP destination inside a real wharfd, against a real local HTTP/1.1
// server (HttpTestServer) that behaves as an idempotent receiver (accepts each Idempotency-Key
// once): retries through 5xx, Retry-After, 429 and a timed-out slow answer deliver every record
// exactly once; a 422 for some records sends exactly those to quarantine.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/checker.h"
#include "tests/support/http_test_server.h"
#include "tests/support/wharfd_process.h"

namespace wharf::testing {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> Lines(const std::string& body) {
  std::vector<std::string> out;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

std::vector<std::string> Payloads(
    const std::map<std::pair<uint32_t, uint64_t>, std::string>& acked) {
  std::vector<std::string> out;
  for (const auto& [pos, payload] : acked) out.push_back(payload);
  return out;
}

// Bodies of the requests the handler answered with 2xx (duplicates answered by the server's
// accept-once mode never reach the handler).
struct AcceptedBodies {
  std::mutex mu;
  std::vector<std::string> lines;  // guarded by mu
  void Add(const std::string& body) {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& l : Lines(body)) lines.push_back(std::move(l));
  }
  std::vector<std::string> Get() {
    std::lock_guard<std::mutex> lock(mu);
    return lines;
  }
};

TEST(DestinationsHttp, RetriesAndIdempotency) {
  TempDir tmp;
  HttpTestServer server;
  ASSERT_TRUE(server.Start().ok());
  server.SetAcceptKeysOnce(true);
  AcceptedBodies accepted;
  std::atomic<int> answered{0};
  // Script: 500, 503 with Retry-After: 1, 429, an answer slower than request_timeout (the key
  // counts as accepted: the receiver committed, the answer is lost), then 200 for everything.
  server.SetHandler([&](const HttpRequest& r) {
    HttpResponse resp;
    switch (answered++) {
      case 0:
        resp.status = 500;
        break;
      case 1:
        resp.status = 503;
        resp.headers = {{"Retry-After", "1"}};
        break;
      case 2:
        resp.status = 429;
        break;
      case 3:
        resp.delay = 3s;
        break;
      default:
        break;
    }
    if (resp.status / 100 == 2) accepted.Add(r.body);
    return resp;
  });

  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  // One partition: the scripted failures all hit the first batch, whose retries are then
  // checked one by one.
  config.partitions = 1;
  config.linger = "20ms";
  config.max_records = 500;
  config.file_destination = false;
  config.extra_destinations = HttpDestinationYaml(server.Url("/ingest"), "1s");
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());

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
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 90s))
      << "backlog did not drain";

  const auto requests = server.Requests();
  ASSERT_GE(requests.size(), 5u);
  const std::string first_key = requests[0].HeaderOr("Idempotency-Key");
  EXPECT_FALSE(first_key.empty());
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(requests[i].HeaderOr("Idempotency-Key"), first_key)
        << "request " << i << ": a failed batch is retried with the same key";
    EXPECT_EQ(requests[i].body, requests[0].body) << "request " << i << ": same body on retry";
  }
  const auto after_retry_after = requests[2].arrival - requests[1].arrival;
  EXPECT_GE(after_retry_after, 900ms) << "Retry-After: 1 was not honoured";
  EXPECT_EQ(server.DuplicateCount(), 1u)
      << "the retry after the timed-out answer is the only duplicate";
  for (const auto& r : requests) {
    EXPECT_EQ(r.HeaderOr("X-Wharf-Record-Count"), std::to_string(Lines(r.body).size()));
  }
  // Every key that was sent was accepted exactly once in the end (none only ever failed).
  std::set<std::string> keys;
  for (const auto& r : requests) keys.insert(r.HeaderOr("Idempotency-Key"));
  size_t keys_not_once = 0;
  for (const auto& key : keys) {
    if (server.AcceptedCount(key) != 1) ++keys_not_once;
  }
  EXPECT_EQ(keys_not_once, 0u);
  EXPECT_EQ(server.AcceptedKeys().size(), keys.size());

  const ExactlyOnceCounts c = CompareExactlyOnce(Payloads(load.acked()), accepted.Get());
  std::printf("http retries: %s requests=%zu keys=%zu duplicates=%zu\n", c.ToString().c_str(),
              requests.size(), server.AcceptedKeys().size(), server.DuplicateCount());
  EXPECT_EQ(c.lost, 0u);
  EXPECT_EQ(c.duplicated, 0u);
  EXPECT_EQ(c.unexpected, 0u);
  EXPECT_TRUE(c.ok()) << c.ToString();
  // The shared checker over the producers' history: what the receiver accepted (once per key)
  // must be exactly the acked records.
  auto quarantined = QuarantinedRecords(wharfd.control(), "orders");
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  ExpectCheckerOk(Check(load.history(), PayloadRecords(accepted.Get()), *quarantined),
                  "http retries: 500, 503 + Retry-After, 429, timed-out answer");

  auto d = FindDestinationStatus(wharfd.control(), "orders", "api");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->type(), "http");
  EXPECT_EQ(d->state(), wharf::v1::HEALTHY);
  EXPECT_EQ(d->delivery_failures(), 4u) << "500, 503, 429 and the timeout";
  EXPECT_EQ(d->records_delivered(), 4000u);
  auto metrics = HttpGet(wharfd.config().metrics_port, "/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(MetricSum(*metrics, "wharf_delivery_failures_total", {R"(destination="api")"}), 4);
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
  server.Stop();
}

TEST(DestinationsHttp, Http422IsPoison) {
  TempDir tmp;
  HttpTestServer server;
  ASSERT_TRUE(server.Start().ok());
  server.SetAcceptKeysOnce(true);
  AcceptedBodies accepted;
  const std::string kMarker = R"("marker":true)";
  server.SetHandler([&](const HttpRequest& r) {
    HttpResponse resp;
    if (r.body.find(kMarker) != std::string::npos) {
      resp.status = 422;
      resp.body = "unprocessable: marker record";
    } else {
      accepted.Add(r.body);
    }
    return resp;
  });

  WharfdConfig config;
  config.data_dir = tmp.path() + "/data";
  config.out_dir = tmp.path() + "/out";
  config.linger = "20ms";
  config.max_records = 200;
  config.file_destination = false;
  config.extra_destinations = HttpDestinationYaml(server.Url("/ingest"), "");
  WharfdProcess wharfd(config);
  ASSERT_TRUE(wharfd.Start().ok());

  ProducerLoadOptions lo;
  lo.target = wharfd.target();
  lo.producers = 1;
  lo.records_per_producer = 1000;
  lo.batch = 100;
  lo.pause = 0ms;
  lo.payload = [&](int p, int64_t i) {
    if (i % 200 == 77) {
      return absl::StrCat(R"({"id":)", static_cast<uint64_t>(p) * 1000000000ull + i + 1, ",",
                          kMarker, "}");
    }
    return LoadPayload(p, i);
  };
  ProducerLoad load(lo);
  load.Start();
  load.Stop();
  ASSERT_EQ(load.failed(), 0u);
  ASSERT_EQ(load.acked_count(), 1000u);
  ASSERT_TRUE(WaitFor([&] { return AllDelivered(wharfd.control()); }, 90s))
      << "backlog did not drain";

  std::map<std::pair<uint32_t, uint64_t>, std::string> good, bad;
  for (const auto& [pos, payload] : load.acked()) {
    (payload.find(kMarker) != std::string::npos ? bad : good).emplace(pos, payload);
  }
  ASSERT_EQ(bad.size(), 5u);
  auto q = wharfd.control().ListAllQuarantine("orders", 100);
  ASSERT_TRUE(q.ok()) << q.status();
  size_t matched = 0;
  for (const auto& e : q->entries()) {
    EXPECT_EQ(e.reason(), wharf::v1::DESTINATION_REJECTED);
    EXPECT_EQ(e.destination(), "api");
    EXPECT_NE(e.message().find("422"), std::string::npos) << e.message();
    auto it = bad.find({e.partition(), e.offset()});
    if (it != bad.end() && it->second == e.original().record().payload()) ++matched;
  }
  const ExactlyOnceCounts c = CompareExactlyOnce(Payloads(good), accepted.Get());
  std::printf("http 422: %s quarantined=%d matched=%zu requests=%zu\n", c.ToString().c_str(),
              q->entries_size(), matched, server.RequestCount());
  if (q->entries_size() > 0) std::printf("message: %s\n", q->entries(0).message().c_str());
  EXPECT_EQ(q->entries_size(), 5);
  EXPECT_EQ(matched, 5u) << "the quarantine holds exactly the marker records";
  EXPECT_TRUE(c.ok()) << c.ToString();
  // The shared checker: every acked record is either accepted by the receiver or (the five
  // refused ones) in quarantine, never both, never twice.
  auto quarantined = QuarantinedRecords(wharfd.control(), "orders");
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  const CheckerCounts checked = Check(load.history(), PayloadRecords(accepted.Get()), *quarantined);
  ExpectCheckerOk(checked, "http 422 poison records");
  EXPECT_EQ(checked.quarantined, 5u);
  auto d = FindDestinationStatus(wharfd.control(), "orders", "api");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->records_rejected(), 5u);
  auto code = wharfd.Terminate();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
  server.Stop();
}

}  // namespace
}  // namespace wharf::testing
