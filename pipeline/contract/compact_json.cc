#include "pipeline/contract/compact_json.h"

#include <algorithm>
#include <cstring>

#include "rapidjson/internal/dtoa.h"
#include "rapidjson/internal/ieee754.h"
#include "rapidjson/internal/itoa.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace wharf::pipeline::contract {
namespace {

// The escape of each byte, as rapidjson::Writer::WriteString's table: 0 copies the byte, 'u'
// writes \u00XX, anything else writes a backslash and that character.
constexpr char EscapeOf(unsigned char c) {
  switch (c) {
    case '\b':
      return 'b';
    case '\t':
      return 't';
    case '\n':
      return 'n';
    case '\f':
      return 'f';
    case '\r':
      return 'r';
    case '"':
      return '"';
    case '\\':
      return '\\';
    default:
      return c < 0x20 ? 'u' : 0;
  }
}

struct EscapeTable {
  char escape[256];
  constexpr EscapeTable() : escape() {
    for (int c = 0; c < 256; ++c) escape[c] = EscapeOf(static_cast<unsigned char>(c));
  }
};
constexpr EscapeTable kEscapes;

// Appends to a std::string through a raw pointer: the string is grown (doubling) before each
// write to hold that write's worst case, and cut to the written length at the end. Far fewer
// instructions per byte than std::string::append / push_back per piece.
class Sink {
 public:
  // Starts with all the capacity the string already has (a reused buffer is not regrown piece
  // by piece).
  explicit Sink(std::string* out) : out_(out), len_(out->size()) {
    out_->resize(std::max(out_->capacity(), len_ + 256));
  }
  ~Sink() { out_->resize(len_); }
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  // Room for n more bytes; write them at the returned pointer, then Commit the end.
  char* Reserve(size_t n) {
    if (len_ + n > out_->size()) out_->resize(std::max(len_ + n, 2 * out_->size()));
    return out_->data() + len_;
  }
  void Commit(const char* end) { len_ = static_cast<size_t>(end - out_->data()); }
  void Put(char c) {
    *Reserve(1) = c;
    ++len_;
  }
  void Append(const char* s, size_t n) {
    std::memcpy(Reserve(n), s, n);
    len_ += n;
  }

 private:
  std::string* out_;
  size_t len_;
};

void AppendString(const char* s, rapidjson::SizeType n, Sink& sink) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  // Worst case: every byte becomes \u00XX, plus the quotes.
  char* p = sink.Reserve(2 + 6 * static_cast<size_t>(n));
  *p++ = '"';
  for (rapidjson::SizeType i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const char e = kEscapes.escape[c];
    if (e == 0) {
      *p++ = static_cast<char>(c);
    } else if (e == 'u') {
      p[0] = '\\';
      p[1] = 'u';
      p[2] = '0';
      p[3] = '0';
      p[4] = kHex[c >> 4];
      p[5] = kHex[c & 0xF];
      p += 6;
    } else {
      p[0] = '\\';
      p[1] = e;
      p += 2;
    }
  }
  *p++ = '"';
  sink.Commit(p);
}

bool AppendNumber(const rapidjson::Value& v, Sink& sink) {
  // The order of Value::Accept's dispatch (its Double/Int/Uint/Int64/Uint64 handler calls).
  // 32 bytes hold any of them (the Writer's buffers are 25 for a double, 21 for an int64).
  char* p = sink.Reserve(32);
  char* end;
  if (v.IsDouble()) {
    const double d = v.GetDouble();
    if (rapidjson::internal::Double(d).IsNanOrInf()) return false;
    end = rapidjson::internal::dtoa(
        d, p, rapidjson::Writer<rapidjson::StringBuffer>::kDefaultMaxDecimalPlaces);
  } else if (v.IsInt()) {
    end = rapidjson::internal::i32toa(v.GetInt(), p);
  } else if (v.IsUint()) {
    end = rapidjson::internal::u32toa(v.GetUint(), p);
  } else if (v.IsInt64()) {
    end = rapidjson::internal::i64toa(v.GetInt64(), p);
  } else {
    end = rapidjson::internal::u64toa(v.GetUint64(), p);
  }
  sink.Commit(end);
  return true;
}

bool AppendValue(const rapidjson::Value& value, Sink& sink) {
  switch (value.GetType()) {
    case rapidjson::kNullType:
      sink.Append("null", 4);
      return true;
    case rapidjson::kFalseType:
      sink.Append("false", 5);
      return true;
    case rapidjson::kTrueType:
      sink.Append("true", 4);
      return true;
    case rapidjson::kStringType:
      AppendString(value.GetString(), value.GetStringLength(), sink);
      return true;
    case rapidjson::kNumberType:
      return AppendNumber(value, sink);
    case rapidjson::kObjectType: {
      sink.Put('{');
      bool first = true;
      for (auto m = value.MemberBegin(); m != value.MemberEnd(); ++m) {
        if (!first) sink.Put(',');
        first = false;
        AppendString(m->name.GetString(), m->name.GetStringLength(), sink);
        sink.Put(':');
        if (!AppendValue(m->value, sink)) return false;
      }
      sink.Put('}');
      return true;
    }
    case rapidjson::kArrayType: {
      sink.Put('[');
      for (rapidjson::SizeType i = 0; i < value.Size(); ++i) {
        if (i > 0) sink.Put(',');
        if (!AppendValue(value[i], sink)) return false;
      }
      sink.Put(']');
      return true;
    }
  }
  return false;
}

}  // namespace

bool AppendCompactJson(const rapidjson::Value& value, std::string* out) {
  Sink sink(out);
  return AppendValue(value, sink);
}

}  // namespace wharf::pipeline::contract
