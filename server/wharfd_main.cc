// wharfd: the Wharf staging daemon.
//
// Exit codes: 0 clean stop, 1 runtime failure (cannot listen, store cannot be opened for a
// reason other than corruption), 2 configuration error, 3 the staging store is damaged
// (corruption detected; the store is never opened short).

#include <malloc.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "CLI/CLI.hpp"
#include "boost/asio/io_context.hpp"
#include "boost/asio/signal_set.hpp"
#include "boost/asio/steady_timer.hpp"
#include "server/config.h"
#include "server/wharf_server.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitConfig = 2;
constexpr int kExitCorruption = 3;

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

int main(int argc, char** argv) {
  // glibc gives each thread that allocates concurrently its own arena, up to 8 per core; gRPC's
  // threads decode requests into theirs, the writer frees them, and memory freed in one arena is
  // not reused by the others. Measured with bench/run.sh backlog (full ingest, destination paused
  // 60 s, then the drain): peak RSS 206 MiB with 2 arenas, 272 MiB with 4, and 293 MiB with the
  // default in a 25 s run. 2 keeps wharfd under its 256 MiB target; the price is ingest: in
  // alternating 15 s runs on a loaded 2-core machine, 51,000 records/s with 2 against 61,000
  // with 4 (docs/BENCHMARKS.md, "Memory"). Set before any thread starts; an explicit
  // MALLOC_ARENA_MAX in the environment wins (e.g. 4 where memory is plentiful).
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
  CLI::App app{"wharfd: durable data staging daemon"};
  std::string config_path;
  bool check_only = false;
  app.add_option("-c,--config", config_path, "Path of the YAML config file")->required();
  app.add_flag("--check-config", check_only, "Validate the config file and exit");
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
    std::cout << "config " << config_path << " is valid: " << config->datasets.size()
              << " dataset(s)\n";
    return 0;
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
        (*server)->RefreshGauges();
        gauges.expires_after(std::chrono::seconds(1));
        gauges.async_wait(tick);
      };
  gauges.expires_after(std::chrono::milliseconds(100));
  gauges.async_wait(tick);
  io.run();

  (*server)->Stop();
  spdlog::info("wharfd exiting");
  return 0;
}
