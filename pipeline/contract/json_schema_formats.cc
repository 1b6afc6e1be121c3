#include "pipeline/contract/json_schema_formats.h"

#include <cstddef>
#include <cstdint>

namespace wharf::pipeline::contract {
namespace {

// Locale-independent ASCII classes: the formats are defined over ASCII, so e.g. a Bengali digit
// must not count as a digit.
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Reads exactly `n` ASCII digits at `*pos` into `*out` and advances.
bool ReadDigits(std::string_view s, size_t* pos, int n, int* out) {
  if (*pos + n > s.size()) return false;
  int v = 0;
  for (int i = 0; i < n; ++i) {
    char c = s[*pos + i];
    if (!IsDigit(c)) return false;
    v = v * 10 + (c - '0');
  }
  *pos += n;
  *out = v;
  return true;
}

bool ReadChar(std::string_view s, size_t* pos, char c) {
  if (*pos >= s.size() || s[*pos] != c) return false;
  ++*pos;
  return true;
}

bool IsLeapYear(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int DaysInMonth(int y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeapYear(y) ? 29 : kDays[m - 1];
}

bool ParseFullDate(std::string_view s, size_t* pos) {
  int y = 0, m = 0, d = 0;
  if (!ReadDigits(s, pos, 4, &y) || !ReadChar(s, pos, '-') || !ReadDigits(s, pos, 2, &m) ||
      !ReadChar(s, pos, '-') || !ReadDigits(s, pos, 2, &d)) {
    return false;
  }
  return m >= 1 && m <= 12 && d >= 1 && d <= DaysInMonth(y, m);
}

// RFC 3339 full-time = partial-time time-offset.
bool ParseFullTime(std::string_view s, size_t* pos) {
  int h = 0, m = 0, sec = 0;
  if (!ReadDigits(s, pos, 2, &h) || !ReadChar(s, pos, ':') || !ReadDigits(s, pos, 2, &m) ||
      !ReadChar(s, pos, ':') || !ReadDigits(s, pos, 2, &sec)) {
    return false;
  }
  if (h > 23 || m > 59 || sec > 60) return false;
  if (*pos < s.size() && s[*pos] == '.') {
    ++*pos;
    size_t start = *pos;
    while (*pos < s.size() && IsDigit(s[*pos])) ++*pos;
    if (*pos == start) return false;
  }
  if (*pos >= s.size()) return false;  // the offset is mandatory
  int offset_minutes = 0;
  char c = s[*pos];
  if (c == 'Z' || c == 'z') {
    ++*pos;
  } else if (c == '+' || c == '-') {
    ++*pos;
    int oh = 0, om = 0;
    if (!ReadDigits(s, pos, 2, &oh) || !ReadChar(s, pos, ':') || !ReadDigits(s, pos, 2, &om)) {
      return false;
    }
    if (oh > 23 || om > 59) return false;
    offset_minutes = (c == '+' ? 1 : -1) * (oh * 60 + om);
  } else {
    return false;
  }
  if (sec == 60) {
    // A leap second is only inserted at the end of a UTC day: local time minus the offset must be
    // 23:59 UTC.
    int utc = ((h * 60 + m - offset_minutes) % 1440 + 1440) % 1440;
    if (utc != 23 * 60 + 59) return false;
  }
  return true;
}

bool IsUnreserved(char c) {
  return IsAlpha(c) || IsDigit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}
bool IsSubDelim(char c) {
  switch (c) {
    case '!':
    case '$':
    case '&':
    case '\'':
    case '(':
    case ')':
    case '*':
    case '+':
    case ',':
    case ';':
    case '=':
      return true;
    default:
      return false;
  }
}

// Checks that `s` consists of unreserved / sub-delims / pct-encoded characters plus any of
// `extra`.
bool AllUriChars(std::string_view s, std::string_view extra) {
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size() || !IsHex(s[i + 1]) || !IsHex(s[i + 2])) return false;
      i += 2;
      continue;
    }
    if (IsUnreserved(c) || IsSubDelim(c) || extra.find(c) != std::string_view::npos) continue;
    return false;
  }
  return true;
}

bool IsHostnameLabelChar(char c) { return IsAlpha(c) || IsDigit(c) || c == '-'; }

// RFC 1123 host name: dot-separated labels of 1-63 letters, digits and inner hyphens.
bool IsHostname(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    std::string_view label = s.substr(start, dot == std::string_view::npos ? s.npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!IsHostnameLabelChar(c)) return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

bool IsAtext(char c) {
  if (IsAlpha(c) || IsDigit(c)) return true;
  static constexpr std::string_view kSpecials = "!#$%&'*+-/=?^_`{|}~";
  return kSpecials.find(c) != std::string_view::npos;
}

}  // namespace

bool IsValidDateFormat(std::string_view value) {
  size_t pos = 0;
  return ParseFullDate(value, &pos) && pos == value.size();
}

bool IsValidTimeFormat(std::string_view value) {
  size_t pos = 0;
  return ParseFullTime(value, &pos) && pos == value.size();
}

bool IsValidDateTimeFormat(std::string_view value) {
  size_t pos = 0;
  if (!ParseFullDate(value, &pos)) return false;
  if (pos >= value.size() || (value[pos] != 'T' && value[pos] != 't')) return false;
  ++pos;
  return ParseFullTime(value, &pos) && pos == value.size();
}

bool IsValidUuidFormat(std::string_view value) {
  if (value.size() != 36) return false;
  for (size_t i = 0; i < value.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? value[i] != '-' : !IsHex(value[i])) return false;
  }
  return true;
}

bool IsValidIpv4Format(std::string_view value) {
  size_t pos = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0 && !ReadChar(value, &pos, '.')) return false;
    size_t start = pos;
    int v = 0;
    while (pos < value.size() && IsDigit(value[pos]) && pos - start < 3) {
      v = v * 10 + (value[pos] - '0');
      ++pos;
    }
    size_t len = pos - start;
    if (len == 0 || v > 255 || (len > 1 && value[start] == '0')) return false;
  }
  return pos == value.size();
}

bool IsValidIpv6Format(std::string_view value) {
  // Groups before and after an optional "::"; the last group may be a dotted quad (2 groups).
  if (value.size() < 2 || value.size() > 45) return false;
  size_t double_colon = value.find("::");
  if (double_colon != std::string_view::npos &&
      value.find("::", double_colon + 1) != std::string_view::npos) {
    return false;
  }
  auto count_groups = [](std::string_view part, bool allow_ipv4_tail, int* groups) {
    *groups = 0;
    if (part.empty()) return true;
    size_t start = 0;
    while (true) {
      size_t colon = part.find(':', start);
      std::string_view group =
          part.substr(start, colon == std::string_view::npos ? part.npos : colon - start);
      if (colon == std::string_view::npos && allow_ipv4_tail &&
          group.find('.') != std::string_view::npos) {
        if (!IsValidIpv4Format(group)) return false;
        *groups += 2;
        return true;
      }
      if (group.empty() || group.size() > 4) return false;
      for (char c : group) {
        if (!IsHex(c)) return false;
      }
      ++*groups;
      if (colon == std::string_view::npos) return true;
      start = colon + 1;
    }
  };
  if (double_colon == std::string_view::npos) {
    int groups = 0;
    return count_groups(value, true, &groups) && groups == 8;
  }
  std::string_view head = value.substr(0, double_colon);
  std::string_view tail = value.substr(double_colon + 2);
  int head_groups = 0, tail_groups = 0;
  if (!count_groups(head, false, &head_groups) || !count_groups(tail, true, &tail_groups)) {
    return false;
  }
  // "::" stands for at least one zero group.
  return head_groups + tail_groups <= 7;
}

bool IsValidEmailFormat(std::string_view value) {
  size_t at = value.rfind('@');
  if (at == std::string_view::npos || at == 0 || at + 1 >= value.size()) return false;
  std::string_view local = value.substr(0, at);
  std::string_view domain = value.substr(at + 1);
  if (local.size() > 64) return false;
  if (local.front() == '"') {
    // quoted-string: printable ASCII except '"' and '\', or a backslash-escaped printable char.
    if (local.size() < 2 || local.back() != '"') return false;
    for (size_t i = 1; i + 1 < local.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(local[i]);
      if (c == '\\') {
        ++i;
        if (i + 1 >= local.size()) return false;
        c = static_cast<unsigned char>(local[i]);
        if (c < 0x20 || c > 0x7e) return false;
        continue;
      }
      if (c == '"' || c < 0x20 || c > 0x7e) return false;
    }
  } else {
    // dot-atom: atext runs separated by single dots.
    if (local.front() == '.' || local.back() == '.') return false;
    for (size_t i = 0; i < local.size(); ++i) {
      char c = local[i];
      if (c == '.') {
        if (local[i + 1] == '.') return false;
        continue;
      }
      if (!IsAtext(c)) return false;
    }
  }
  if (domain.front() == '[') {
    if (domain.back() != ']') return false;
    std::string_view literal = domain.substr(1, domain.size() - 2);
    static constexpr std::string_view kIpv6Tag = "IPv6:";
    if (literal.substr(0, kIpv6Tag.size()) == kIpv6Tag) {
      return IsValidIpv6Format(literal.substr(kIpv6Tag.size()));
    }
    return IsValidIpv4Format(literal);
  }
  return IsHostname(domain);
}

bool IsValidUriFormat(std::string_view value) {
  // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"
  size_t colon = value.find(':');
  if (colon == std::string_view::npos || colon == 0 || !IsAlpha(value[0])) return false;
  for (size_t i = 1; i < colon; ++i) {
    char c = value[i];
    if (!IsAlpha(c) && !IsDigit(c) && c != '+' && c != '-' && c != '.') return false;
  }
  std::string_view rest = value.substr(colon + 1);
  std::string_view fragment, query;
  bool has_fragment = false, has_query = false;
  if (size_t hash = rest.find('#'); hash != std::string_view::npos) {
    fragment = rest.substr(hash + 1);
    rest = rest.substr(0, hash);
    has_fragment = true;
  }
  if (size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
    has_query = true;
  }
  if (has_fragment && !AllUriChars(fragment, ":@/?")) return false;
  if (has_query && !AllUriChars(query, ":@/?")) return false;
  std::string_view path = rest;
  if (rest.substr(0, 2) == "//") {
    std::string_view authority = rest.substr(2);
    size_t slash = authority.find('/');
    if (slash != std::string_view::npos) {
      path = authority.substr(slash);
      authority = authority.substr(0, slash);
    } else {
      path = {};
    }
    if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
      if (!AllUriChars(authority.substr(0, at), ":")) return false;
      authority = authority.substr(at + 1);
    }
    std::string_view host = authority, port;
    if (!authority.empty() && authority.front() == '[') {
      size_t close = authority.find(']');
      if (close == std::string_view::npos) return false;
      std::string_view literal = authority.substr(1, close - 1);
      if (!literal.empty() && (literal.front() == 'v' || literal.front() == 'V')) {
        // IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        size_t dot = literal.find('.');
        if (dot == std::string_view::npos || dot < 2 || dot + 1 >= literal.size()) return false;
        for (size_t i = 1; i < dot; ++i) {
          if (!IsHex(literal[i])) return false;
        }
        for (char c : literal.substr(dot + 1)) {
          if (!IsUnreserved(c) && !IsSubDelim(c) && c != ':') return false;
        }
      } else if (!IsValidIpv6Format(literal)) {
        return false;
      }
      std::string_view after = authority.substr(close + 1);
      if (!after.empty()) {
        if (after.front() != ':') return false;
        port = after.substr(1);
      }
      host = {};
    } else if (size_t pc = authority.find(':'); pc != std::string_view::npos) {
      host = authority.substr(0, pc);
      port = authority.substr(pc + 1);
    }
    // reg-name (an IPv4 dotted quad is also a syntactically valid reg-name).
    if (!AllUriChars(host, "")) return false;
    for (char c : port) {
      if (!IsDigit(c)) return false;
    }
  }
  return AllUriChars(path, ":@/");
}

JsonSchemaFormatChecker FindJsonSchemaFormatChecker(std::string_view name) {
  if (name == "date-time") return &IsValidDateTimeFormat;
  if (name == "date") return &IsValidDateFormat;
  if (name == "time") return &IsValidTimeFormat;
  if (name == "email") return &IsValidEmailFormat;
  if (name == "uuid") return &IsValidUuidFormat;
  if (name == "ipv4") return &IsValidIpv4Format;
  if (name == "ipv6") return &IsValidIpv6Format;
  if (name == "uri") return &IsValidUriFormat;
  return nullptr;
}

}  // namespace wharf::pipeline::contract
