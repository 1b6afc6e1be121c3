#include "tests/support/http_test_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

namespace wharf::testing {
namespace {

constexpr size_t kMaxHeadBytes = 64 * 1024;
constexpr size_t kMaxBodyBytes = 64 * 1024 * 1024;
constexpr size_t kMaxChunkLineBytes = 1024;

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLower(a[i]) != AsciiLower(b[i])) return false;
  }
  return true;
}

std::string_view TrimWhitespace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// RFC 9110 token characters (header names, methods).
bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Parses a non-empty run of decimal digits without overflow. No sign, no whitespace.
std::optional<uint64_t> ParseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  return value;
}

std::optional<uint64_t> ParseHex(std::string_view s) {
  if (s.empty() || s.size() > 15) return std::nullopt;
  uint64_t value = 0;
  for (char c : s) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    value = value * 16 + static_cast<uint64_t>(digit);
  }
  return value;
}

// Decompresses one complete gzip member; nullopt if the data is not exactly that or inflates to
// more than kMaxBodyBytes.
std::optional<std::string> Gunzip(const std::string& in) {
  z_stream zs{};
  // 16 + MAX_WBITS: expect a gzip header and trailer (CRC and size are checked by zlib).
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return std::nullopt;
  std::string out;
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());  // bodies are capped far below 4 GiB
  char buf[16384];
  int rc = Z_OK;
  while (rc == Z_OK) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) break;
    out.append(buf, sizeof(buf) - zs.avail_out);
    if (out.size() > kMaxBodyBytes) {
      rc = Z_MEM_ERROR;
      break;
    }
    if (rc == Z_OK && zs.avail_in == 0 && zs.avail_out != 0) {
      rc = Z_DATA_ERROR;  // input ended before the end of the stream
      break;
    }
  }
  const bool complete = rc == Z_STREAM_END && zs.avail_in == 0;
  inflateEnd(&zs);
  if (!complete) return std::nullopt;
  return out;
}

std::string ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Status";
  }
}

bool HasHeader(const std::vector<std::pair<std::string, std::string>>& headers,
               std::string_view name) {
  return std::any_of(headers.begin(), headers.end(),
                     [&](const auto& h) { return EqualsIgnoreCase(h.first, name); });
}

std::string RenderResponse(const HttpResponse& r, bool close) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + ReasonPhrase(r.status) + "\r\n";
  for (const auto& [name, value] : r.headers) out += name + ": " + value + "\r\n";
  if (!HasHeader(r.headers, "Content-Length")) {
    out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  }
  if (close) out += "Connection: close\r\n";
  out += "\r\n";
  out += r.body;
  return out;
}

// Why a connection's request could not be read.
enum class ReadResult { kOk, kClosed, kStopped };

// The most recent OpenSSL error of this thread as text (empty if none).
std::string OpenSslError() {
  const unsigned long code = ERR_peek_last_error();
  if (code == 0) return "";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

// One connection's socket (optionally with TLS) and read buffer. Every wait also watches the
// server's stop event.
// Thread safety: not thread-safe; used by its connection thread only.
class Conn {
 public:
  Conn(int fd, int wake_fd) : fd_(fd), wake_fd_(wake_fd) {}
  ~Conn() { EndTls(); }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Switches to TLS: makes the socket non-blocking (so that every OpenSSL call returns to a poll
  // that also watches the stop event) and runs the server side of the handshake. kOk when it
  // completed; kClosed when it failed (the peer got an alert if there was one to send).
  ReadResult StartTls(SSL_CTX* ctx) {
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK) != 0) return ReadResult::kClosed;
    ssl_ = SSL_new(ctx);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) return ReadResult::kClosed;
    return TlsLoop([&] { return SSL_accept(ssl_); });
  }

  // Sends close_notify (best effort, no waiting) and frees the TLS state. Must run before the
  // descriptor is closed. No-op without TLS.
  void EndTls() {
    if (ssl_ == nullptr) return;
    // After a fatal error OpenSSL forbids SSL_shutdown.
    if (!tls_fatal_ && SSL_is_init_finished(ssl_)) SSL_shutdown(ssl_);
    SSL_free(ssl_);
    ssl_ = nullptr;
  }

  // Appends whatever is available (waiting for at least one byte).
  ReadResult Fill() {
    if (ssl_ != nullptr) {
      char buf[16384];
      int n = 0;
      const ReadResult r = TlsLoop([&] { return n = SSL_read(ssl_, buf, sizeof(buf)); });
      if (r == ReadResult::kOk) in_.append(buf, static_cast<size_t>(n));
      return r;
    }
    if (!WaitFor(POLLIN, -1)) return ReadResult::kStopped;
    char buf[16384];
    while (true) {
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) {
        in_.append(buf, static_cast<size_t>(n));
        return ReadResult::kOk;
      }
      if (n < 0 && errno == EINTR) continue;
      return ReadResult::kClosed;  // EOF or reset
    }
  }

  // False if the peer is gone or the server stops.
  bool WriteAll(std::string_view data) {
    if (ssl_ != nullptr) {
      while (!data.empty()) {
        // Without SSL_MODE_ENABLE_PARTIAL_WRITE a successful SSL_write wrote all it was given;
        // a retry after WANT_READ/WANT_WRITE repeats the same arguments, as OpenSSL requires.
        const int len = static_cast<int>(std::min<size_t>(data.size(), 1 << 20));
        int n = 0;
        if (TlsLoop([&] { return n = SSL_write(ssl_, data.data(), len); }) != ReadResult::kOk) {
          return false;
        }
        data.remove_prefix(static_cast<size_t>(n));
      }
      return true;
    }
    while (!data.empty()) {
      if (!WaitFor(POLLOUT, -1)) return false;
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return false;
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Waits `delay`; false if the server stops meanwhile.
  bool Sleep(std::chrono::milliseconds delay) {
    const auto deadline = std::chrono::steady_clock::now() + delay;
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return true;
      pollfd p{wake_fd_, POLLIN, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
      if (rc > 0) return false;
    }
  }

  std::string& in() { return in_; }

 private:
  // Waits until fd_ has `events` or the server stops (false).
  bool WaitFor(short events, int timeout_ms) {
    while (true) {
      pollfd p[2] = {{fd_, events, 0}, {wake_fd_, POLLIN, 0}};
      const int rc = ::poll(p, 2, timeout_ms);
      if (rc < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      if (p[1].revents != 0) return false;
      if (p[0].revents != 0) return true;  // also POLLHUP/POLLERR: the read/write reports it
    }
  }

  // Calls `op` (an SSL_* I/O call returning > 0 on success) until it succeeds, waiting on the
  // socket for whatever OpenSSL wants. kStopped if the server stops, kClosed on EOF or errors.
  template <typename Op>
  ReadResult TlsLoop(Op op) {
    while (true) {
      ERR_clear_error();
      const int rc = op();
      if (rc > 0) return ReadResult::kOk;
      const int err = SSL_get_error(ssl_, rc);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        if (!WaitFor(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, -1)) {
          return ReadResult::kStopped;
        }
        continue;
      }
      if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_SSL) tls_fatal_ = true;
      return ReadResult::kClosed;
    }
  }

  int fd_;
  int wake_fd_;
  SSL* ssl_ = nullptr;
  bool tls_fatal_ = false;  // an SSL call failed fatally: no close_notify
  std::string in_;
};

// A request that cannot be served: the status to answer with and why.
struct Malformed {
  int status;
  std::string reason;
};

// Parses the head (without the final CRLF CRLF) into `req`.
std::optional<Malformed> ParseHead(std::string_view head, HttpRequest* req) {
  const size_t line_end = head.find("\r\n");
  const std::string_view request_line = head.substr(0, line_end);
  const size_t sp1 = request_line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : request_line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || request_line.find(' ', sp2 + 1) != std::string_view::npos) {
    return Malformed{400, "bad request line"};
  }
  req->method = std::string(request_line.substr(0, sp1));
  req->target = std::string(request_line.substr(sp1 + 1, sp2 - sp1 - 1));
  req->version = std::string(request_line.substr(sp2 + 1));
  if (!IsToken(req->method)) return Malformed{400, "bad method"};
  if (req->target.empty() || std::any_of(req->target.begin(), req->target.end(), [](char c) {
        return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
      })) {
    return Malformed{400, "bad request target"};
  }
  if (req->version != "HTTP/1.1" && req->version != "HTTP/1.0") {
    return Malformed{400, "unsupported HTTP version"};
  }
  req->path = req->target.substr(0, req->target.find('?'));
  if (line_end == std::string_view::npos) return std::nullopt;
  std::string_view rest = head.substr(line_end + 2);
  while (!rest.empty()) {
    const size_t end = rest.find("\r\n");
    const std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 2);
    const size_t colon = line.find(':');
    // Obsolete line folding (a line starting with whitespace) and whitespace before the colon
    // are rejected, as RFC 9112 requires of servers.
    if (colon == std::string_view::npos || !IsToken(line.substr(0, colon))) {
      return Malformed{400, "bad header field"};
    }
    const std::string_view value = TrimWhitespace(line.substr(colon + 1));
    if (std::any_of(value.begin(), value.end(),
                    [](char c) { return c == '\0' || c == '\r' || c == '\n'; })) {
      return Malformed{400, "bad header value"};
    }
    req->headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> HttpRequest::Header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (EqualsIgnoreCase(n, name)) return v;
  }
  return std::nullopt;
}

std::string HttpRequest::HeaderOr(std::string_view name) const { return Header(name).value_or(""); }

HttpTestServer::HttpTestServer() = default;

HttpTestServer::HttpTestServer(HttpTestServerTlsOptions tls) : tls_(std::move(tls)) {}

HttpTestServer::~HttpTestServer() {
  Stop();
  // Every connection thread (the only users of the context) was joined by Stop().
  SSL_CTX_free(ssl_ctx_);
}

absl::Status HttpTestServer::Start() {
  std::lock_guard<std::mutex> lifecycle(lifecycle_mu_);
  if (started_) return absl::FailedPreconditionError("HttpTestServer: already started");
  if (tls_ && ssl_ctx_ == nullptr) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == nullptr) return absl::InternalError("SSL_CTX_new: " + OpenSslError());
    auto fail = [ctx](const std::string& what) {
      const absl::Status s =
          absl::InvalidArgumentError("HttpTestServer TLS: " + what + ": " + OpenSslError());
      SSL_CTX_free(ctx);
      return s;
    };
    ERR_clear_error();
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) return fail("min version");
    if (SSL_CTX_use_certificate_chain_file(ctx, tls_->cert_file.c_str()) != 1) {
      return fail("certificate " + tls_->cert_file);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, tls_->key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      return fail("private key " + tls_->key_file);
    }
    if (!tls_->client_ca_file.empty()) {
      const char* ca = tls_->client_ca_file.c_str();
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca);
      if (names == nullptr || SSL_CTX_load_verify_locations(ctx, ca, nullptr) != 1) {
        if (names != nullptr) sk_X509_NAME_pop_free(names, X509_NAME_free);
        return fail("client CA " + tls_->client_ca_file);
      }
      SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
    ssl_ctx_ = ctx;
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return absl::InternalError(std::string("eventfd: ") + std::strerror(errno));
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) {
    const int err = errno;
    ::close(wake_fd_);
    wake_fd_ = -1;
    return absl::InternalError(std::string("socket: ") + std::strerror(err));
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 128) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(listen_fd_);
    listen_fd_ = -1;
    ::close(wake_fd_);
    wake_fd_ = -1;
    return absl::InternalError(std::string("bind/listen 127.0.0.1: ") + std::strerror(err));
  }
  port_ = ntohs(addr.sin_port);
  started_ = true;
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void HttpTestServer::Stop() {
  std::lock_guard<std::mutex> lifecycle(lifecycle_mu_);
  if (stopped_) return;
  stopped_ = true;
  if (!started_) {
    if (wake_fd_ >= 0) ::close(wake_fd_);
    wake_fd_ = -1;
    return;
  }
  // The eventfd stays readable from now on: every poll of every thread returns.
  const uint64_t one = 1;
  while (::write(wake_fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
  accept_thread_.join();
  // The accept thread is gone, so nobody adds to or removes from connections_ any more; the
  // connection threads only touch their `done` flag (under mu_), not the list.
  for (Connection& c : connections_) {
    if (c.thread.joinable()) c.thread.join();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    connections_.clear();
  }
  ::close(listen_fd_);
  listen_fd_ = -1;
  ::close(wake_fd_);
  wake_fd_ = -1;
}

std::string HttpTestServer::Url(std::string_view path) const {
  return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) +
         std::string(path);
}

void HttpTestServer::ReapFinishedConnections() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (it->done) {
      // The thread is past its last use of mu_-guarded state (it set `done` last) and about to
      // return, so this join is short; it is done under mu_ only by the accept thread.
      it->thread.join();
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void HttpTestServer::AcceptLoop() {
  while (true) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    const int rc = ::poll(p, 2, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents != 0) return;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // ECONNABORTED, EMFILE, ...: keep serving the others
    std::lock_guard<std::mutex> lock(mu_);
    ReapFinishedConnections();
    Connection& c = connections_.emplace_back();
    c.fd = fd;
    c.id = next_connection_id_++;
    Connection* connection = &c;
    c.thread = std::thread([this, connection] { Serve(connection); });
  }
}

void HttpTestServer::Serve(Connection* connection) {
  Conn conn(connection->fd, wake_fd_);
  bool keep_going = true;
  if (ssl_ctx_ != nullptr) {
    // OpenSSL writes with write(2), not send(MSG_NOSIGNAL): a peer that went away would raise
    // SIGPIPE. That signal is sent to the writing thread, so blocking it here (on this thread
    // only) turns it into the EPIPE error it should be.
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
    const ReadResult r = conn.StartTls(ssl_ctx_);
    if (r != ReadResult::kOk) keep_going = false;
    if (r == ReadResult::kClosed) {
      std::lock_guard<std::mutex> lock(mu_);
      ++tls_failures_;
    }
  }
  auto reject = [&](const Malformed& m) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++malformed_;
    }
    HttpResponse r;
    r.status = m.status;
    r.body = m.reason + "\n";
    conn.WriteAll(RenderResponse(r, /*close=*/true));
  };
  while (keep_going) {
    std::string& in = conn.in();
    // The head.
    size_t head_end = std::string::npos;
    bool closed = false;
    while (true) {
      // Empty lines before a request line are ignored (RFC 9112 2.2); anything else that cannot
      // start a method (a TLS ClientHello, binary junk) is refused at once rather than after
      // waiting for an end of head that may never come.
      while (in.starts_with("\r\n")) in.erase(0, 2);
      if (!in.empty() && !IsTokenChar(in[0]) && in[0] != '\r') {
        reject({400, "not an HTTP request"});
        closed = true;
        break;
      }
      head_end = in.find("\r\n\r\n");
      if (head_end != std::string::npos) break;
      if (in.size() > kMaxHeadBytes) {
        reject({431, "request head too large"});
        closed = true;
        break;
      }
      const ReadResult r = conn.Fill();
      if (r == ReadResult::kOk) continue;
      // A peer closing between requests is normal; closing inside a head is a malformed request
      // (there is nobody left to answer).
      if (r == ReadResult::kClosed && !in.empty()) {
        std::lock_guard<std::mutex> lock(mu_);
        ++malformed_;
      }
      closed = true;
      break;
    }
    if (closed) break;
    if (head_end > kMaxHeadBytes) {
      reject({431, "request head too large"});
      break;
    }
    HttpRequest req;
    req.connection_id = connection->id;
    if (std::optional<Malformed> m = ParseHead(std::string_view(in).substr(0, head_end), &req)) {
      reject(*m);
      break;
    }
    in.erase(0, head_end + 4);

    // The body.
    const std::optional<std::string> te = req.Header("Transfer-Encoding");
    const std::optional<std::string> cl = req.Header("Content-Length");
    if (te && cl) {
      reject({400, "both Transfer-Encoding and Content-Length"});
      break;
    }
    const std::string expect = req.HeaderOr("Expect");
    if (!expect.empty()) {
      if (!EqualsIgnoreCase(expect, "100-continue")) {
        reject({417, "unsupported expectation"});
        break;
      }
      if (in.empty() && !conn.WriteAll("HTTP/1.1 100 Continue\r\n\r\n")) break;
    }
    std::string wire_body;
    bool body_ok = true;
    if (te) {
      if (!EqualsIgnoreCase(*te, "chunked")) {
        reject({400, "unsupported transfer coding"});
        break;
      }
      req.chunked = true;
      // chunk = size [; ext] CRLF data CRLF; last-chunk "0" CRLF; trailer fields; CRLF.
      bool last = false;
      while (body_ok && !last) {
        size_t eol;
        while ((eol = in.find("\r\n")) == std::string::npos && in.size() <= kMaxChunkLineBytes) {
          if (conn.Fill() != ReadResult::kOk) {
            body_ok = false;
            break;
          }
        }
        if (!body_ok) break;
        if (eol == std::string::npos) {
          reject({400, "chunk size line too long"});
          body_ok = false;
          break;
        }
        const std::string_view line = std::string_view(in).substr(0, eol);
        const std::optional<uint64_t> size =
            ParseHex(TrimWhitespace(line.substr(0, line.find(';'))));
        if (!size) {
          reject({400, "bad chunk size"});
          body_ok = false;
          break;
        }
        if (wire_body.size() + *size > kMaxBodyBytes) {
          reject({413, "body too large"});
          body_ok = false;
          break;
        }
        in.erase(0, eol + 2);
        if (*size == 0) {
          last = true;
          // Trailer fields up to an empty line; ignored.
          while (true) {
            while ((eol = in.find("\r\n")) == std::string::npos && in.size() <= kMaxHeadBytes) {
              if (conn.Fill() != ReadResult::kOk) {
                body_ok = false;
                break;
              }
            }
            if (!body_ok) break;
            if (eol == std::string::npos) {
              reject({431, "trailer too large"});
              body_ok = false;
              break;
            }
            in.erase(0, eol + 2);
            if (eol == 0) break;
          }
          break;
        }
        while (in.size() < *size + 2) {
          if (conn.Fill() != ReadResult::kOk) {
            body_ok = false;
            break;
          }
        }
        if (!body_ok) break;
        if (in.compare(*size, 2, "\r\n") != 0) {
          reject({400, "chunk data not followed by CRLF"});
          body_ok = false;
          break;
        }
        wire_body.append(in, 0, *size);
        in.erase(0, *size + 2);
      }
    } else if (cl) {
      const std::optional<uint64_t> length = ParseDecimal(*cl);
      if (!length) {
        reject({400, "bad Content-Length"});
        break;
      }
      if (*length > kMaxBodyBytes) {
        reject({413, "body too large"});
        break;
      }
      while (in.size() < *length) {
        if (conn.Fill() != ReadResult::kOk) {
          body_ok = false;
          break;
        }
      }
      if (body_ok) {
        wire_body = in.substr(0, *length);
        in.erase(0, *length);
      }
    }
    if (!body_ok) {
      break;
    }
    req.wire_body_size = wire_body.size();
    const std::string encoding = req.HeaderOr("Content-Encoding");
    if (encoding.empty() || EqualsIgnoreCase(encoding, "identity")) {
      req.body = std::move(wire_body);
    } else if (EqualsIgnoreCase(encoding, "gzip")) {
      std::optional<std::string> plain = Gunzip(wire_body);
      if (!plain) {
        reject({400, "body is not valid gzip data"});
        break;
      }
      req.body = *std::move(plain);
    } else {
      reject({415, "unsupported Content-Encoding"});
      break;
    }
    req.arrival = std::chrono::steady_clock::now();

    const std::string connection_header = req.HeaderOr("Connection");
    bool close = req.version == "HTTP/1.0" ? !EqualsIgnoreCase(connection_header, "keep-alive")
                                           : EqualsIgnoreCase(connection_header, "close");
    const HttpResponse response = Answer(std::move(req));
    if (response.delay.count() > 0 && !conn.Sleep(response.delay)) break;
    if (response.drop_connection) break;
    if (response.raw) {
      conn.WriteAll(*response.raw);
      break;
    }
    if (!conn.WriteAll(RenderResponse(response, close))) break;
    keep_going = !close;
  }
  // The connection thread owns the descriptor; Stop() never closes it, so it cannot be reused
  // under a thread that still polls it.
  conn.EndTls();
  ::close(connection->fd);
  std::lock_guard<std::mutex> lock(mu_);
  connection->done = true;
}

HttpResponse HttpTestServer::Answer(HttpRequest request) {
  const std::optional<std::string> key = request.Header("Idempotency-Key");
  Handler handler;
  std::optional<HttpResponse> response;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (accept_keys_once_ && key && accepted_.count(*key) > 0) {
      ++duplicates_;
      requests_.push_back(std::move(request));
      requests_cv_.notify_all();
      HttpResponse duplicate;
      duplicate.body = "duplicate\n";
      return duplicate;
    }
    if (handler_) {
      handler = handler_;
    } else if (!queue_.empty()) {
      response = std::move(queue_.front());
      queue_.pop_front();
    } else {
      response = default_response_;
    }
  }
  if (handler) response = handler(request);
  std::lock_guard<std::mutex> lock(mu_);
  if (key && response->status >= 200 && response->status <= 299 && !response->drop_connection &&
      !response->raw) {
    // A concurrent request with the same key may have been accepted while the handler ran.
    if (accept_keys_once_ && accepted_.count(*key) > 0) {
      ++duplicates_;
      response->body = "duplicate\n";
    } else {
      ++accepted_[*key];
    }
  }
  requests_.push_back(std::move(request));
  requests_cv_.notify_all();
  return *std::move(response);
}

void HttpTestServer::EnqueueResponse(HttpResponse response) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_back(std::move(response));
}

void HttpTestServer::SetDefaultResponse(HttpResponse response) {
  std::lock_guard<std::mutex> lock(mu_);
  default_response_ = std::move(response);
}

void HttpTestServer::SetHandler(Handler handler) {
  std::lock_guard<std::mutex> lock(mu_);
  handler_ = std::move(handler);
}

void HttpTestServer::SetAcceptKeysOnce(bool enabled) {
  std::lock_guard<std::mutex> lock(mu_);
  accept_keys_once_ = enabled;
}

std::vector<HttpRequest> HttpTestServer::Requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

size_t HttpTestServer::RequestCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_.size();
}

bool HttpTestServer::WaitForRequests(size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return requests_cv_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
}

int HttpTestServer::AcceptedCount(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = accepted_.find(key);
  return it == accepted_.end() ? 0 : it->second;
}

std::map<std::string, int> HttpTestServer::AcceptedKeys() const {
  std::lock_guard<std::mutex> lock(mu_);
  return accepted_;
}

size_t HttpTestServer::DuplicateCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return duplicates_;
}

size_t HttpTestServer::MalformedCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return malformed_;
}

size_t HttpTestServer::ConnectionCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<size_t>(next_connection_id_ - 1);
}

size_t HttpTestServer::TlsHandshakeFailures() const {
  std::lock_guard<std::mutex> lock(mu_);
  return tls_failures_;
}

size_t HttpTestServer::QueuedResponses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

}  // namespace wharf::testing
