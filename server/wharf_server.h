#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/config.h"

namespace wharf::server {

// The whole daemon: staging store, pipeline, destinations, gRPC services and the metrics
// endpoint, wired from one Config.
//
// Lifecycle: Create() opens the store (DATA_LOSS when it is damaged), loads the stored data
// contracts, applies the config's contracts that were edited since the previous start (see
// LoadContracts in wharf_server.cc for the rule) and builds everything;
// Start() starts the writer, the pipeline and the listeners; Stop() drains gracefully:
//   1. the store stops taking appends (UNAVAILABLE, producers retry elsewhere or later) after
//      committing and answering every queued one,
//   2. the gRPC server shuts down, cancelling streams after a short grace period,
//   3. the pipeline finishes its current steps and deliveries and stops,
//   4. memtables are flushed so the next start replays little WAL.
// A crash at any point loses nothing acknowledged: every ack follows a durable write.
//
// Thread safety: Create/Start/Stop from one controlling thread; RefreshGauges from any thread.
class WharfServer {
 public:
  static absl::StatusOr<std::unique_ptr<WharfServer>> Create(const Config& config);
  virtual ~WharfServer() = default;

  virtual absl::Status Start() = 0;
  virtual void Stop() = 0;

  // The port the gRPC server listens on (useful with port 0 in the config).
  virtual int port() const = 0;
  // Updates the status gauges of /metrics (called every second by the daemon's timer).
  virtual void RefreshGauges() = 0;
};

// True when WharfServer::Create() failed because of the configuration rather than the
// environment: a destination's options were refused (INVALID_ARGUMENT from its Create), or a
// secret (password file or variable, bearer token file) is missing, unreadable or empty; the
// hash key file is unreadable or shorter than 16 bytes; a config contract does not compile or
// is incompatible with the current version; a stored contract no longer compiles; a contract
// meets format raw.
// wharfd exits with its configuration error code then.
bool IsConfigError(const absl::Status& status);

}  // namespace wharf::server
