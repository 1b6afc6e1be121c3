#pragma once

#include <string>
#include <string_view>

namespace wharf::pipeline::contract {

// Lower-case hex HMAC-SHA256 of `data` under `key` (OpenSSL libcrypto). Used by the PII "hash"
// action and the hash transform: equal inputs map to equal outputs under one key, so hashed
// values can still be joined, while the key keeps them from being reversed by a dictionary.
//
// Thread safety: thread-safe (no shared state).
std::string HmacSha256Hex(std::string_view key, std::string_view data);

}  // namespace wharf::pipeline::contract
