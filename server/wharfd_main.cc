// wharfd: the Wharf staging daemon.
//
// Exit codes: 0 clean stop, 1 runtime failure (cannot listen, store cannot be opened for a
// reason other than corruption), 2 configuration error, 3 the staging store is damaged
// (corruption detected; the store is never opened short), 4 a write to the staging store
// failed (fsync or write error): restart. The unit restarts on 4 (Restart=on-failure); the
// next start replays the WAL, and producers' retries of unacknowledged requests are
// deduplicated, so nothing acknowledged is lost and nothing is stored twice.
//
// `wharfd --verify --config wharf.yaml` checks the staging store in the config's data_dir offline
// (read-only, while wharfd is stopped) and exits 0 when it is healthy, 3 when it is damaged (the
// report names the files and keys), 1 when it cannot be checked (store in use, no store, I/O).

#include <malloc.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "boost/asio/io_context.hpp"
#include "boost/asio/signal_set.hpp"
#include "boost/asio/steady_timer.hpp"
#include "server/config.h"
#include "server/wharf_server.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"
#include "storage/store_verifier.h"

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitConfig = 2;
constexpr int kExitCorruption = 3;
constexpr int kExitStoreWriteFailed = 4;

// "%*" in a pattern: the log message escaped as a JSON string body.
class JsonEscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    for (char c : std::string_view(msg.payload.data(), msg.payload.size())) {
      switch (c) {
        case '"':
          dest.append(std::string_view("\\\""));
          break;
        case '\\':
          dest.append(std::string_view("\\\\"));
          break;
        case '\n':
          dest.append(std::string_view("\\n"));
          break;
        case '\r':
          dest.append(std::string_view("\\r"));
          break;
        case '\t':
          dest.append(std::string_view("\\t"));
          break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\u%04x", c);
            dest.append(std::string_view(buf));
          } else {
            dest.push_back(c);
          }
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscapedMessage>();
  }
};

void SetUpLogging(const wharf::server::LogConfig& log) {
  auto logger = spdlog::stderr_color_mt("wharfd");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log.level));
  if (log.format == "json") {
    auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    formatter->add_flag<JsonEscapedMessage>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","logger":"%n","thread":%t,"msg":"%*"})");
    spdlog::set_formatter(std::move(formatter));
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  }
  spdlog::flush_on(spdlog::level::info);
}

}  // namespace

#if defined(WHARF_WITH_JEMALLOC)
// wharfd links jemalloc (docs/BENCHMARKS.md, "Allocator, compression and checksums"). Measured end
// to end (ingest, contract, file destination on 2 cores) it delivered about 37% more records per
// second than glibc's malloc, which spent about a fifth of wharfd's CPU in malloc/free with memory
// freed on other threads than it was allocated on. These options keep its RSS within wharfd's 256
// MiB budget: 2 arenas (as with glibc: gRPC's threads allocate requests, the writer frees them),
// freed pages returned to the system after 1 s instead of 10 s, and a background thread doing that
// purging off the request path. jemalloc reads this symbol at its first allocation; MALLOC_CONF in
// the environment is applied after it, so an operator can override any of these.
extern "C" {
// NOLINTNEXTLINE(readability-identifier-naming): the name is jemalloc's.
const char* malloc_conf = "narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true";
}
#endif

int main(int argc, char** argv) {
#if !defined(WHARF_WITH_JEMALLOC)
  // glibc gives each thread that allocates concurrently its own arena, up to 8 per core; gRPC's
  // threads decode requests into theirs, the writer frees them, and memory freed in one arena is
  // not reused by the others. Measured with bench/run.sh backlog (full ingest, destination paused
  // 60 s, then the drain): peak RSS 206 MiB with 2 arenas, 272 MiB with 4, and 293 MiB with the
  // default in a 25 s run. 2 keeps wharfd under its 256 MiB target; the price is ingest: in
  // alternating 15 s runs on a loaded 2-core machine, 51,000 records/s with 2 against 61,000
  // with 4 (docs/BENCHMARKS.md, "Memory"). Set before any thread starts; an explicit
  // MALLOC_ARENA_MAX in the environment wins (e.g. 4 where memory is plentiful).
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
#endif
  CLI::App app{"wharfd: durable data staging daemon"};
  std::string config_path;
  bool check_only = false;
  app.add_option("-c,--config", config_path, "Path of the YAML config file")->required();
  app.add_flag("--check-config", check_only, "Validate the config file and exit");
  bool verify = false;
  app.add_flag("--verify", verify,
               "Check the staging store in data_dir offline (wharfd must be stopped) and exit: "
               "0 healthy, 3 damaged, 1 cannot check");
  app.set_version_flag("--version", WHARF_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitConfig;
  }

  auto config = wharf::server::LoadConfig(config_path);
  if (!config.ok()) {
    std::cerr << "wharfd: invalid configuration: " << config.status().message() << "\n";
    return kExitConfig;
  }
  if (check_only) {
    if (absl::Status st = wharf::server::CheckContracts(*config); !st.ok()) {
      std::cerr << "wharfd: invalid configuration: " << st.message() << "\n";
      return kExitConfig;
    }
    std::cout << "config " << config_path << " is valid: " << config->datasets.size()
              << " dataset(s)\n";
    return 0;
  }
  if (verify) {
    auto report = wharf::storage::VerifyStore(config->data_dir);
    if (!report.ok()) {
      std::cerr << "wharfd --verify: cannot check " << config->data_dir << ": "
                << report.status().message() << "\n";
      return kExitRuntime;
    }
    for (const auto& note : report->notes) std::cout << "  " << note << "\n";
    for (const auto& problem : report->problems) std::cout << "DAMAGED: " << problem << "\n";
    std::cout << "staging store " << config->data_dir << ": "
              << (report->healthy()
                      ? "healthy"
                      : absl::StrCat("damaged (", report->problems.size(), " problem(s))"))
              << "\n";
    return report->healthy() ? 0 : kExitCorruption;
  }
  SetUpLogging(config->log);
  std::signal(SIGPIPE, SIG_IGN);

  auto server = wharf::server::WharfServer::Create(*config);
  if (!server.ok()) {
    if (wharf::server::IsConfigError(server.status())) {
      spdlog::critical("invalid configuration: {}", std::string(server.status().message()));
      return kExitConfig;
    }
    if (server.status().code() == absl::StatusCode::kDataLoss) {
      spdlog::critical("the staging store in {} is damaged and was not opened: {}",
                       config->data_dir, std::string(server.status().message()));
      return kExitCorruption;
    }
    spdlog::critical("cannot start: {}", server.status().ToString());
    return kExitRuntime;
  }
  if (absl::Status st = (*server)->Start(); !st.ok()) {
    spdlog::critical("cannot start: {}", st.ToString());
    (*server)->Stop();
    return kExitRuntime;
  }

  // The main thread runs the control loop: signals and the gauge refresh timer.
  boost::asio::io_context io;
  boost::asio::signal_set stop_signals(io, SIGTERM, SIGINT);
  boost::asio::signal_set hup(io, SIGHUP);
  boost::asio::steady_timer gauges(io);
  bool stopping = false;
  bool store_failed = false;
  int store_exit_code = kExitStoreWriteFailed;
  stop_signals.async_wait([&](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("received signal {}, draining", signo);
    stopping = true;
    gauges.cancel();
    hup.cancel();
  });
  std::function<void(const boost::system::error_code&, int)> on_hup =
      [&](const boost::system::error_code& ec, int) {
        if (ec) return;
        spdlog::warn("SIGHUP: configuration reload is not supported yet; restart to apply");
        hup.async_wait(on_hup);
      };
  hup.async_wait(on_hup);
  std::function<void(const boost::system::error_code&)> tick =
      [&](const boost::system::error_code& ec) {
        if (ec || stopping) return;
        // A failed store write (e.g. EIO from fsync) leaves the store refusing every write
        // until it is reopened; in-process reopening is not attempted: exit and let systemd
        // restart wharfd. Polled once per second.
        if (absl::Status failure = (*server)->StoreFailure(); !failure.ok()) {
          // Corruption found while running (a compaction or read met a damaged block) is not
          // cured by a restart: exit as for a damaged store, which systemd does not restart.
          store_exit_code = absl::IsDataLoss(failure) ? kExitCorruption : kExitStoreWriteFailed;
          spdlog::critical(
              "staging store write failed: {}; stopping without writing to the store, exit "
              "code {} ({})",
              failure.ToString(), store_exit_code,
              store_exit_code == kExitCorruption ? "store damaged" : "store write failed; restart");
          store_failed = true;
          stopping = true;
          stop_signals.cancel();
          hup.cancel();
          return;
        }
        (*server)->RefreshGauges();
        gauges.expires_after(std::chrono::seconds(1));
        gauges.async_wait(tick);
      };
  gauges.expires_after(std::chrono::milliseconds(100));
  gauges.async_wait(tick);
  io.run();

  if (store_failed) {
    // Bounded: if stopping hangs (a destination that does not answer), exit anyway. That is
    // as safe as kill -9: every acknowledged record is durable, nothing depends on this stop.
    const auto bound = config->shutdown_timeout;
    const int exit_code = store_exit_code;
    std::thread([bound, exit_code] {
      std::this_thread::sleep_for(bound);
      spdlog::critical("stop after the store failure took longer than {} ms; exiting now",
                       bound.count());
      spdlog::shutdown();
      ::_exit(exit_code);
    }).detach();
    (*server)->StopAfterStoreFailure();
    spdlog::critical("wharfd exiting with code {}", exit_code);
    return exit_code;
  }
  // Bounded like the stop after a store failure: `shutdown_timeout` is the promised bound of a
  // graceful stop, and a delivery blocked in a destination that does not answer (a stopped
  // database before its client-side timeouts fire, an HTTP sink under a long request_timeout)
  // would otherwise hold the stop, and the service manager, until the destination comes back.
  // Exiting then is as safe as kill -9: every acknowledged record is durable in the store and a
  // delivery cut short is redelivered (destinations are idempotent by batch id).
  const auto bound = config->shutdown_timeout;
  std::thread([bound] {
    std::this_thread::sleep_for(bound);
    spdlog::critical("graceful stop took longer than shutdown_timeout ({} ms); exiting now",
                     bound.count());
    spdlog::shutdown();
    ::_exit(kExitRuntime);
  }).detach();
  (*server)->Stop();
  spdlog::info("wharfd exiting");
  return 0;
}
