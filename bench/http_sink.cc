#include "bench/http_sink.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace wharf::bench {
namespace {

constexpr size_t kMaxHeaderBytes = 64 << 10;
constexpr uint64_t kMaxBodyBytes = uint64_t{1} << 30;
constexpr size_t kReadChunk = 256 << 10;

absl::Status SocketError(const char* op) {
  return absl::InternalError(absl::StrCat("http sink: ", op, ": ", std::strerror(errno)));
}

// Sends all of `data`. False when the connection is gone.
bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// recv(2) retried on EINTR. <= 0 when the connection is closed or failed.
ssize_t Receive(int fd, char* buffer, size_t size) {
  while (true) {
    const ssize_t n = ::recv(fd, buffer, size, 0);
    if (n < 0 && errno == EINTR) continue;
    return n;
  }
}

// Answers a refused request and closes gracefully: after the answer, the rest of what the client
// sent is read and dropped (at most 1 MiB, 1 s), because closing a socket with unread received
// data makes the kernel send a reset, which can destroy the answer before the client reads it.
void Refuse(int fd, std::string_view response) {
  if (!SendAll(fd, response)) return;
  ::shutdown(fd, SHUT_WR);
  timeval timeout = {1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  char buffer[16 << 10];
  size_t drained = 0;
  while (drained < (1 << 20)) {
    const ssize_t n = Receive(fd, buffer, sizeof(buffer));
    if (n <= 0) return;
    drained += static_cast<size_t>(n);
  }
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool ContainsIgnoreCase(std::string_view haystack, std::string_view needle) {
  if (needle.size() > haystack.size()) return false;
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    if (EqualsIgnoreCase(haystack.substr(i, needle.size()), needle)) return true;
  }
  return false;
}

// RFC 9110 token characters.
bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0) continue;
    if (std::strchr("!#$%&'*+-.^_`|~", c) == nullptr || c == '\0') return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// What the header block of one request says.
struct RequestHead {
  int error_status = 0;  // nonzero: refuse the request with this status
  uint64_t content_length = 0;
  bool close = false;  // close the connection after answering
};

RequestHead ParseHead(std::string_view head) {
  RequestHead result;
  const size_t line_end = head.find("\r\n");
  const std::string_view request_line = head.substr(0, line_end);
  const size_t sp1 = request_line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : request_line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || request_line.find(' ', sp2 + 1) != std::string_view::npos) {
    result.error_status = 400;
    return result;
  }
  const std::string_view method = request_line.substr(0, sp1);
  const std::string_view target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = request_line.substr(sp2 + 1);
  if (!IsToken(method) || target.empty() || (version != "HTTP/1.1" && version != "HTTP/1.0")) {
    result.error_status = 400;
    return result;
  }
  bool keep_alive = version == "HTTP/1.1";
  bool has_length = false;
  std::string_view rest =
      line_end == std::string_view::npos ? std::string_view() : head.substr(line_end + 2);
  while (!rest.empty()) {
    const size_t end = rest.find("\r\n");
    const std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 2);
    const size_t colon = line.find(':');
    // No colon, an empty or non-token name (also obsolete line folding: a leading space).
    if (colon == std::string_view::npos || !IsToken(line.substr(0, colon))) {
      result.error_status = 400;
      return result;
    }
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = Trim(line.substr(colon + 1));
    if (EqualsIgnoreCase(name, "Content-Length")) {
      uint64_t length = 0;
      if (has_length || value.empty() || value.size() > 12) {
        result.error_status = 400;
        return result;
      }
      for (const char c : value) {
        if (c < '0' || c > '9') {
          result.error_status = 400;
          return result;
        }
        length = length * 10 + static_cast<uint64_t>(c - '0');
      }
      if (length > kMaxBodyBytes) {
        result.error_status = 413;
        return result;
      }
      has_length = true;
      result.content_length = length;
    } else if (EqualsIgnoreCase(name, "Transfer-Encoding")) {
      result.error_status = 501;
      return result;
    } else if (EqualsIgnoreCase(name, "Connection")) {
      if (ContainsIgnoreCase(value, "close")) keep_alive = false;
      if (ContainsIgnoreCase(value, "keep-alive")) keep_alive = true;
    }
  }
  if (!has_length && (method == "POST" || method == "PUT" || method == "PATCH")) {
    result.error_status = 411;
    return result;
  }
  result.close = !keep_alive;
  return result;
}

std::string StatusText(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    default:
      return "Error";
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpSink>> HttpSink::Start() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return SocketError("socket");
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;  // the kernel picks a free port
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(fd, 128) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    absl::Status status = SocketError("bind/listen 127.0.0.1:0");
    ::close(fd);
    return status;
  }
  return std::unique_ptr<HttpSink>(new HttpSink(fd, ntohs(address.sin_port)));
}

HttpSink::HttpSink(int listen_fd, int port) : listen_fd_(listen_fd), port_(port) {
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

HttpSink::~HttpSink() { Stop(); }

std::string HttpSink::url() const { return absl::StrCat("http://127.0.0.1:", port_, "/ingest"); }

void HttpSink::Stop() {
  if (stopping_.exchange(true)) return;
  // Wakes the blocked accept() (it fails with EINVAL on a shut-down listening socket).
  ::shutdown(listen_fd_, SHUT_RDWR);
  acceptor_.join();
  ::close(listen_fd_);
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Descriptors are closed under mu_ by their worker, so every fd listed here is still ours.
    for (const int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    workers.swap(workers_);
  }
  for (std::thread& worker : workers) worker.join();
}

void HttpSink::AcceptLoop() {
  while (!stopping_.load()) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_.load()) return;
      if (errno != EINTR && errno != ECONNABORTED) {
        // EMFILE and friends: back off instead of spinning.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::lock_guard<std::mutex> lock(mu_);
    open_fds_.push_back(fd);
    workers_.emplace_back([this, fd] { Serve(fd); });
  }
}

void HttpSink::Serve(int fd) {
  ServeRequests(fd);
  std::lock_guard<std::mutex> lock(mu_);
  open_fds_.erase(std::find(open_fds_.begin(), open_fds_.end(), fd));
  ::close(fd);
}

void HttpSink::ServeRequests(int fd) {
  std::string pending;  // bytes received but not yet consumed (at most a header block + chunk)
  std::vector<char> chunk(kReadChunk);
  while (!stopping_.load()) {
    size_t head_end;
    while ((head_end = pending.find("\r\n\r\n")) == std::string::npos) {
      if (pending.size() > kMaxHeaderBytes) {
        ++bad_requests_;
        Refuse(fd,
               "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
               "Connection: close\r\n\r\n");
        return;
      }
      const ssize_t n = Receive(fd, chunk.data(), chunk.size());
      if (n <= 0) return;  // closed between requests (or mid-header: nothing to answer)
      pending.append(chunk.data(), static_cast<size_t>(n));
    }
    const RequestHead head = ParseHead(std::string_view(pending).substr(0, head_end));
    if (head.error_status != 0) {
      ++bad_requests_;
      Refuse(fd, absl::StrCat("HTTP/1.1 ", head.error_status, " ", StatusText(head.error_status),
                              "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
      return;
    }
    // The body: first what already arrived with the header block, then straight from the socket
    // (counted and dropped, never buffered whole).
    const size_t body_start = head_end + 4;
    const size_t buffered = std::min<uint64_t>(pending.size() - body_start, head.content_length);
    uint64_t newlines =
        std::count(pending.begin() + body_start, pending.begin() + body_start + buffered, '\n');
    pending.erase(0, body_start + buffered);  // what remains belongs to the next request
    uint64_t remaining = head.content_length - buffered;
    while (remaining > 0) {
      const ssize_t n = Receive(fd, chunk.data(),
                                static_cast<size_t>(std::min<uint64_t>(chunk.size(), remaining)));
      if (n <= 0) return;  // truncated body: the client gave up, nothing to answer
      newlines += std::count(chunk.data(), chunk.data() + n, '\n');
      remaining -= static_cast<uint64_t>(n);
    }
    ++requests_;
    body_bytes_ += head.content_length;
    lines_ += newlines;
    if (!SendAll(fd, head.close
                         ? "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                         : "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) {
      return;
    }
    if (head.close) return;
  }
}

}  // namespace wharf::bench
