#include "pipeline/destinations/http_destination.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/http_test_server.h"
#include "tests/support/wharfd_process.h"
#include "wharf/v1/record.pb.h"

namespace wharf::pipeline {
namespace {

using std::chrono::milliseconds;
using ::wharf::testing::HttpRequest;
using ::wharf::testing::HttpResponse;
using ::wharf::testing::HttpTestServer;
using ::wharf::testing::HttpTestServerTlsOptions;

// pipeline_test links GoogleTest without gMock, hence no HasSubstr.
::testing::AssertionResult MessageContains(const absl::Status& status, const std::string& part) {
  const std::string message(status.message());
  if (message.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "status " << status << " does not mention \"" << part << "\"";
}

::testing::AssertionResult MessageOmits(const absl::Status& status, const std::string& part) {
  const std::string message(status.message());
  if (message.find(part) == std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "status " << status << " mentions \"" << part << "\"";
}

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
  for (const std::string& payload : payloads) {
    wharf::v1::BatchRecord* r = batch.add_records();
    r->set_offset(offset++);
    r->set_payload(payload);
  }
  return batch;
}

HttpResponse Respond(int status, std::string body = "",
                     std::vector<std::pair<std::string, std::string>> headers = {}) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

// A raw TCP client of 127.0.0.1:port, for bytes no HTTP library would send. Receives time out
// after 5 s. Thread safety: not thread-safe.
class RawClient {
 public:
  explicit RawClient(int port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (fd_ < 0) return;
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return fd_ >= 0; }

  void Send(std::string_view data) {
    while (fd_ >= 0 && !data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      data.remove_prefix(static_cast<size_t>(n));
    }
  }
  void HalfClose() {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
  }
  // Reads until `marker` was received (empty: until EOF), the peer closes, or 5 s pass without
  // data. Returns everything received so far.
  const std::string& ReadUntil(std::string_view marker = "") {
    char buf[4096];
    while (fd_ >= 0 && (marker.empty() || received_.find(marker) == std::string::npos)) {
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      received_.append(buf, static_cast<size_t>(n));
    }
    return received_;
  }

 private:
  int fd_;
  std::string received_;
};

// Sends `data` on a fresh connection, then reads until the server closes it (or 5 s pass).
// `half_close`: shut down the sending side after the data.
std::string RawExchange(int port, const std::string& data, bool half_close = false) {
  RawClient client(port);
  if (!client.connected()) return "<connect failed>";
  client.Send(data);
  if (half_close) client.HalfClose();
  return client.ReadUntil();
}

std::string GzipForTest(const std::string& in) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, in.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// RFC 9110 IMF-fixdate of `t`.
std::string HttpDate(std::time_t t) {
  static const char* const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday],
                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// The test server itself.

class HttpTestServerTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.Start().ok()); }
  HttpTestServer server_;
};

TEST_F(HttpTestServerTest, KeepAliveContentLengthAndChunkedBodies) {
  const std::string requests =
      "\r\nPOST /a?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nX-Test: One\r\n\r\nhello"
      "POST /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n"
      "GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
  const std::string response = RawExchange(server_.port(), requests);
  size_t answers = 0;
  for (size_t pos = 0; (pos = response.find("HTTP/1.1 200 OK", pos)) != std::string::npos; ++pos) {
    ++answers;
  }
  EXPECT_EQ(answers, 3u) << response;
  const std::vector<HttpRequest> seen = server_.Requests();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].target, "/a?x=1");
  EXPECT_EQ(seen[0].path, "/a");
  EXPECT_EQ(seen[0].body, "hello");
  EXPECT_EQ(seen[0].HeaderOr("x-test"), "One");
  EXPECT_FALSE(seen[0].Header("X-Missing").has_value());
  EXPECT_EQ(seen[1].body, "abcdefg");
  EXPECT_TRUE(seen[1].chunked);
  EXPECT_EQ(seen[2].method, "GET");
  EXPECT_EQ(seen[2].body, "");
  EXPECT_EQ(seen[0].connection_id, seen[2].connection_id);
  EXPECT_EQ(server_.ConnectionCount(), 1u);
  EXPECT_EQ(server_.MalformedCount(), 0u);
}

TEST_F(HttpTestServerTest, ExpectContinueAndScriptedResponses) {
  server_.EnqueueResponse(Respond(503, "busy", {{"Retry-After", "7"}}));
  server_.SetDefaultResponse(Respond(202, "ok"));
  const std::string first =
      RawExchange(server_.port(),
                  "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
  EXPECT_EQ(first.rfind("HTTP/1.1 503 ", 0), 0u) << first;
  EXPECT_NE(first.find("Retry-After: 7\r\n"), std::string::npos) << first;
  EXPECT_NE(first.find("\r\n\r\nbusy"), std::string::npos) << first;
  // With Expect: 100-continue the client sends the body only after the interim answer.
  RawClient client(server_.port());
  ASSERT_TRUE(client.connected());
  client.Send(
      "POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"
      "Connection: close\r\n\r\n");
  EXPECT_EQ(client.ReadUntil("\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");
  client.Send("abc");
  const std::string second = client.ReadUntil();
  EXPECT_NE(second.find("HTTP/1.1 202 "), std::string::npos) << second;
  ASSERT_EQ(server_.RequestCount(), 2u);
  EXPECT_EQ(server_.Requests()[1].body, "abc");
  EXPECT_EQ(server_.QueuedResponses(), 0u);
}

TEST_F(HttpTestServerTest, GzipBodiesAreDecodedAndBadGzipIsRefused) {
  const std::string plain = "{\"a\":1}\n{\"b\":2}\n";
  const std::string gz = GzipForTest(plain);
  const std::string ok = RawExchange(
      server_.port(), absl::StrCat("POST / HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\n"
                                   "Connection: close\r\nContent-Length: ",
                                   gz.size(), "\r\n\r\n", gz));
  EXPECT_EQ(ok.rfind("HTTP/1.1 200 ", 0), 0u) << ok;
  ASSERT_EQ(server_.RequestCount(), 1u);
  EXPECT_EQ(server_.Requests()[0].body, plain);
  EXPECT_EQ(server_.Requests()[0].wire_body_size, gz.size());

  const std::string truncated = gz.substr(0, gz.size() - 4);
  for (const std::string& bad : {std::string("not gzip at all"), truncated, gz + "trailing"}) {
    const std::string answer = RawExchange(
        server_.port(), absl::StrCat("POST / HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\n"
                                     "Content-Length: ",
                                     bad.size(), "\r\n\r\n", bad));
    EXPECT_EQ(answer.rfind("HTTP/1.1 400 ", 0), 0u) << answer;
  }
  EXPECT_EQ(server_.RequestCount(), 1u);
  EXPECT_EQ(server_.MalformedCount(), 3u);
}

TEST_F(HttpTestServerTest, MalformedRequestsAreRefusedAndDoNotStopTheServer) {
  const std::vector<std::string> malformed = {
      "GARBAGE\r\n\r\n",
      std::string("\x16\x03\x01\x02\x00\x01", 6),  // a TLS ClientHello's start
      "GET /\r\n\r\n",
      "GET / HTTP/2.0\r\n\r\n",
      "GET  / HTTP/1.1\r\n\r\n",
      "G(T / HTTP/1.1\r\n\r\n",
      "POST / HTTP/1.1\r\nNoColonHere\r\n\r\n",
      "POST / HTTP/1.1\r\nBad Name: x\r\n\r\n",
      "POST / HTTP/1.1\r\n folded: x\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nx",
      "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx",
      "POST / HTTP/1.1\r\nExpect: something\r\n\r\n",
      std::string("GET / HTTP/1.1\r\nX: a") + std::string(1, '\0') + "b\r\n\r\n",
      "GET / HTTP/1.1\r\n" + std::string(70 * 1024, 'a') + "\r\n\r\n",
  };
  size_t expected_malformed = 0;
  for (const std::string& request : malformed) {
    const std::string answer = RawExchange(server_.port(), request, /*half_close=*/true);
    EXPECT_EQ(answer.rfind("HTTP/1.1 4", 0), 0u)
        << "request: " << request.substr(0, 80) << "\nanswer: " << answer;
    EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
    ++expected_malformed;
  }
  // Requests cut off by the client: nothing to answer, but no crash either.
  for (const std::string& partial :
       {std::string("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
        std::string("POST / HTTP/1.1\r\nHost"),
        std::string("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")}) {
    EXPECT_EQ(RawExchange(server_.port(), partial, /*half_close=*/true), "");
  }
  ++expected_malformed;  // only the cut-off head counts; the cut-off bodies had valid heads
  EXPECT_EQ(server_.MalformedCount(), expected_malformed);
  EXPECT_EQ(server_.RequestCount(), 0u);
  // Still serving.
  const std::string answer =
      RawExchange(server_.port(), "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(answer.rfind("HTTP/1.1 200 ", 0), 0u) << answer;
  EXPECT_EQ(server_.RequestCount(), 1u);
}

TEST_F(HttpTestServerTest, AcceptKeysOnceCountsDuplicates) {
  server_.SetAcceptKeysOnce(true);
  server_.EnqueueResponse(Respond(500));
  const std::string request =
      "POST / HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k1\r\nContent-Length: 0\r\n"
      "Connection: close\r\n\r\n";
  EXPECT_EQ(RawExchange(server_.port(), request).rfind("HTTP/1.1 500 ", 0), 0u);
  EXPECT_EQ(server_.AcceptedCount("k1"), 0);
  EXPECT_EQ(RawExchange(server_.port(), request).rfind("HTTP/1.1 200 ", 0), 0u);
  EXPECT_EQ(server_.AcceptedCount("k1"), 1);
  server_.EnqueueResponse(Respond(500));  // not consumed by the duplicate
  EXPECT_EQ(RawExchange(server_.port(), request).rfind("HTTP/1.1 200 ", 0), 0u);
  EXPECT_EQ(server_.AcceptedCount("k1"), 1);
  EXPECT_EQ(server_.DuplicateCount(), 1u);
  EXPECT_EQ(server_.QueuedResponses(), 1u);
  EXPECT_EQ(server_.RequestCount(), 3u);
}

TEST(HttpTestServer, StopIsBoundedWithIdleConnectionsAndSlowResponses) {
  HttpTestServer server;
  ASSERT_TRUE(server.Start().ok());
  HttpResponse slow = Respond(200);
  slow.delay = milliseconds(20000);
  server.SetDefaultResponse(slow);
  // An idle keep-alive connection and a request waiting for its slow answer.
  std::thread idle([&] { RawExchange(server.port(), ""); });
  std::thread waiting([&] {
    RawExchange(server.port(), "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
  });
  ASSERT_TRUE(server.WaitForRequests(1, milliseconds(5000)));
  const auto start = std::chrono::steady_clock::now();
  server.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(3000));
  idle.join();
  waiting.join();
  server.Stop();  // idempotent
  EXPECT_FALSE(server.Start().ok());
}

// ---------------------------------------------------------------------------------------------
// The destination against the test server.

class HttpDestinationTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.Start().ok()); }

  HttpDestinationOptions Options(const std::string& path = "/ingest") {
    HttpDestinationOptions options;
    options.name = "sink";
    options.url = server_.Url(path);
    options.connect_timeout = milliseconds(2000);
    options.request_timeout = milliseconds(5000);
    return options;
  }

  std::unique_ptr<HttpDestination> Make(HttpDestinationOptions options) {
    absl::StatusOr<std::unique_ptr<HttpDestination>> d = HttpDestination::Create(options);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *std::move(d) : nullptr;
  }

  // Delivers a small batch against a server that answers `response`.
  absl::Status DeliverWith(HttpResponse response, DeliveryReport* report,
                           HttpDestinationOptions options) {
    server_.EnqueueResponse(std::move(response));
    std::unique_ptr<HttpDestination> d = Make(std::move(options));
    if (d == nullptr) return absl::InternalError("no destination");
    return d->Deliver(MakeBatch("orders", 1, 10, 11, {R"({"id":1})", R"({"id":2})"}), report);
  }
  absl::Status DeliverWith(HttpResponse response, DeliveryReport* report) {
    return DeliverWith(std::move(response), report, Options());
  }

  HttpTestServer server_;
};

TEST_F(HttpDestinationTest, NdjsonBodyAndHeaders) {
  server_.SetDefaultResponse(Respond(200, "", {{"X-Request-Id", "req-42"}}));
  std::unique_ptr<HttpDestination> d = Make(Options());
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->type(), "http");
  DeliveryReport report;
  const wharf::v1::StoredBatch batch =
      MakeBatch("orders", 3, 100, 104, {R"({"id":1})", R"({"id":2,"s":"x y"})", R"({})"});
  ASSERT_TRUE(d->Deliver(batch, &report).ok());
  EXPECT_EQ(report.commit_id, "req-42");
  EXPECT_EQ(report.retry_after, milliseconds(0));
  ASSERT_EQ(server_.RequestCount(), 1u);
  const HttpRequest r = server_.Requests()[0];
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.path, "/ingest");
  EXPECT_EQ(r.body, "{\"id\":1}\n{\"id\":2,\"s\":\"x y\"}\n{}\n");
  EXPECT_FALSE(r.chunked);
  EXPECT_EQ(r.HeaderOr("Content-Length"), std::to_string(r.body.size()));
  EXPECT_EQ(r.HeaderOr("Content-Type"), "application/x-ndjson");
  EXPECT_FALSE(r.Header("Content-Encoding").has_value());
  EXPECT_FALSE(r.Header("Authorization").has_value());
  EXPECT_FALSE(r.Header("Expect").has_value());
  EXPECT_EQ(r.HeaderOr("Idempotency-Key"), "orders.p3.100-104");
  EXPECT_EQ(r.HeaderOr("X-Wharf-Batch-Id"), "orders.p3.100-104");
  EXPECT_EQ(r.HeaderOr("X-Wharf-Dataset"), "orders");
  EXPECT_EQ(r.HeaderOr("X-Wharf-Partition"), "3");
  EXPECT_EQ(r.HeaderOr("X-Wharf-First-Offset"), "100");
  EXPECT_EQ(r.HeaderOr("X-Wharf-Last-Offset"), "104");
  EXPECT_EQ(r.HeaderOr("X-Wharf-Record-Count"), "3");

  // Without X-Request-Id the commit id is empty; a sub-batch id goes through unchanged.
  server_.SetDefaultResponse(Respond(204));
  wharf::v1::StoredBatch sub = MakeBatch("orders", 3, 101, 102, {R"({"id":2})"});
  sub.mutable_manifest()->set_batch_id("orders.p3.100-104/101-102");
  DeliveryReport sub_report;
  ASSERT_TRUE(d->Deliver(sub, &sub_report).ok());
  EXPECT_EQ(sub_report.commit_id, "");
  ASSERT_EQ(server_.RequestCount(), 2u);
  EXPECT_EQ(server_.Requests()[1].HeaderOr("Idempotency-Key"), "orders.p3.100-104/101-102");
  EXPECT_EQ(server_.Requests()[1].HeaderOr("X-Wharf-Record-Count"), "1");
  // The second call reused the kept-alive connection.
  EXPECT_EQ(server_.ConnectionCount(), 1u);
}

TEST_F(HttpDestinationTest, NdjsonReplacesLineBreaksInsidePayloads) {
  std::unique_ptr<HttpDestination> d = Make(Options());
  ASSERT_NE(d, nullptr);
  DeliveryReport report;
  ASSERT_TRUE(
      d->Deliver(MakeBatch("orders", 0, 0, 1, {"{\n\"a\": 1\r\n}", "{\"b\":2}"}), &report).ok());
  ASSERT_EQ(server_.RequestCount(), 1u);
  EXPECT_EQ(server_.Requests()[0].body, "{ \"a\": 1  }\n{\"b\":2}\n");
}

TEST_F(HttpDestinationTest, JsonArrayFormat) {
  HttpDestinationOptions options = Options();
  options.format = HttpDestinationOptions::Format::kJsonArray;
  std::unique_ptr<HttpDestination> d = Make(options);
  ASSERT_NE(d, nullptr);
  DeliveryReport report;
  ASSERT_TRUE(
      d->Deliver(MakeBatch("orders", 0, 5, 7, {R"({"id":1})", R"({"id":2})", R"({"id":3})"}),
                 &report)
          .ok());
  ASSERT_TRUE(d->Deliver(MakeBatch("orders", 0, 8, 8, {"{\n}"}), &report).ok());
  const std::vector<HttpRequest> seen = server_.Requests();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].body, R"([{"id":1},{"id":2},{"id":3}])");
  EXPECT_EQ(seen[0].HeaderOr("Content-Type"), "application/json");
  EXPECT_EQ(seen[1].body, "[{\n}]");
}

TEST_F(HttpDestinationTest, GzipBodyDecodesToTheUncompressedForm) {
  HttpDestinationOptions options = Options();
  options.gzip = true;
  std::unique_ptr<HttpDestination> d = Make(options);
  ASSERT_NE(d, nullptr);
  std::vector<std::string> payloads;
  std::string expected;
  for (int i = 0; i < 500; ++i) {
    payloads.push_back(absl::StrCat(R"({"id":)", i, R"(,"text":"some repetitive text"})"));
    expected += payloads.back() + "\n";
  }
  DeliveryReport report;
  ASSERT_TRUE(d->Deliver(MakeBatch("orders", 0, 0, 499, payloads), &report).ok());
  ASSERT_EQ(server_.RequestCount(), 1u);
  const HttpRequest r = server_.Requests()[0];
  EXPECT_EQ(r.HeaderOr("Content-Encoding"), "gzip");
  EXPECT_EQ(r.HeaderOr("Content-Type"), "application/x-ndjson");
  EXPECT_EQ(r.body, expected);
  EXPECT_LT(r.wire_body_size, expected.size() / 4);
  EXPECT_EQ(r.HeaderOr("Content-Length"), std::to_string(r.wire_body_size));
}

TEST_F(HttpDestinationTest, BearerTokenAndCustomHeadersAreSent) {
  HttpDestinationOptions options = Options();
  options.bearer_token = "s3cr3t-t0ken";
  options.headers = {
      {"X-Tenant", "acme"}, {"Content-Type", "application/vnd.acme+ndjson"}, {"X-Empty", ""}};
  std::unique_ptr<HttpDestination> d = Make(options);
  ASSERT_NE(d, nullptr);
  DeliveryReport report;
  ASSERT_TRUE(d->Deliver(MakeBatch("orders", 0, 0, 0, {"{}"}), &report).ok());
  ASSERT_EQ(server_.RequestCount(), 1u);
  const HttpRequest r = server_.Requests()[0];
  EXPECT_EQ(r.HeaderOr("Authorization"), "Bearer s3cr3t-t0ken");
  EXPECT_EQ(r.HeaderOr("X-Tenant"), "acme");
  ASSERT_TRUE(r.Header("X-Empty").has_value());
  EXPECT_EQ(*r.Header("X-Empty"), "");
  EXPECT_EQ(r.HeaderOr("Content-Type"), "application/vnd.acme+ndjson");
  EXPECT_EQ(std::count_if(r.headers.begin(), r.headers.end(),
                          [](const auto& h) { return h.first == "Content-Type"; }),
            1);
}

TEST_F(HttpDestinationTest, BatchWithoutRecordsSendsNothing) {
  std::unique_ptr<HttpDestination> d = Make(Options());
  ASSERT_NE(d, nullptr);
  DeliveryReport report;
  EXPECT_TRUE(d->Deliver(MakeBatch("orders", 0, 0, 3, {}), &report).ok());
  EXPECT_EQ(server_.RequestCount(), 0u);
}

TEST_F(HttpDestinationTest, ServerErrorsAreUnavailable) {
  for (int status : {500, 502, 503, 504, 408, 425, 429}) {
    SCOPED_TRACE(status);
    DeliveryReport report;
    const absl::Status s = DeliverWith(Respond(status, "try later"), &report);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_TRUE(MessageContains(s, absl::StrCat("HTTP ", status)));
    EXPECT_TRUE(MessageContains(s, "orders.p1.10-11"));
    EXPECT_TRUE(MessageContains(s, "sink"));
    EXPECT_EQ(report.retry_after, milliseconds(0));
  }
}

TEST_F(HttpDestinationTest, RetryAfterSeconds) {
  DeliveryReport report;
  const absl::Status s = DeliverWith(Respond(503, "", {{"Retry-After", "2"}}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(report.retry_after, milliseconds(2000));

  DeliveryReport too_long;
  HttpDestinationOptions options = Options();
  options.max_retry_after = milliseconds(60000);
  EXPECT_EQ(DeliverWith(Respond(429, "", {{"Retry-After", "100000"}}), &too_long, options).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(too_long.retry_after, milliseconds(60000));

  DeliveryReport huge;
  EXPECT_EQ(
      DeliverWith(Respond(429, "", {{"Retry-After", "999999999999999999999999999"}}), &huge).code(),
      absl::StatusCode::kUnavailable);
  EXPECT_EQ(huge.retry_after, milliseconds(300000));  // the default cap

  for (const char* invalid : {"soon", "-5", "+5", "1.5", "", "0"}) {
    SCOPED_TRACE(invalid);
    DeliveryReport ignored;
    EXPECT_EQ(DeliverWith(Respond(503, "", {{"Retry-After", invalid}}), &ignored).code(),
              absl::StatusCode::kUnavailable);
    EXPECT_EQ(ignored.retry_after, milliseconds(0));
  }
}

TEST_F(HttpDestinationTest, RetryAfterHttpDate) {
  DeliveryReport report;
  const std::string date = HttpDate(std::time(nullptr) + 30);
  const absl::Status s = DeliverWith(Respond(503, "", {{"Retry-After", date}}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_GE(report.retry_after, milliseconds(28000)) << date;
  EXPECT_LE(report.retry_after, milliseconds(30000)) << date;

  DeliveryReport past;
  EXPECT_EQ(
      DeliverWith(Respond(503, "", {{"Retry-After", HttpDate(std::time(nullptr) - 3600)}}), &past)
          .code(),
      absl::StatusCode::kUnavailable);
  EXPECT_EQ(past.retry_after, milliseconds(0));

  DeliveryReport capped;
  EXPECT_EQ(DeliverWith(Respond(503, "", {{"Retry-After", HttpDate(std::time(nullptr) + 86400)}}),
                        &capped)
                .code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(capped.retry_after, milliseconds(300000));
}

TEST_F(HttpDestinationTest, ContentRefusalsAreInvalidArgumentWithBodyExcerpt) {
  for (int status : {400, 422, 413}) {
    SCOPED_TRACE(status);
    DeliveryReport report;
    const absl::Status s =
        DeliverWith(Respond(status, "{\"error\":\"field amount must be a number\"}"), &report);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_TRUE(MessageContains(s, absl::StrCat("HTTP ", status)));
    EXPECT_TRUE(MessageContains(s, "field amount must be a number"));
  }
  // A long body is cut to 200 bytes; control characters and invalid UTF-8 are made harmless.
  DeliveryReport report;
  const std::string body = "bad\r\nrecord \xff\xfe \xc3\xa9" + std::string(1000, 'z') + "TAIL";
  const absl::Status s = DeliverWith(Respond(400, body), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(MessageContains(s, "bad  record ?? \xc3\xa9zzz"));
  EXPECT_TRUE(MessageOmits(s, "TAIL"));
  EXPECT_TRUE(MessageContains(s, std::string(150, 'z') + "..."));
  EXPECT_TRUE(MessageOmits(s, std::string(200, 'z')));
}

TEST_F(HttpDestinationTest, ConfigurationProblemsAreFailedPrecondition) {
  for (int status : {401, 403, 404, 405, 409, 301, 302}) {
    SCOPED_TRACE(status);
    DeliveryReport report;
    const absl::Status s =
        DeliverWith(Respond(status, "nope", {{"Location", "/elsewhere"}}), &report);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_TRUE(MessageContains(s, absl::StrCat("HTTP ", status)));
  }
  // Redirects are not followed.
  EXPECT_EQ(server_.RequestCount(), 7u);
}

TEST_F(HttpDestinationTest, SecretsNeverAppearInMessages) {
  // The server echoes the token back in its error body; the URL carries credentials.
  server_.SetHandler([](const HttpRequest& r) {
    return Respond(400, "you sent " + r.HeaderOr("Authorization") + " which is fine");
  });
  HttpDestinationOptions options;
  options.name = "sink";
  options.url =
      absl::StrCat("http://user:pa55word@127.0.0.1:", server_.port(), "/ingest?api_key=q1w2e3");
  options.bearer_token = "s3cr3t-t0ken";
  std::unique_ptr<HttpDestination> d = Make(options);
  ASSERT_NE(d, nullptr);
  DeliveryReport report;
  const absl::Status s = d->Deliver(MakeBatch("orders", 0, 0, 0, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(MessageContains(s, "you sent Bearer [redacted] which is fine"));
  EXPECT_TRUE(MessageContains(s, absl::StrCat("http://127.0.0.1:", server_.port(), "/ingest")));
  EXPECT_TRUE(MessageOmits(s, "s3cr3t-t0ken"));
  EXPECT_TRUE(MessageOmits(s, "pa55word"));
  EXPECT_TRUE(MessageOmits(s, "q1w2e3"));
  // The credentials were still used.
  ASSERT_EQ(server_.RequestCount(), 1u);
  EXPECT_EQ(server_.Requests()[0].target, "/ingest?api_key=q1w2e3");
  EXPECT_EQ(server_.Requests()[0].HeaderOr("Authorization"), "Bearer s3cr3t-t0ken");
}

TEST_F(HttpDestinationTest, SlowResponseBeyondRequestTimeoutIsRetryable) {
  HttpResponse slow = Respond(200);
  slow.delay = milliseconds(3000);
  HttpDestinationOptions options = Options();
  options.request_timeout = milliseconds(300);
  DeliveryReport report;
  const auto start = std::chrono::steady_clock::now();
  const absl::Status s = DeliverWith(slow, &report, options);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(elapsed, milliseconds(2500));
  EXPECT_GE(elapsed, milliseconds(250));
}

TEST_F(HttpDestinationTest, ConnectionRefusedIsUnavailable) {
  HttpTestServer stopped;
  ASSERT_TRUE(stopped.Start().ok());
  const std::string url = stopped.Url("/ingest");
  stopped.Stop();  // The port is closed now.
  HttpDestinationOptions options = Options();
  options.url = url;
  std::unique_ptr<HttpDestination> d = Make(options);
  ASSERT_NE(d, nullptr);
  DeliveryReport report;
  const absl::Status s = d->Deliver(MakeBatch("orders", 0, 0, 0, {"{}"}), &report);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_TRUE(MessageContains(s, "libcurl error"));
}

TEST_F(HttpDestinationTest, DroppedConnectionsAndGarbageResponsesAreRetryable) {
  HttpResponse drop;
  drop.drop_connection = true;
  HttpResponse garbage;
  garbage.raw = "this is not HTTP\r\n\r\n";
  HttpResponse truncated;
  truncated.raw = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort";
  for (const HttpResponse& response : {drop, garbage, truncated}) {
    DeliveryReport report;
    const absl::Status s = DeliverWith(response, &report);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.code(), absl::StatusCode::kInvalidArgument) << s;
  }
}

TEST_F(HttpDestinationTest, HttpsAgainstAPlainServerIsRetryableNotAContentError) {
  HttpDestinationOptions options = Options();
  options.url = absl::StrCat("https://127.0.0.1:", server_.port(), "/ingest");
  options.insecure_skip_verify = true;
  options.connect_timeout = milliseconds(1000);
  std::unique_ptr<HttpDestination> d = Make(options);
  ASSERT_NE(d, nullptr);
  DeliveryReport report;
  const absl::Status s = d->Deliver(MakeBatch("orders", 0, 0, 0, {"{}"}), &report);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST_F(HttpDestinationTest, ManifestStringsCannotInjectHeaders) {
  std::unique_ptr<HttpDestination> d = Make(Options());
  ASSERT_NE(d, nullptr);
  DeliveryReport report;
  wharf::v1::StoredBatch batch = MakeBatch("orders", 0, 0, 0, {"{}"});
  batch.mutable_manifest()->set_batch_id("x\r\nX-Evil: 1");
  EXPECT_EQ(d->Deliver(batch, &report).code(), absl::StatusCode::kFailedPrecondition);
  batch = MakeBatch("orders", 0, 0, 0, {"{}"});
  batch.mutable_manifest()->set_dataset("orders\nX-Evil: 1");
  EXPECT_EQ(d->Deliver(batch, &report).code(), absl::StatusCode::kFailedPrecondition);
  batch = MakeBatch("orders", 0, 0, 0, {"{}"});
  batch.mutable_manifest()->clear_batch_id();
  EXPECT_EQ(d->Deliver(batch, &report).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server_.RequestCount(), 0u);
}

// The pipeline's view: a batch is retried until OK; the receiver deduplicates by key.
TEST_F(HttpDestinationTest, RetryLoopDeliversEveryBatchOncePerKey) {
  server_.SetAcceptKeysOnce(true);
  HttpResponse slow = Respond(200);
  slow.delay = milliseconds(2000);
  server_.EnqueueResponse(Respond(500));
  server_.EnqueueResponse(Respond(503, "", {{"Retry-After", "1"}}));
  server_.EnqueueResponse(Respond(429));
  server_.EnqueueResponse(slow);  // accepted by the server, but the answer comes too late
  // Then the default 200 for the rest; batch 2 meets one more failure.
  HttpDestinationOptions options = Options();
  options.request_timeout = milliseconds(300);
  std::unique_ptr<HttpDestination> d = Make(options);
  ASSERT_NE(d, nullptr);

  std::vector<wharf::v1::StoredBatch> batches = {
      MakeBatch("orders", 0, 0, 1, {R"({"n":0})", R"({"n":1})"}),
      MakeBatch("orders", 0, 2, 2, {R"({"n":2})"}),
      MakeBatch("orders", 0, 3, 5, {R"({"n":3})", R"({"n":4})", R"({"n":5})"}),
  };
  std::vector<absl::StatusCode> codes;
  std::vector<milliseconds> retry_afters;
  for (size_t i = 0; i < batches.size(); ++i) {
    if (i == 1) server_.EnqueueResponse(Respond(502));
    int attempts = 0;
    while (true) {
      ASSERT_LT(++attempts, 10) << "batch " << i << " never delivered";
      DeliveryReport report;
      const absl::Status s = d->Deliver(batches[i], &report);
      if (s.ok()) break;
      ASSERT_NE(s.code(), absl::StatusCode::kInvalidArgument) << s;
      codes.push_back(s.code());
      retry_afters.push_back(report.retry_after);
    }
  }
  const std::vector<absl::StatusCode> expected_codes = {
      absl::StatusCode::kUnavailable, absl::StatusCode::kUnavailable,
      absl::StatusCode::kUnavailable, absl::StatusCode::kDeadlineExceeded,
      absl::StatusCode::kUnavailable};
  EXPECT_EQ(codes, expected_codes);
  ASSERT_EQ(retry_afters.size(), 5u);
  EXPECT_EQ(retry_afters[1], milliseconds(1000));

  const std::map<std::string, int> accepted = server_.AcceptedKeys();
  ASSERT_EQ(accepted.size(), 3u);
  for (const wharf::v1::StoredBatch& batch : batches) {
    EXPECT_EQ(server_.AcceptedCount(batch.manifest().batch_id()), 1) << batch.manifest().batch_id();
  }
  // The slow attempt was accepted; its retry was answered as a duplicate.
  EXPECT_EQ(server_.DuplicateCount(), 1u);
  // Every attempt of a batch carried the same key and body.
  const std::vector<HttpRequest> seen = server_.Requests();
  ASSERT_EQ(seen.size(), 8u);  // 5 attempts for batch 0, 2 for batch 1, 1 for batch 2
  for (const HttpRequest& r : seen) {
    const std::string key = r.HeaderOr("Idempotency-Key");
    for (const HttpRequest& other : seen) {
      if (other.HeaderOr("Idempotency-Key") == key) {
        EXPECT_EQ(other.body, r.body);
      }
    }
  }
  EXPECT_EQ(seen[0].HeaderOr("Idempotency-Key"), "orders.p0.0-1");
  EXPECT_EQ(seen[4].HeaderOr("Idempotency-Key"), "orders.p0.0-1");
  EXPECT_EQ(seen[5].HeaderOr("Idempotency-Key"), "orders.p0.2-2");
}

TEST_F(HttpDestinationTest, ConcurrentDeliveriesFromFourThreads) {
  server_.SetAcceptKeysOnce(true);
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};
  server_.SetHandler([&](const HttpRequest&) {
    const int now = ++in_flight;
    int seen = max_in_flight.load();
    while (now > seen && !max_in_flight.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(milliseconds(20));
    --in_flight;
    return Respond(200);
  });
  std::unique_ptr<HttpDestination> d = Make(Options());
  ASSERT_NE(d, nullptr);
  constexpr int kThreads = 4;
  constexpr int kBatches = 10;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        const uint64_t offset = static_cast<uint64_t>(b) * 2;
        DeliveryReport report;
        const absl::Status s = d->Deliver(
            MakeBatch("orders", static_cast<uint32_t>(t), offset, offset + 1,
                      {absl::StrCat(R"({"t":)", t, R"(,"b":)", b, "}"), R"({"x":true})"}),
            &report);
        if (!s.ok()) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(server_.RequestCount(), static_cast<size_t>(kThreads * kBatches));
  EXPECT_EQ(server_.AcceptedKeys().size(), static_cast<size_t>(kThreads * kBatches));
  EXPECT_EQ(server_.DuplicateCount(), 0u);
  EXPECT_GE(max_in_flight.load(), 2);  // the calls really ran in parallel
  for (const HttpRequest& r : server_.Requests()) {
    const std::string partition = r.HeaderOr("X-Wharf-Partition");
    EXPECT_NE(r.body.find(absl::StrCat(R"({"t":)", partition, ",")), std::string::npos) << r.body;
  }
}

TEST(HttpDestination, CreateRejectsInvalidOptions) {
  const std::string existing = ::testing::TempDir();
  struct Case {
    std::string what;
    std::function<void(HttpDestinationOptions*)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"empty url", [](auto* o) { o->url = ""; }, "url must be set"},
      {"ftp scheme", [](auto* o) { o->url = "ftp://127.0.0.1/x"; }, "http:// or https://"},
      {"no scheme", [](auto* o) { o->url = "127.0.0.1:8080/x"; }, "http:// or https://"},
      {"no host", [](auto* o) { o->url = "http:///path"; }, "url has no host"},
      {"nothing after the scheme", [](auto* o) { o->url = "https://"; }, "url has no host"},
      {"empty host with port", [](auto* o) { o->url = "http://:80/x"; }, "url is not valid"},
      {"space in url", [](auto* o) { o->url = "http://127.0.0.1/a b"; }, "whitespace"},
      {"newline in url", [](auto* o) { o->url = "http://127.0.0.1/a\r\nX: y"; }, "whitespace"},
      {"bad port", [](auto* o) { o->url = "http://127.0.0.1:99999/"; }, "url is not valid"},
      {"CR/LF in header value",
       [](auto* o) {
         o->headers = {{"X-Tenant", "acme\r\nX-Evil: 1"}};
       },
       "control character"},
      {"LF in header value",
       [](auto* o) {
         o->headers = {{"X-Tenant", "a\nb"}};
       },
       "control character"},
      {"bad header name",
       [](auto* o) {
         o->headers = {{"X Tenant", "a"}};
       },
       "not a valid field name"},
      {"header name with colon",
       [](auto* o) {
         o->headers = {{"X-A:", "a"}};
       },
       "not a valid field name"},
      {"empty header name",
       [](auto* o) {
         o->headers = {{"", "a"}};
       },
       "not a valid field name"},
      {"reserved header",
       [](auto* o) {
         o->headers = {{"content-length", "5"}};
       },
       "set by Wharf"},
      {"reserved X-Wharf header",
       [](auto* o) {
         o->headers = {{"X-Wharf-Dataset", "x"}};
       },
       "set by Wharf"},
      {"token and Authorization",
       [](auto* o) {
         o->bearer_token = "abc";
         o->headers = {{"Authorization", "Basic eA=="}};
       },
       "both bearer_token"},
      {"token with newline", [](auto* o) { o->bearer_token = "t0psecret\n"; }, "trailing newline"},
      {"missing CA file", [](auto* o) { o->ca_file = "/nonexistent/wharf-ca.pem"; },
       "ca_file /nonexistent/wharf-ca.pem: No such file or directory"},
      {"CA file is a directory", [&](auto* o) { o->ca_file = existing; }, "not a regular file"},
      {"missing client cert", [](auto* o) { o->client_cert_file = "/nonexistent/cert.pem"; },
       "client_cert_file"},
      {"key without cert", [](auto* o) { o->client_key_file = "/nonexistent/key.pem"; },
       "client_cert_file is not"},
      {"zero timeout", [](auto* o) { o->request_timeout = milliseconds(0); }, "positive"},
      {"negative connect timeout", [](auto* o) { o->connect_timeout = milliseconds(-1); },
       "positive"},
      {"negative retry cap", [](auto* o) { o->max_retry_after = milliseconds(-1); },
       "max_retry_after"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    HttpDestinationOptions options;
    options.name = "sink";
    options.url = "http://127.0.0.1:1/ingest";
    c.change(&options);
    absl::StatusOr<std::unique_ptr<HttpDestination>> d = HttpDestination::Create(options);
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << d.status();
    EXPECT_TRUE(MessageContains(d.status(), c.message));
    EXPECT_EQ(std::string(d.status().message()).rfind("http destination sink: ", 0), 0u)
        << d.status();
    EXPECT_TRUE(MessageOmits(d.status(), "t0psecret"));
    EXPECT_TRUE(MessageOmits(d.status(), "acme"));
  }
  // Valid variants are accepted.
  for (const char* url :
       {"http://127.0.0.1:1/x", "HTTPS://example.invalid/path?q=1", "http://[::1]:8080/"}) {
    HttpDestinationOptions options;
    options.url = url;
    EXPECT_TRUE(HttpDestination::Create(options).ok()) << url;
  }
}

// ---------------------------------------------------------------------------------------------
// TLS options against a real HTTPS server (the test server in TLS mode).

// A throwaway PKI made once per suite with the openssl CLI: a CA, a server certificate for
// IP 127.0.0.1 and a client certificate, both issued by that CA and valid for two days.
class HttpDestinationTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ::wharf::testing::TempDir();
    pki_error_ = new std::string(MakePki());
  }
  static void TearDownTestSuite() {
    delete pki_error_;
    pki_error_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(pki_error_->empty()) << *pki_error_; }

  static std::string File(const std::string& name) { return dir_->path() + "/" + name; }

  // Runs openssl; returns "" or what went wrong.
  static std::string OpenSsl(std::vector<std::string> args) {
    args.insert(args.begin(), "/usr/bin/openssl");
    const auto [code, output] = ::wharf::testing::RunCommand(args);
    if (code == 0) return "";
    return absl::StrCat("openssl ", args[1], " exited ", code, ": ", output);
  }

  static std::string Issue(const std::string& name, const std::string& extensions) {
    {
      std::ofstream ext(File(name + ".ext"));
      ext << extensions;
      if (!ext) return "cannot write " + File(name + ".ext");
    }
    std::string e =
        OpenSsl({"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", File(name + ".key"), "-out", File(name + ".csr"), "-subj",
                 "/CN=wharf-test-" + name});
    if (!e.empty()) return e;
    return OpenSsl({"x509", "-req", "-in", File(name + ".csr"), "-CA", File("ca.pem"), "-CAkey",
                    File("ca.key"), "-set_serial", name == "server" ? "2" : "3", "-days", "2",
                    "-extfile", File(name + ".ext"), "-out", File(name + ".pem")});
  }

  static std::string MakePki() {
    std::string e =
        OpenSsl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", File("ca.key"), "-out", File("ca.pem"), "-days", "2", "-subj",
                 "/CN=wharf-test-ca", "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                 "keyUsage=critical,keyCertSign,cRLSign"});
    if (!e.empty()) return e;
    e = Issue("server",
              "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n"
              "extendedKeyUsage=serverAuth\n");
    if (!e.empty()) return e;
    return Issue("client", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  }

  static HttpTestServerTlsOptions ServerTls(bool require_client_cert = false) {
    HttpTestServerTlsOptions tls;
    tls.cert_file = File("server.pem");
    tls.key_file = File("server.key");
    if (require_client_cert) tls.client_ca_file = File("ca.pem");
    return tls;
  }

  static HttpDestinationOptions Options(const HttpTestServer& server) {
    HttpDestinationOptions options;
    options.name = "sink";
    options.url = server.Url("/ingest");
    options.connect_timeout = milliseconds(2000);
    options.request_timeout = milliseconds(5000);
    return options;
  }

  static absl::Status Deliver(const HttpDestinationOptions& options) {
    absl::StatusOr<std::unique_ptr<HttpDestination>> d = HttpDestination::Create(options);
    if (!d.ok()) return absl::InternalError(absl::StrCat("Create: ", d.status().ToString()));
    DeliveryReport report;
    return (*d)->Deliver(MakeBatch("orders", 1, 10, 11, {R"({"id":1})", R"({"id":2})"}), &report);
  }

  // The server counts a failed handshake after alerting the client; wait up to 5 s for it.
  static bool WaitForTlsFailures(const HttpTestServer& server, size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (server.TlsHandshakeFailures() < n) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return true;
  }

  static ::wharf::testing::TempDir* dir_;
  static std::string* pki_error_;
};

::wharf::testing::TempDir* HttpDestinationTlsTest::dir_ = nullptr;
std::string* HttpDestinationTlsTest::pki_error_ = nullptr;

constexpr char kTlsBody[] = "{\"id\":1}\n{\"id\":2}\n";

bool IsRetryableOrConfiguration(absl::StatusCode code) {
  return code == absl::StatusCode::kFailedPrecondition || code == absl::StatusCode::kUnavailable;
}

TEST_F(HttpDestinationTlsTest, TrustedCaFileDelivers) {
  HttpTestServer server(ServerTls());
  ASSERT_TRUE(server.Start().ok());
  ASSERT_EQ(server.Url("/x").rfind("https://127.0.0.1:", 0), 0u) << server.Url("/x");
  HttpDestinationOptions options = Options(server);
  options.ca_file = File("ca.pem");
  const absl::Status s = Deliver(options);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(server.RequestCount(), 1u);
  EXPECT_EQ(server.Requests()[0].path, "/ingest");
  EXPECT_EQ(server.Requests()[0].body, kTlsBody);
  EXPECT_EQ(server.TlsHandshakeFailures(), 0u);
}

TEST_F(HttpDestinationTlsTest, UntrustedServerCertificateIsFailedPrecondition) {
  HttpTestServer server(ServerTls());
  ASSERT_TRUE(server.Start().ok());
  // System CAs only: they never issued our throwaway CA. A verification failure is a
  // configuration problem (CURLE_PEER_FAILED_VERIFICATION, or CURLE_SSL_CACERT_BADFILE on a host
  // without a CA bundle), both FAILED_PRECONDITION in the destination.
  const absl::Status system_cas = Deliver(Options(server));
  EXPECT_EQ(system_cas.code(), absl::StatusCode::kFailedPrecondition) << system_cas;
  // A CA file that did not issue the server certificate (the client certificate is no CA).
  HttpDestinationOptions options = Options(server);
  options.ca_file = File("client.pem");
  const absl::Status wrong_ca = Deliver(options);
  EXPECT_EQ(wrong_ca.code(), absl::StatusCode::kFailedPrecondition) << wrong_ca;
  EXPECT_EQ(server.RequestCount(), 0u);
  EXPECT_TRUE(WaitForTlsFailures(server, 2)) << server.TlsHandshakeFailures();
}

TEST_F(HttpDestinationTlsTest, InsecureSkipVerifyDelivers) {
  HttpTestServer server(ServerTls());
  ASSERT_TRUE(server.Start().ok());
  HttpDestinationOptions options = Options(server);
  options.insecure_skip_verify = true;
  const absl::Status s = Deliver(options);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(server.RequestCount(), 1u);
  EXPECT_EQ(server.Requests()[0].body, kTlsBody);
}

TEST_F(HttpDestinationTlsTest, ClientCertificateIsPresentedWhenRequired) {
  HttpTestServer server(ServerTls(/*require_client_cert=*/true));
  ASSERT_TRUE(server.Start().ok());
  HttpDestinationOptions options = Options(server);
  options.ca_file = File("ca.pem");
  options.client_cert_file = File("client.pem");
  options.client_key_file = File("client.key");
  const absl::Status s = Deliver(options);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_EQ(server.RequestCount(), 1u);
  EXPECT_EQ(server.Requests()[0].body, kTlsBody);
  EXPECT_EQ(server.TlsHandshakeFailures(), 0u);
}

TEST_F(HttpDestinationTlsTest, MissingClientCertificateFailsWithoutContentError) {
  HttpTestServer server(ServerTls(/*require_client_cert=*/true));
  ASSERT_TRUE(server.Start().ok());
  HttpDestinationOptions options = Options(server);
  options.ca_file = File("ca.pem");
  const absl::Status s = Deliver(options);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(IsRetryableOrConfiguration(s.code())) << s;
  EXPECT_EQ(server.RequestCount(), 0u);
  EXPECT_TRUE(WaitForTlsFailures(server, 1)) << server.TlsHandshakeFailures();
}

TEST_F(HttpDestinationTlsTest, PlainHttpToTheTlsServerIsRefusedAndServingContinues) {
  HttpTestServer server(ServerTls());
  ASSERT_TRUE(server.Start().ok());
  {
    RawClient raw(server.port());
    ASSERT_TRUE(raw.connected());
    raw.Send("POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    // Whatever the server answers (an alert or nothing), it is no HTTP response.
    EXPECT_EQ(raw.ReadUntil().find("HTTP/1.1"), std::string::npos);
  }
  HttpDestinationOptions plain = Options(server);
  plain.url = absl::StrCat("http://127.0.0.1:", server.port(), "/ingest");
  const absl::Status s = Deliver(plain);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(server.RequestCount(), 0u);
  EXPECT_TRUE(WaitForTlsFailures(server, 2)) << server.TlsHandshakeFailures();

  HttpDestinationOptions options = Options(server);
  options.ca_file = File("ca.pem");
  const absl::Status ok = Deliver(options);
  ASSERT_TRUE(ok.ok()) << ok;
  EXPECT_EQ(server.RequestCount(), 1u);
}

TEST_F(HttpDestinationTlsTest, TestServerRefusesUnusableCertificates) {
  HttpTestServerTlsOptions missing = ServerTls();
  missing.cert_file = File("does-not-exist.pem");
  HttpTestServer no_cert(missing);
  EXPECT_FALSE(no_cert.Start().ok());

  HttpTestServerTlsOptions mismatched = ServerTls();
  mismatched.key_file = File("client.key");  // not the server certificate's key
  HttpTestServer wrong_key(mismatched);
  EXPECT_FALSE(wrong_key.Start().ok());

  HttpTestServerTlsOptions bad_ca = ServerTls();
  bad_ca.client_ca_file = File("server.ext");  // not PEM
  HttpTestServer no_ca(bad_ca);
  EXPECT_FALSE(no_ca.Start().ok());
}

}  // namespace
}  // namespace wharf::pipeline
