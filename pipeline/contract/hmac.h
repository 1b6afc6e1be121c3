#pragma once

#include <openssl/types.h>

#include <memory>
#include <string>
#include <string_view>

namespace wharf::pipeline::contract {

// Lower-case hex HMAC-SHA256 of `data` under `key` (OpenSSL libcrypto). Used by the PII "hash"
// action and the hash transform: equal inputs map to equal outputs under one key, so hashed
// values can still be joined, while the key keeps them from being reversed by a dictionary.
// One-shot: fetches the algorithm and keys a fresh context on every call (~340k instructions
// with OpenSSL 3); the data path uses HmacSha256 below instead.
//
// Thread safety: thread-safe (no shared state).
std::string HmacSha256Hex(std::string_view key, std::string_view data);

// HMAC-SHA256 under one key, prepared once: the algorithm is fetched and a MAC context keyed
// when the object is built, and each Hex() call duplicates that keyed context (a few memcpy-sized
// copies) instead of fetching and keying again. Output is byte-identical to HmacSha256Hex.
//
// Thread safety: immutable after construction; Hex() is const and may run on any number of
// threads at once. The prepared context is only ever read (EVP_MAC_CTX_dup takes it const and
// copies it; the algorithm's reference count it bumps is atomic); each call finalises its own
// copy.
class HmacSha256 {
 public:
  // Never fails: if OpenSSL cannot prepare a context (e.g. a provider refuses the key), Hex()
  // falls back to the one-shot HmacSha256Hex, which gives the same bytes.
  explicit HmacSha256(std::string_view key);
  ~HmacSha256();
  HmacSha256(HmacSha256&&) noexcept;
  HmacSha256& operator=(HmacSha256&&) noexcept;
  HmacSha256(const HmacSha256&) = delete;
  HmacSha256& operator=(const HmacSha256&) = delete;

  // Lower-case hex (64 characters) HMAC-SHA256 of `data`.
  std::string Hex(std::string_view data) const;

  const std::string& key() const { return key_; }

 private:
  struct CtxFree {
    void operator()(EVP_MAC_CTX* ctx) const;
  };

  std::string key_;
  // Keyed, never updated or finalised itself; null when preparation failed (see constructor).
  std::unique_ptr<EVP_MAC_CTX, CtxFree> prepared_;
};

}  // namespace wharf::pipeline::contract
