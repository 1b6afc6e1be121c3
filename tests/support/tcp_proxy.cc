#include "tests/support/tcp_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace wharf::testing {

using Clock = std::chrono::steady_clock;

namespace {

// Bytes read from one side, waiting to be written to the other.
struct Chunk {
  Clock::time_point deliver_at;
  std::string data;
  size_t written = 0;
};

// One direction of a connection.
struct Pipe {
  std::deque<Chunk> chunks;
  size_t queued = 0;       // bytes in chunks not yet written
  bool eof = false;        // the source side finished sending (read returned 0)
  bool shut_down = false;  // the EOF was passed on (shutdown(SHUT_WR) of the destination)
  bool Ready(Clock::time_point now) const {
    return !chunks.empty() && chunks.front().deliver_at <= now;
  }
};

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Closes with an RST instead of a FIN: SO_LINGER on with a zero timeout makes close() abort.
void CloseWithReset(int fd) {
  if (fd < 0) return;
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd);
}

}  // namespace

struct TcpProxy::Conn {
  int client = -1;
  int server = -1;
  Pipe up;    // client -> server
  Pipe down;  // server -> client
  bool dead = false;
};

TcpProxy::TcpProxy(int upstream_port) : upstream_port_(upstream_port) {}

TcpProxy::~TcpProxy() { Stop(); }

std::string TcpProxy::target() const { return absl::StrCat("127.0.0.1:", port_); }

absl::Status TcpProxy::Start() {
  if (thread_.joinable()) return absl::FailedPreconditionError("already started");
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  const int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 4096) != 0) {
    const std::string err = std::strerror(errno);
    close(listen_fd_);
    listen_fd_ = -1;
    return absl::InternalError(absl::StrCat("bind/listen: ", err));
  }
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  SetNonBlocking(listen_fd_);
  if (pipe2(wake_fds_, O_NONBLOCK | O_CLOEXEC) != 0) {
    close(listen_fd_);
    listen_fd_ = -1;
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  stop_.store(false);
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void TcpProxy::Stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  Wake();
  thread_.join();
  close(listen_fd_);
  close(wake_fds_[0]);
  close(wake_fds_[1]);
  listen_fd_ = wake_fds_[0] = wake_fds_[1] = -1;
  // A ResetAll() racing with Stop() must not wait forever.
  std::lock_guard<std::mutex> lock(mu_);
  reset_done_ = reset_requested_;
  reset_cv_.notify_all();
}

void TcpProxy::Wake() {
  const char b = 1;
  // A full pipe already holds a wake-up: the result does not matter.
  [[maybe_unused]] ssize_t n = write(wake_fds_[1], &b, 1);
}

void TcpProxy::SetLatency(std::chrono::milliseconds latency) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    latency_ = latency;
  }
  Wake();
}

size_t TcpProxy::ResetAll() {
  std::unique_lock<std::mutex> lock(mu_);
  if (!thread_.joinable() || stop_.load()) return 0;
  const uint64_t ticket = ++reset_requested_;
  lock.unlock();
  Wake();
  lock.lock();
  reset_cv_.wait(lock, [&] { return reset_done_ >= ticket; });
  return last_reset_count_;
}

void TcpProxy::Stall(Direction direction, std::chrono::milliseconds duration) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const Clock::time_point until = Clock::now() + duration;
    if (direction != Direction::kServerToClient) stall_up_until_ = until;
    if (direction != Direction::kClientToServer) stall_down_until_ = until;
  }
  Wake();
}

void TcpProxy::Loop() {
  std::list<std::unique_ptr<Conn>> conns;
  std::vector<pollfd> fds;
  std::vector<Conn*> owners;  // per pollfd from index 2: the connection
  std::vector<char> buf(64 * 1024);

  auto close_conn = [&](Conn& c, bool reset) {
    if (reset) {
      CloseWithReset(c.client);
      CloseWithReset(c.server);
    } else {
      close(c.client);
      close(c.server);
    }
    c.client = c.server = -1;
    c.dead = true;
  };

  while (!stop_.load()) {
    const Clock::time_point now = Clock::now();
    std::chrono::milliseconds latency;
    bool stall_up, stall_down;
    Clock::time_point stall_up_until, stall_down_until;
    bool reset = false;
    uint64_t reset_ticket = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      latency = latency_;
      stall_up_until = stall_up_until_;
      stall_down_until = stall_down_until_;
      if (reset_requested_ > reset_done_) {
        reset = true;
        reset_ticket = reset_requested_;
      }
    }
    stall_up = now < stall_up_until;
    stall_down = now < stall_down_until;

    if (reset) {
      size_t n = 0;
      for (auto& c : conns) {
        if (c->dead) continue;
        close_conn(*c, /*reset=*/true);
        ++n;
      }
      reset_.fetch_add(n);
      std::lock_guard<std::mutex> lock(mu_);
      reset_done_ = reset_ticket;
      last_reset_count_ = n;
      reset_cv_.notify_all();
    }
    conns.remove_if([](const std::unique_ptr<Conn>& c) { return c->dead; });
    open_.store(conns.size());

    // What to wait for. A side that is neither read nor written (stalled, or its queue full) is
    // left out (negative fd), so that a peer's hang-up is not reported over and over meanwhile.
    fds.clear();
    owners.clear();
    fds.push_back({wake_fds_[0], POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    Clock::time_point next_due = now + std::chrono::milliseconds(50);
    for (auto& c : conns) {
      short client_events = 0, server_events = 0;
      if (!stall_up && !c->up.eof && c->up.queued < kMaxQueuedBytes) client_events |= POLLIN;
      if (!stall_down && !c->down.eof && c->down.queued < kMaxQueuedBytes) {
        server_events |= POLLIN;
      }
      if (!stall_up && !c->up.chunks.empty()) {
        if (c->up.Ready(now)) {
          server_events |= POLLOUT;
        } else {
          next_due = std::min(next_due, c->up.chunks.front().deliver_at);
        }
      }
      if (!stall_down && !c->down.chunks.empty()) {
        if (c->down.Ready(now)) {
          client_events |= POLLOUT;
        } else {
          next_due = std::min(next_due, c->down.chunks.front().deliver_at);
        }
      }
      fds.push_back({client_events != 0 ? c->client : -1, client_events, 0});
      owners.push_back(c.get());
      fds.push_back({server_events != 0 ? c->server : -1, server_events, 0});
      owners.push_back(c.get());
    }
    if (stall_up) next_due = std::min(next_due, stall_up_until);
    if (stall_down) next_due = std::min(next_due, stall_down_until);
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_due - now);
    const int timeout_ms = static_cast<int>(std::max<int64_t>(wait.count(), 0)) + 1;
    if (poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) break;

    if (fds[0].revents != 0) {
      char drain[256];
      while (read(wake_fds_[0], drain, sizeof(drain)) > 0) {
      }
    }
    if (fds[1].revents & POLLIN) {
      while (true) {
        const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client < 0) break;
        const int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons(static_cast<uint16_t>(upstream_port_));
        // A blocking connect on loopback: it completes or is refused at once.
        if (server < 0 || connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
          if (server >= 0) close(server);
          CloseWithReset(client);
          continue;
        }
        SetNonBlocking(server);
        const int one = 1;
        setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        auto c = std::make_unique<Conn>();
        c->client = client;
        c->server = server;
        conns.push_back(std::move(c));
        accepted_.fetch_add(1);
      }
    }

    const Clock::time_point after = Clock::now();
    // Reads `from` into `pipe`; false when the connection must be aborted.
    auto read_side = [&](int from, Pipe& pipe, std::atomic<uint64_t>& counter) {
      while (pipe.queued < kMaxQueuedBytes) {
        const ssize_t n = recv(from, buf.data(), buf.size(), 0);
        if (n > 0) {
          pipe.chunks.push_back(
              Chunk{after + latency, std::string(buf.data(), static_cast<size_t>(n)), 0});
          pipe.queued += static_cast<size_t>(n);
          counter.fetch_add(static_cast<uint64_t>(n));
          continue;
        }
        if (n == 0) {
          pipe.eof = true;
          return true;
        }
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      }
      return true;
    };
    // Writes the due chunks of `pipe` to `to`; false when the connection must be aborted.
    auto write_side = [&](int to, Pipe& pipe) {
      while (pipe.Ready(after)) {
        Chunk& ch = pipe.chunks.front();
        const ssize_t n =
            send(to, ch.data.data() + ch.written, ch.data.size() - ch.written, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        ch.written += static_cast<size_t>(n);
        pipe.queued -= static_cast<size_t>(n);
        if (ch.written == ch.data.size()) pipe.chunks.pop_front();
      }
      return true;
    };

    for (size_t i = 2; i < fds.size(); i += 2) {
      Conn& c = *owners[i - 2];
      const short cr = fds[i].revents;
      const short sr = fds[i + 1].revents;
      bool ok = true;
      bool server_failed = false;
      if (cr & (POLLIN | POLLHUP | POLLERR)) ok = read_side(c.client, c.up, bytes_up_);
      if (ok && (sr & (POLLIN | POLLHUP | POLLERR))) {
        const bool was_eof = c.down.eof;
        ok = read_side(c.server, c.down, bytes_down_);
        // The server ended (or broke) the connection while the client still talked.
        if ((!ok || (!was_eof && c.down.eof)) && !c.up.eof) server_failed = true;
      }
      if (ok && !stall_up) ok = write_side(c.server, c.up);
      if (ok && !stall_down) ok = write_side(c.client, c.down);
      if (server_failed) closed_by_server_.fetch_add(1);
      if (!ok) {
        // A reset or failure on one side is passed on as a reset of the other.
        close_conn(c, /*reset=*/true);
        continue;
      }
      // A finished direction is passed on once everything before the EOF was written.
      if (c.up.eof && c.up.chunks.empty() && !c.up.shut_down) {
        shutdown(c.server, SHUT_WR);
        c.up.shut_down = true;
      }
      if (c.down.eof && c.down.chunks.empty() && !c.down.shut_down) {
        shutdown(c.client, SHUT_WR);
        c.down.shut_down = true;
      }
      if (c.up.shut_down && c.down.shut_down) close_conn(c, /*reset=*/false);
    }
  }
  for (auto& c : conns) {
    if (!c->dead) close_conn(*c, /*reset=*/true);
  }
  open_.store(0);
}

}  // namespace wharf::testing
