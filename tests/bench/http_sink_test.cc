#include "bench/http_sink.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

namespace wharf::bench {
namespace {

constexpr char kOk[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

// A client connection to the sink with a 5 s receive timeout, so no test can hang.
class Client {
 public:
  explicit Client(int port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    timeval timeout = {5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<uint16_t>(port));
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  }
  ~Client() { ::close(fd_); }

  bool connected() const { return connected_; }

  void Send(const std::string& data) {
    ASSERT_EQ(::send(fd_, data.data(), data.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(data.size()));
  }
  void CloseWrite() { ::shutdown(fd_, SHUT_WR); }

  // Reads exactly `n` bytes (fewer if the connection closes or the timeout hits).
  std::string Read(size_t n) {
    std::string out;
    char buffer[4096];
    while (out.size() < n) {
      const ssize_t r = ::recv(fd_, buffer, std::min(sizeof(buffer), n - out.size()), 0);
      if (r <= 0) break;
      out.append(buffer, static_cast<size_t>(r));
    }
    return out;
  }
  // Reads until the server closes the connection; false on timeout.
  bool ReadToEnd(std::string* out) {
    char buffer[4096];
    while (true) {
      const ssize_t r = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (r == 0) return true;
      if (r < 0) return false;
      out->append(buffer, static_cast<size_t>(r));
    }
  }

 private:
  const int fd_;
  bool connected_ = false;
};

std::string Post(const std::string& body, const std::string& extra = "") {
  return "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n" + extra + "\r\n" + body;
}

class HttpSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sink = HttpSink::Start();
    ASSERT_TRUE(sink.ok()) << sink.status();
    sink_ = std::move(*sink);
  }
  // The status line of a refused request, after which the server closes the connection.
  std::string Refused(const std::string& request) {
    Client client(sink_->port());
    EXPECT_TRUE(client.connected());
    client.Send(request);
    std::string response;
    EXPECT_TRUE(client.ReadToEnd(&response)) << "the connection was not closed";
    return response.substr(0, response.find("\r\n"));
  }

  std::unique_ptr<HttpSink> sink_;
};

TEST_F(HttpSinkTest, CountsRequestsBytesAndLinesOnOneKeptAliveConnection) {
  Client client(sink_->port());
  ASSERT_TRUE(client.connected());
  client.Send(Post("{\"a\":1}\n{\"a\":2}\n"));
  EXPECT_EQ(client.Read(sizeof(kOk) - 1), kOk);
  client.Send(Post("{\"a\":3}\n"));
  EXPECT_EQ(client.Read(sizeof(kOk) - 1), kOk);
  EXPECT_EQ(sink_->requests(), 2u);
  EXPECT_EQ(sink_->lines(), 3u);
  EXPECT_EQ(sink_->body_bytes(), 24u);
  EXPECT_EQ(sink_->bad_requests(), 0u);
}

TEST_F(HttpSinkTest, HandlesPipelinedRequestsAndBodiesSplitOverReads) {
  Client client(sink_->port());
  ASSERT_TRUE(client.connected());
  const std::string big(300 << 10, 'x');  // larger than one read chunk
  client.Send(Post("1\n2\n") + Post(big + "\n"));
  EXPECT_EQ(client.Read(2 * (sizeof(kOk) - 1)), std::string(kOk) + kOk);
  const std::string request = Post("3\n");
  client.Send(request.substr(0, 10));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  client.Send(request.substr(10));
  EXPECT_EQ(client.Read(sizeof(kOk) - 1), kOk);
  EXPECT_EQ(sink_->requests(), 3u);
  EXPECT_EQ(sink_->lines(), 4u);
  EXPECT_EQ(sink_->body_bytes(), 4u + big.size() + 1 + 2);
}

TEST_F(HttpSinkTest, ConnectionCloseIsHonoured) {
  Client client(sink_->port());
  ASSERT_TRUE(client.connected());
  client.Send(Post("x\n", "Connection: close\r\n"));
  std::string response;
  EXPECT_TRUE(client.ReadToEnd(&response));
  EXPECT_EQ(response.substr(0, 15), "HTTP/1.1 200 OK");
  EXPECT_NE(response.find("Connection: close"), std::string::npos);
  EXPECT_EQ(sink_->requests(), 1u);
}

TEST_F(HttpSinkTest, GetWithoutBodyIsAnswered) {
  Client client(sink_->port());
  ASSERT_TRUE(client.connected());
  client.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(client.Read(sizeof(kOk) - 1), kOk);
  EXPECT_EQ(sink_->body_bytes(), 0u);
}

TEST_F(HttpSinkTest, RefusesMalformedRequests) {
  EXPECT_EQ(Refused("POST /ingest HTTP/1.1\r\nHost: x\r\n\r\nabc"), "HTTP/1.1 411 Length Required");
  EXPECT_EQ(Refused("POST /ingest\r\nContent-Length: 1\r\n\r\nx"), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(Refused("POST  /ingest HTTP/1.1\r\n\r\n"), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(Refused("POST /ingest HTTP/2.0\r\nContent-Length: 0\r\n\r\n"),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(Refused("PO(ST /ingest HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(Refused("POST /ingest HTTP/1.1\r\nContent-Length: 1x\r\n\r\nx"),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(Refused("POST /ingest HTTP/1.1\r\nContent-Length: \r\n\r\n"),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(Refused("POST /ingest HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(Refused("POST /ingest HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(Refused("POST /ingest HTTP/1.1\r\nContent-Length: 9999999999\r\n\r\n"),
            "HTTP/1.1 413 Content Too Large");
  EXPECT_EQ(Refused("POST /ingest HTTP/1.1\r\nno colon here\r\nContent-Length: 0\r\n\r\n"),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(Refused("POST /ingest HTTP/1.1\r\nContent-Length: 0\r\n folded\r\n\r\n"),
            "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(Refused("POST /ingest HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "HTTP/1.1 501 Not Implemented");
  EXPECT_EQ(Refused("POST /ingest HTTP/1.1\r\nX: " + std::string(70 << 10, 'a')),
            "HTTP/1.1 431 Request Header Fields Too Large");
  EXPECT_EQ(sink_->bad_requests(), 14u);
  EXPECT_EQ(sink_->requests(), 0u);
}

TEST_F(HttpSinkTest, TruncatedBodyIsNotCounted) {
  {
    Client client(sink_->port());
    ASSERT_TRUE(client.connected());
    client.Send("POST /ingest HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly a part\n");
    client.CloseWrite();
    std::string response;
    EXPECT_TRUE(client.ReadToEnd(&response));
    EXPECT_EQ(response, "");
  }
  EXPECT_EQ(sink_->requests(), 0u);
  EXPECT_EQ(sink_->lines(), 0u);
}

TEST_F(HttpSinkTest, StopClosesIdleConnections) {
  Client client(sink_->port());
  ASSERT_TRUE(client.connected());
  client.Send(Post("x\n"));
  EXPECT_EQ(client.Read(sizeof(kOk) - 1), kOk);
  const auto start = std::chrono::steady_clock::now();
  sink_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  std::string rest;
  EXPECT_TRUE(client.ReadToEnd(&rest));
  EXPECT_EQ(rest, "");
  sink_->Stop();  // idempotent
  Client late(sink_->port());
  EXPECT_FALSE(late.connected());
}

}  // namespace
}  // namespace wharf::bench
