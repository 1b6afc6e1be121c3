#pragma once

#include <grpcpp/channel.h>

#include <chrono>
#include <memory>
#include <string>

namespace wharf::client {

struct ChannelOptions {
  // gRPC reconnects a broken connection with its own backoff (1 s to 120 s by default); Wharf
  // clients retry on their own, so the channel is told to reconnect sooner.
  std::chrono::milliseconds min_reconnect_backoff{100};
  std::chrono::milliseconds max_reconnect_backoff{2000};
  // Give the channel its own connection instead of sharing one with other channels to the same
  // target (gRPC's global subchannel pool). For load generators with one channel per producer.
  bool dedicated_connection = false;
};

// An insecure channel to `target` ("host:port") tuned for Wharf clients.
std::shared_ptr<grpc::Channel> CreateChannel(const std::string& target,
                                             const ChannelOptions& options = {});

}  // namespace wharf::client
