#include "storage/keys.h"

#include "absl/strings/str_cat.h"

namespace wharf::storage {

absl::Status ValidateName(std::string_view kind, std::string_view name) {
  if (name.empty() || name.size() > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(kind), " name must be 1 to 64 characters, got ", name.size()));
  }
  auto is_alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!is_alnum(name[0])) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(kind), " name \"", std::string(name),
                                                   "\" must start with a letter or digit"));
  }
  for (char c : name) {
    if (!is_alnum(c) && c != '_' && c != '.' && c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(kind), " name \"", std::string(name),
                       "\" may only contain letters, digits, '_', '.' and '-'"));
    }
  }
  return absl::OkStatus();
}

void AppendBigEndian32(std::string* out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out->append(b, 4);
}

void AppendBigEndian64(std::string* out, uint64_t v) {
  AppendBigEndian32(out, static_cast<uint32_t>(v >> 32));
  AppendBigEndian32(out, static_cast<uint32_t>(v));
}

uint32_t ReadBigEndian32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

uint64_t ReadBigEndian64(const char* p) {
  return (uint64_t{ReadBigEndian32(p)} << 32) | ReadBigEndian32(p + 4);
}

std::string PartitionPrefix(std::string_view dataset, uint32_t partition) {
  std::string key;
  key.reserve(dataset.size() + 5);
  key.append(dataset);
  key.push_back('\0');
  AppendBigEndian32(&key, partition);
  return key;
}

std::string OffsetKey(std::string_view dataset, uint32_t partition, uint64_t offset) {
  std::string key = PartitionPrefix(dataset, partition);
  AppendBigEndian64(&key, offset);
  return key;
}

std::optional<DecodedOffsetKey> DecodeOffsetKey(std::string_view key) {
  size_t zero = key.find('\0');
  if (zero == std::string_view::npos || zero == 0 || key.size() != zero + 1 + 4 + 8) {
    return std::nullopt;
  }
  DecodedOffsetKey d;
  d.dataset = key.substr(0, zero);
  d.partition = ReadBigEndian32(key.data() + zero + 1);
  d.offset = ReadBigEndian64(key.data() + zero + 5);
  return d;
}

std::string ProducerKey(std::string_view dataset, std::string_view producer_id) {
  std::string key;
  key.reserve(dataset.size() + 1 + producer_id.size());
  key.append(dataset);
  key.push_back('\0');
  key.append(producer_id);
  return key;
}

namespace {
std::string KindKey(char kind, std::string_view dataset, uint32_t partition) {
  std::string key(1, kind);
  key.append(PartitionPrefix(dataset, partition));
  return key;
}
}  // namespace

std::string IngestStateKey(std::string_view dataset, uint32_t partition) {
  return KindKey('i', dataset, partition);
}
std::string ValidationKey(std::string_view dataset, uint32_t partition) {
  return KindKey('v', dataset, partition);
}
std::string RetentionKey(std::string_view dataset, uint32_t partition) {
  return KindKey('r', dataset, partition);
}
std::string DeliveryKey(std::string_view dataset, std::string_view destination,
                        uint32_t partition) {
  std::string key(1, 'd');
  key.append(dataset);
  key.push_back('\0');
  key.append(destination);
  key.push_back('\0');
  AppendBigEndian32(&key, partition);
  return key;
}

std::string DatasetMetaKey(std::string_view dataset) {
  return absl::StrCat("dataset/", std::string(dataset));
}

}  // namespace wharf::storage
