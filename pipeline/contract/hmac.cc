#include "pipeline/contract/hmac.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

namespace wharf::pipeline::contract {
namespace {

constexpr char kHex[] = "0123456789abcdef";

std::string ToHex(const unsigned char* digest, size_t length) {
  std::string out(length * 2, '\0');
  for (size_t i = 0; i < length; ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 0xf];
  }
  return out;
}

}  // namespace

std::string HmacSha256Hex(std::string_view key, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  // HMAC() with a null output buffer would use a static one; ours keeps this thread-safe.
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest, &length);
  return ToHex(digest, length);
}

void HmacSha256::CtxFree::operator()(EVP_MAC_CTX* ctx) const { EVP_MAC_CTX_free(ctx); }

HmacSha256::HmacSha256(std::string_view key) : key_(key) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr);
  if (mac == nullptr) return;
  // The context holds its own reference to the algorithm, so ours is dropped right away.
  std::unique_ptr<EVP_MAC_CTX, CtxFree> ctx(EVP_MAC_CTX_new(mac));
  EVP_MAC_free(mac);
  if (ctx == nullptr) return;
  char digest_name[] = OSSL_DIGEST_NAME_SHA2_256;
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
      OSSL_PARAM_construct_end()};
  // A non-null key pointer even for the empty key: a null one would mean "no key given".
  static constexpr unsigned char kEmpty[1] = {0};
  const unsigned char* key_bytes =
      key_.empty() ? kEmpty : reinterpret_cast<const unsigned char*>(key_.data());
  if (EVP_MAC_init(ctx.get(), key_bytes, key_.size(), params) != 1) return;
  prepared_ = std::move(ctx);
}

HmacSha256::~HmacSha256() = default;
HmacSha256::HmacSha256(HmacSha256&&) noexcept = default;
HmacSha256& HmacSha256::operator=(HmacSha256&&) noexcept = default;

std::string HmacSha256::Hex(std::string_view data) const {
  if (prepared_ != nullptr) {
    std::unique_ptr<EVP_MAC_CTX, CtxFree> ctx(EVP_MAC_CTX_dup(prepared_.get()));
    unsigned char digest[EVP_MAX_MD_SIZE];
    size_t length = 0;
    if (ctx != nullptr &&
        EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(data.data()),
                       data.size()) == 1 &&
        EVP_MAC_final(ctx.get(), digest, &length, sizeof(digest)) == 1) {
      return ToHex(digest, length);
    }
  }
  return HmacSha256Hex(key_, data);
}

}  // namespace wharf::pipeline::contract
