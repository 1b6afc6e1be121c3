#include "pipeline/contract/expression.h"

#include <re2/re2.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace wharf::pipeline::contract {

// ---------------------------------------------------------------------------------------------
// ExprValue
// ---------------------------------------------------------------------------------------------

namespace {

// 2^63 as a double: the first double above the int64 range.
constexpr double kTwoPow63 = 9223372036854775808.0;

bool DoubleFitsInt64(double d) { return d >= -kTwoPow63 && d < kTwoPow63; }

// Number of code points in UTF-8 text: every byte that is not a continuation byte starts one.
// (Records are validated UTF-8; a stray invalid byte simply counts as one character.)
size_t CodePointCount(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Byte offsets at which each code point of `s` starts, plus s.size() at the end.
std::vector<size_t> CodePointOffsets(std::string_view s) {
  std::vector<size_t> offsets;
  offsets.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) offsets.push_back(i);
  }
  offsets.push_back(s.size());
  return offsets;
}

}  // namespace

ExprValue ExprValue::Bool(bool b) {
  ExprValue v;
  v.v_ = b;
  return v;
}

ExprValue ExprValue::Int(int64_t i) {
  ExprValue v;
  v.v_ = i;
  return v;
}

ExprValue ExprValue::Double(double d) {
  ExprValue v;
  if (std::isfinite(d) && std::trunc(d) == d && DoubleFitsInt64(d)) {
    v.v_ = static_cast<int64_t>(d);  // also turns -0.0 into 0
  } else {
    v.v_ = d;
  }
  return v;
}

ExprValue ExprValue::String(std::string s) {
  ExprValue v;
  v.v_ = std::move(s);
  return v;
}

ExprValue ExprValue::FromJson(const rapidjson::Value& json) {
  switch (json.GetType()) {
    case rapidjson::kNullType:
      return Null();
    case rapidjson::kFalseType:
      return Bool(false);
    case rapidjson::kTrueType:
      return Bool(true);
    case rapidjson::kStringType:
      return String(std::string(json.GetString(), json.GetStringLength()));
    case rapidjson::kNumberType:
      if (json.IsInt64()) return Int(json.GetInt64());
      return Double(json.GetDouble());  // doubles and uint64 values above the int64 range
    case rapidjson::kArrayType:
    case rapidjson::kObjectType: {
      ExprValue v;
      v.v_ = &json;
      return v;
    }
  }
  return Null();
}

ExprValue::Type ExprValue::type() const {
  switch (v_.index()) {
    case 0:
      return Type::kNull;
    case 1:
      return Type::kBool;
    case 2:
    case 3:
      return Type::kNumber;
    case 4:
      return Type::kString;
    default:
      return json_value().IsArray() ? Type::kArray : Type::kObject;
  }
}

double ExprValue::number_value() const {
  if (is_int()) return static_cast<double>(int_value());
  return std::get<double>(v_);
}

std::string_view ExprValue::TypeName() const {
  switch (type()) {
    case Type::kNull:
      return "null";
    case Type::kBool:
      return "bool";
    case Type::kNumber:
      return "number";
    case Type::kString:
      return "string";
    case Type::kArray:
      return "array";
    case Type::kObject:
      return "object";
  }
  return "null";
}

rapidjson::Value ExprValue::ToJson(rapidjson::Document::AllocatorType& allocator) const {
  rapidjson::Value out;
  switch (v_.index()) {
    case 0:
      break;
    case 1:
      out.SetBool(bool_value());
      break;
    case 2:
      out.SetInt64(int_value());
      break;
    case 3:
      out.SetDouble(std::get<double>(v_));
      break;
    case 4:
      out.SetString(string_value().data(), static_cast<rapidjson::SizeType>(string_value().size()),
                    allocator);
      break;
    default:
      out.CopyFrom(json_value(), allocator);
      break;
  }
  return out;
}

std::string ExprValue::ToJsonText() const {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  if (is_json()) {
    json_value().Accept(writer);
  } else {
    rapidjson::Document scratch;
    rapidjson::Value value = ToJson(scratch.GetAllocator());
    value.Accept(writer);
  }
  return std::string(buffer.GetString(), buffer.GetSize());
}

bool operator==(const ExprValue& a, const ExprValue& b) {
  // Doubles are normalised (an integral double in range is an int), so an int never equals a
  // double and each alternative compares with itself only.
  if (a.v_.index() != b.v_.index()) return false;
  switch (a.v_.index()) {
    case 0:
      return true;
    case 1:
      return a.bool_value() == b.bool_value();
    case 2:
      return a.int_value() == b.int_value();
    case 3:
      return std::get<double>(a.v_) == std::get<double>(b.v_);
    case 4:
      return a.string_value() == b.string_value();
    default: {
      const rapidjson::Value& x = a.json_value();
      const rapidjson::Value& y = b.json_value();
      return &x == &y || x == y;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AST
// ---------------------------------------------------------------------------------------------

namespace expr_internal {

enum class NodeKind { kLiteral, kPath, kNot, kNeg, kAnd, kOr, kCompare, kArith, kIn, kCall };
enum class CmpOp { kEq, kNe, kLt, kLe, kGt, kGe };
enum class ArithOp { kAdd, kSub, kMul, kDiv, kMod };
enum class Func {
  kLen,
  kLower,
  kUpper,
  kTrim,
  kSubstr,
  kContains,
  kStartsWith,
  kEndsWith,
  kMatches,
  kCoalesce,
  kIsNull,
  kExists,
  kAbs,
  kMin,
  kMax,
  kRound,
  kFloor,
  kCeil,
  kToNumber,
  kToString,
};

struct PathStep {
  bool is_index = false;
  std::string name;  // object member (when !is_index)
  rapidjson::SizeType index = 0;
};

struct Node {
  NodeKind kind = NodeKind::kLiteral;
  size_t pos = 0;  // 1-based character position, for runtime error messages
  ExprValue literal;
  std::vector<PathStep> path;
  std::vector<std::unique_ptr<Node>> kids;
  // kArith: ops[i] (at op_pos[i]) combines the running value with kids[i + 1].
  std::vector<ArithOp> ops;
  std::vector<size_t> op_pos;
  CmpOp cmp = CmpOp::kEq;
  bool negate = false;  // kIn: `not in`
  Func func = Func::kLen;
  std::string func_name;
  std::unique_ptr<RE2> regex;  // kCall matches(): compiled once at Compile time
};

}  // namespace expr_internal

namespace {

using expr_internal::ArithOp;
using expr_internal::CmpOp;
using expr_internal::Func;
using expr_internal::Node;
using expr_internal::NodeKind;
using expr_internal::PathStep;

struct FuncInfo {
  const char* name;
  Func func;
  int min_args;
  int max_args;  // -1: unbounded
};

constexpr FuncInfo kFunctions[] = {
    {"len", Func::kLen, 1, 1},
    {"lower", Func::kLower, 1, 1},
    {"upper", Func::kUpper, 1, 1},
    {"trim", Func::kTrim, 1, 1},
    {"substr", Func::kSubstr, 2, 3},
    {"contains", Func::kContains, 2, 2},
    {"starts_with", Func::kStartsWith, 2, 2},
    {"ends_with", Func::kEndsWith, 2, 2},
    {"matches", Func::kMatches, 2, 2},
    {"coalesce", Func::kCoalesce, 1, -1},
    {"is_null", Func::kIsNull, 1, 1},
    {"exists", Func::kExists, 1, 1},
    {"abs", Func::kAbs, 1, 1},
    {"min", Func::kMin, 1, -1},
    {"max", Func::kMax, 1, -1},
    {"round", Func::kRound, 1, 2},
    {"floor", Func::kFloor, 1, 1},
    {"ceil", Func::kCeil, 1, 1},
    {"to_number", Func::kToNumber, 1, 1},
    {"to_string", Func::kToString, 1, 1},
};

const FuncInfo* FindFunction(std::string_view name) {
  for (const FuncInfo& f : kFunctions) {
    if (name == f.name) return &f;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

enum class Tok {
  kEnd,
  kNumber,
  kString,
  kIdent,
  kDollar,
  kLParen,
  kRParen,
  kLBracket,
  kRBracket,
  kComma,
  kDot,
  kOr,   // || or
  kAnd,  // && and
  kNot,  // ! not
  kIn,
  kTrue,
  kFalse,
  kNull,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kPlus,
  kMinus,
  kStar,
  kSlash,
  kPercent,
};

struct Token {
  Tok kind = Tok::kEnd;
  size_t pos = 0;           // 1-based character position
  std::string text;         // source text (identifiers, keywords, numbers, operators)
  std::string str;          // decoded string literal
  ExprValue number;         // number literal
  bool integer = false;     // number literal written without '.' or exponent
  bool is_keyword = false;  // `and`, `or`, `not` (as opposed to the symbols)
};

bool IsIdentStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsIdentChar(char c) { return IsIdentStart(c) || (c >= '0' && c <= '9'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

absl::Status SyntaxError(size_t pos, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("position ", pos, ": ", std::string(message)));
}

class Lexer {
 public:
  explicit Lexer(std::string_view text) : text_(text) {
    // Character position of every byte offset, so errors count characters, not bytes.
    char_pos_.resize(text.size() + 1);
    size_t chars = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      // A continuation byte starts no character, except at the very start (invalid UTF-8),
      // where it must still count as one: positions are 1-based.
      if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80 || i == 0) ++chars;
      char_pos_[i] = chars;
    }
    char_pos_[text.size()] = chars + 1;
  }

  absl::StatusOr<std::vector<Token>> Run() {
    std::vector<Token> tokens;
    while (true) {
      while (i_ < text_.size() &&
             (text_[i_] == ' ' || text_[i_] == '\t' || text_[i_] == '\n' || text_[i_] == '\r')) {
        ++i_;
      }
      Token tok;
      tok.pos = char_pos_[i_];
      if (i_ >= text_.size()) {
        tok.kind = Tok::kEnd;
        tokens.push_back(std::move(tok));
        return tokens;
      }
      const size_t start = i_;
      const char c = text_[i_];
      if (IsDigit(c)) {
        absl::Status s = LexNumber(&tok);
        if (!s.ok()) return s;
      } else if (c == '"' || c == '\'') {
        absl::Status s = LexString(&tok);
        if (!s.ok()) return s;
      } else if (IsIdentStart(c)) {
        while (i_ < text_.size() && IsIdentChar(text_[i_])) ++i_;
        tok.text = std::string(text_.substr(start, i_ - start));
        tok.kind = Tok::kIdent;
        if (tok.text == "and") tok.kind = Tok::kAnd;
        if (tok.text == "or") tok.kind = Tok::kOr;
        if (tok.text == "not") tok.kind = Tok::kNot;
        if (tok.text == "in") tok.kind = Tok::kIn;
        if (tok.text == "true") tok.kind = Tok::kTrue;
        if (tok.text == "false") tok.kind = Tok::kFalse;
        if (tok.text == "null") tok.kind = Tok::kNull;
        tok.is_keyword = tok.kind != Tok::kIdent;
      } else {
        absl::Status s = LexSymbol(&tok);
        if (!s.ok()) return s;
      }
      if (tok.text.empty()) tok.text = std::string(text_.substr(start, i_ - start));
      tokens.push_back(std::move(tok));
    }
  }

 private:
  size_t Pos(size_t byte) const { return char_pos_[byte]; }

  absl::Status LexNumber(Token* tok) {
    const size_t start = i_;
    while (i_ < text_.size() && IsDigit(text_[i_])) ++i_;
    bool integer = true;
    if (i_ < text_.size() && text_[i_] == '.' && i_ + 1 < text_.size() && IsDigit(text_[i_ + 1])) {
      integer = false;
      ++i_;
      while (i_ < text_.size() && IsDigit(text_[i_])) ++i_;
    }
    if (i_ < text_.size() && (text_[i_] == 'e' || text_[i_] == 'E')) {
      integer = false;
      size_t j = i_ + 1;
      if (j < text_.size() && (text_[j] == '+' || text_[j] == '-')) ++j;
      if (j >= text_.size() || !IsDigit(text_[j])) {
        return SyntaxError(Pos(i_), "malformed number: expected digits after the exponent");
      }
      i_ = j;
      while (i_ < text_.size() && IsDigit(text_[i_])) ++i_;
    }
    if (i_ < text_.size() && (IsIdentChar(text_[i_]) || text_[i_] == '.')) {
      return SyntaxError(
          Pos(i_), absl::StrCat("malformed number: unexpected '", std::string(1, text_[i_]), "'"));
    }
    const std::string_view digits = text_.substr(start, i_ - start);
    tok->kind = Tok::kNumber;
    tok->integer = integer;
    tok->text = std::string(digits);
    if (integer) {
      int64_t v = 0;
      auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
      if (ec == std::errc() && p == digits.data() + digits.size()) {
        tok->number = ExprValue::Int(v);
        return absl::OkStatus();
      }
    }
    double d = 0;
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), d);
    if (ec != std::errc() || p != digits.data() + digits.size() || !std::isfinite(d)) {
      return SyntaxError(Pos(start), absl::StrCat("number out of range: ", tok->text));
    }
    tok->number = ExprValue::Double(d);
    return absl::OkStatus();
  }

  absl::StatusOr<uint32_t> Hex4(size_t at) {
    if (at + 4 > text_.size()) return SyntaxError(Pos(at), "\\u needs four hex digits");
    uint32_t v = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char h = text_[at + k];
      v <<= 4;
      if (h >= '0' && h <= '9') {
        v |= static_cast<uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        v |= static_cast<uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        v |= static_cast<uint32_t>(h - 'A' + 10);
      } else {
        return SyntaxError(Pos(at + k), "\\u needs four hex digits");
      }
    }
    return v;
  }

  absl::Status LexString(Token* tok) {
    const char quote = text_[i_];
    const size_t start = i_;
    ++i_;
    std::string out;
    while (true) {
      if (i_ >= text_.size()) return SyntaxError(Pos(start), "unterminated string literal");
      const char c = text_[i_];
      if (c == quote) {
        ++i_;
        break;
      }
      if (c != '\\') {
        out.push_back(c);
        ++i_;
        continue;
      }
      if (i_ + 1 >= text_.size()) return SyntaxError(Pos(start), "unterminated string literal");
      const char e = text_[i_ + 1];
      switch (e) {
        case '"':
        case '\'':
        case '\\':
        case '/':
          out.push_back(e);
          i_ += 2;
          break;
        case 'n':
          out.push_back('\n');
          i_ += 2;
          break;
        case 't':
          out.push_back('\t');
          i_ += 2;
          break;
        case 'r':
          out.push_back('\r');
          i_ += 2;
          break;
        case 'b':
          out.push_back('\b');
          i_ += 2;
          break;
        case 'f':
          out.push_back('\f');
          i_ += 2;
          break;
        case 'u': {
          const size_t esc = i_;
          absl::StatusOr<uint32_t> unit = Hex4(i_ + 2);
          if (!unit.ok()) return unit.status();
          i_ += 6;
          uint32_t cp = *unit;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate must be followed by an escaped low surrogate.
            if (i_ + 1 < text_.size() && text_[i_] == '\\' && text_[i_ + 1] == 'u') {
              absl::StatusOr<uint32_t> low = Hex4(i_ + 2);
              if (!low.ok()) return low.status();
              if (*low < 0xDC00 || *low > 0xDFFF) {
                return SyntaxError(Pos(i_), "expected a low surrogate \\uDC00-\\uDFFF");
              }
              cp = 0x10000 + ((cp - 0xD800) << 10) + (*low - 0xDC00);
              i_ += 6;
            } else {
              return SyntaxError(Pos(esc), "unpaired surrogate in \\u escape");
            }
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return SyntaxError(Pos(esc), "unpaired surrogate in \\u escape");
          }
          AppendUtf8(cp, &out);
          break;
        }
        default:
          return SyntaxError(Pos(i_), absl::StrCat("unknown escape sequence '\\", std::string(1, e),
                                                   "' in string literal"));
      }
    }
    tok->kind = Tok::kString;
    tok->str = std::move(out);
    tok->text = std::string(text_.substr(start, i_ - start));
    return absl::OkStatus();
  }

  absl::Status LexSymbol(Token* tok) {
    const char c = text_[i_];
    const char n = i_ + 1 < text_.size() ? text_[i_ + 1] : '\0';
    auto two = [&](Tok kind) {
      tok->kind = kind;
      i_ += 2;
      return absl::OkStatus();
    };
    auto one = [&](Tok kind) {
      tok->kind = kind;
      i_ += 1;
      return absl::OkStatus();
    };
    switch (c) {
      case '|':
        if (n == '|') return two(Tok::kOr);
        return SyntaxError(Pos(i_), "unexpected '|' (did you mean '||'?)");
      case '&':
        if (n == '&') return two(Tok::kAnd);
        return SyntaxError(Pos(i_), "unexpected '&' (did you mean '&&'?)");
      case '=':
        if (n == '=') return two(Tok::kEq);
        return SyntaxError(Pos(i_), "unexpected '=' (use '==' to compare)");
      case '!':
        if (n == '=') return two(Tok::kNe);
        return one(Tok::kNot);
      case '<':
        if (n == '=') return two(Tok::kLe);
        return one(Tok::kLt);
      case '>':
        if (n == '=') return two(Tok::kGe);
        return one(Tok::kGt);
      case '(':
        return one(Tok::kLParen);
      case ')':
        return one(Tok::kRParen);
      case '[':
        return one(Tok::kLBracket);
      case ']':
        return one(Tok::kRBracket);
      case ',':
        return one(Tok::kComma);
      case '.':
        return one(Tok::kDot);
      case '$':
        return one(Tok::kDollar);
      case '+':
        return one(Tok::kPlus);
      case '-':
        return one(Tok::kMinus);
      case '*':
        return one(Tok::kStar);
      case '/':
        return one(Tok::kSlash);
      case '%':
        return one(Tok::kPercent);
      default:
        break;
    }
    // Show the whole (possibly multi-byte) character.
    size_t len = 1;
    while (i_ + len < text_.size() &&
           (static_cast<unsigned char>(text_[i_ + len]) & 0xC0) == 0x80) {
      ++len;
    }
    return SyntaxError(
        Pos(i_), absl::StrCat("unexpected character '", std::string(text_.substr(i_, len)), "'"));
  }

  std::string_view text_;
  size_t i_ = 0;
  std::vector<size_t> char_pos_;
};

// ---------------------------------------------------------------------------------------------
// Parser (recursive descent; `depth_` bounds the recursion, see Expression::kMaxDepth)
// ---------------------------------------------------------------------------------------------

std::string Describe(const Token& t) {
  if (t.kind == Tok::kEnd) return "end of expression";
  return absl::StrCat("'", t.text, "'");
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  absl::StatusOr<std::unique_ptr<Node>> ParseAll() {
    absl::StatusOr<std::unique_ptr<Node>> root = ParseExpr(1);
    if (!root.ok()) return root;
    if (Peek().kind != Tok::kEnd) {
      return SyntaxError(Peek().pos, absl::StrCat("unexpected ", Describe(Peek()),
                                                  " after a complete "
                                                  "expression (missing operator?)"));
    }
    return root;
  }

 private:
  using NodeOr = absl::StatusOr<std::unique_ptr<Node>>;

  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(i_ + ahead, tokens_.size() - 1)];
  }
  const Token& Next() {
    const Token& t = tokens_[i_];
    if (i_ + 1 < tokens_.size()) ++i_;
    return t;
  }

  // RAII depth counter: every construct that nests (sub-expression, unary operator) enters.
  class DepthGuard {
   public:
    explicit DepthGuard(int* depth) : depth_(depth) { ++*depth_; }
    ~DepthGuard() { --*depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    int* depth_;
  };
  absl::Status CheckDepth(size_t pos) const {
    if (depth_ > Expression::kMaxDepth) {
      return SyntaxError(
          pos, absl::StrCat("expression nested deeper than ", Expression::kMaxDepth, " levels"));
    }
    return absl::OkStatus();
  }

  absl::Status Expect(Tok kind, std::string_view what) {
    if (Peek().kind != kind) {
      return SyntaxError(
          Peek().pos, absl::StrCat("expected ", std::string(what), ", found ", Describe(Peek())));
    }
    Next();
    return absl::OkStatus();
  }

  // `open` is the position of the bracket that opened this sub-expression (for the error).
  NodeOr ParseExpr(size_t open) {
    DepthGuard guard(&depth_);
    if (absl::Status s = CheckDepth(open); !s.ok()) return s;
    return ParseOr();
  }

  // Chains of || (or &&) become one n-ary node, so long chains do not deepen the tree.
  NodeOr ParseLogical(Tok op, NodeKind kind, NodeOr (Parser::*operand)()) {
    NodeOr first = (this->*operand)();
    if (!first.ok() || Peek().kind != op) return first;
    auto node = std::make_unique<Node>();
    node->kind = kind;
    node->pos = (*first)->pos;
    node->kids.push_back(std::move(*first));
    while (Peek().kind == op) {
      Next();
      NodeOr rhs = (this->*operand)();
      if (!rhs.ok()) return rhs;
      node->kids.push_back(std::move(*rhs));
    }
    return node;
  }

  NodeOr ParseOr() { return ParseLogical(Tok::kOr, NodeKind::kOr, &Parser::ParseAnd); }
  NodeOr ParseAnd() { return ParseLogical(Tok::kAnd, NodeKind::kAnd, &Parser::ParseNot); }

  NodeOr ParseNot() {
    if (Peek().kind != Tok::kNot) return ParseComparison();
    const size_t pos = Next().pos;
    DepthGuard guard(&depth_);
    if (absl::Status s = CheckDepth(pos); !s.ok()) return s;
    NodeOr operand = ParseNot();
    if (!operand.ok()) return operand;
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kNot;
    node->pos = pos;
    node->kids.push_back(std::move(*operand));
    return node;
  }

  static bool IsComparison(Tok t) {
    return t == Tok::kEq || t == Tok::kNe || t == Tok::kLt || t == Tok::kLe || t == Tok::kGt ||
           t == Tok::kGe;
  }

  NodeOr ParseComparison() {
    NodeOr lhs = ParseAdditive();
    if (!lhs.ok()) return lhs;
    const Token& t = Peek();
    std::unique_ptr<Node> node;
    if (IsComparison(t.kind)) {
      node = std::make_unique<Node>();
      node->kind = NodeKind::kCompare;
      node->pos = t.pos;
      switch (t.kind) {
        case Tok::kEq:
          node->cmp = CmpOp::kEq;
          break;
        case Tok::kNe:
          node->cmp = CmpOp::kNe;
          break;
        case Tok::kLt:
          node->cmp = CmpOp::kLt;
          break;
        case Tok::kLe:
          node->cmp = CmpOp::kLe;
          break;
        case Tok::kGt:
          node->cmp = CmpOp::kGt;
          break;
        default:
          node->cmp = CmpOp::kGe;
          break;
      }
      Next();
      NodeOr rhs = ParseAdditive();
      if (!rhs.ok()) return rhs;
      node->kids.push_back(std::move(*lhs));
      node->kids.push_back(std::move(*rhs));
    } else if (t.kind == Tok::kIn ||
               (t.kind == Tok::kNot && t.is_keyword && Peek(1).kind == Tok::kIn)) {
      node = std::make_unique<Node>();
      node->kind = NodeKind::kIn;
      node->pos = t.pos;
      node->negate = t.kind == Tok::kNot;
      if (node->negate) Next();
      Next();
      node->kids.push_back(std::move(*lhs));
      absl::Status s = ParseList(node.get());
      if (!s.ok()) return s;
    } else {
      return lhs;
    }
    if (IsComparison(Peek().kind) || Peek().kind == Tok::kIn) {
      return SyntaxError(Peek().pos,
                         "comparisons cannot be chained; use parentheses and && "
                         "to combine them");
    }
    return node;
  }

  absl::Status ParseList(Node* node) {
    const size_t open = Peek().pos;
    if (absl::Status s = Expect(Tok::kLBracket, "'[' starting the list after 'in'"); !s.ok()) {
      return s;
    }
    if (Peek().kind == Tok::kRBracket) {
      Next();
      return absl::OkStatus();
    }
    while (true) {
      NodeOr item = ParseExpr(open);
      if (!item.ok()) return item.status();
      node->kids.push_back(std::move(*item));
      if (Peek().kind == Tok::kComma) {
        Next();
        continue;
      }
      return Expect(Tok::kRBracket,
                    absl::StrCat("',' or ']' closing the list opened at position ", open));
    }
  }

  NodeOr ParseArithChain(NodeOr (Parser::*operand)(), bool multiplicative) {
    NodeOr first = (this->*operand)();
    if (!first.ok()) return first;
    auto op_of = [multiplicative](Tok t, ArithOp* op) {
      if (!multiplicative) {
        if (t == Tok::kPlus) *op = ArithOp::kAdd;
        if (t == Tok::kMinus) *op = ArithOp::kSub;
        return t == Tok::kPlus || t == Tok::kMinus;
      }
      if (t == Tok::kStar) *op = ArithOp::kMul;
      if (t == Tok::kSlash) *op = ArithOp::kDiv;
      if (t == Tok::kPercent) *op = ArithOp::kMod;
      return t == Tok::kStar || t == Tok::kSlash || t == Tok::kPercent;
    };
    ArithOp op;
    if (!op_of(Peek().kind, &op)) return first;
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kArith;
    node->pos = (*first)->pos;
    node->kids.push_back(std::move(*first));
    while (op_of(Peek().kind, &op)) {
      node->ops.push_back(op);
      node->op_pos.push_back(Next().pos);
      NodeOr rhs = (this->*operand)();
      if (!rhs.ok()) return rhs;
      node->kids.push_back(std::move(*rhs));
    }
    return node;
  }

  NodeOr ParseAdditive() { return ParseArithChain(&Parser::ParseMultiplicative, false); }
  NodeOr ParseMultiplicative() { return ParseArithChain(&Parser::ParseUnary, true); }

  NodeOr ParseUnary() {
    if (Peek().kind != Tok::kMinus) return ParsePrimary();
    const size_t pos = Next().pos;
    DepthGuard guard(&depth_);
    if (absl::Status s = CheckDepth(pos); !s.ok()) return s;
    NodeOr operand = ParseUnary();
    if (!operand.ok()) return operand;
    // Fold the minus into a number literal so -5 is a constant.
    if ((*operand)->kind == NodeKind::kLiteral && (*operand)->literal.is_number()) {
      ExprValue& v = (*operand)->literal;
      if (v.is_int() && v.int_value() != std::numeric_limits<int64_t>::min()) {
        v = ExprValue::Int(-v.int_value());
      } else {
        v = ExprValue::Double(-v.number_value());
      }
      (*operand)->pos = pos;
      return operand;
    }
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kNeg;
    node->pos = pos;
    node->kids.push_back(std::move(*operand));
    return node;
  }

  NodeOr Literal(const Token& t, ExprValue v) {
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kLiteral;
    node->pos = t.pos;
    node->literal = std::move(v);
    return node;
  }

  NodeOr ParsePrimary() {
    const Token& t = Peek();
    switch (t.kind) {
      case Tok::kNumber:
        Next();
        return Literal(t, t.number);
      case Tok::kString:
        Next();
        return Literal(t, ExprValue::String(t.str));
      case Tok::kTrue:
        Next();
        return Literal(t, ExprValue::Bool(true));
      case Tok::kFalse:
        Next();
        return Literal(t, ExprValue::Bool(false));
      case Tok::kNull:
        Next();
        return Literal(t, ExprValue::Null());
      case Tok::kLParen: {
        Next();
        NodeOr inner = ParseExpr(t.pos);
        if (!inner.ok()) return inner;
        if (absl::Status s =
                Expect(Tok::kRParen, absl::StrCat("')' closing the '(' at position ", t.pos));
            !s.ok()) {
          return s;
        }
        return inner;
      }
      case Tok::kIdent:
        if (Peek(1).kind == Tok::kLParen) return ParseCall();
        return ParsePath();
      case Tok::kDollar:
        return ParsePath();
      default:
        return SyntaxError(t.pos, absl::StrCat("expected a value (literal, field, function call "
                                               "or '('), found ",
                                               Describe(t)));
    }
  }

  NodeOr ParsePath() {
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kPath;
    const Token& first = Next();
    node->pos = first.pos;
    if (first.kind == Tok::kIdent) {
      PathStep step;
      step.name = first.text;
      node->path.push_back(std::move(step));
    }
    while (true) {
      if (Peek().kind == Tok::kDot) {
        Next();
        const Token& name = Peek();
        // After a dot any word is a field name, keywords included (a.in, a.null).
        if (name.kind != Tok::kIdent && !name.is_keyword && name.kind != Tok::kTrue &&
            name.kind != Tok::kFalse && name.kind != Tok::kNull) {
          return SyntaxError(name.pos,
                             absl::StrCat("expected a field name after '.', found ", Describe(name),
                                          " (use [\"...\"] for other names)"));
        }
        Next();
        PathStep step;
        step.name = name.text;
        node->path.push_back(std::move(step));
      } else if (Peek().kind == Tok::kLBracket) {
        const size_t open = Next().pos;
        const Token& key = Peek();
        PathStep step;
        if (key.kind == Tok::kString) {
          step.name = key.str;
        } else if (key.kind == Tok::kNumber && key.integer && key.number.is_int() &&
                   key.number.int_value() <= std::numeric_limits<int32_t>::max()) {
          step.is_index = true;
          step.index = static_cast<rapidjson::SizeType>(key.number.int_value());
        } else {
          return SyntaxError(key.pos, absl::StrCat("expected an array index (a non-negative "
                                                   "integer) or a quoted field name after '[', "
                                                   "found ",
                                                   Describe(key)));
        }
        Next();
        if (absl::Status s =
                Expect(Tok::kRBracket, absl::StrCat("']' closing the '[' at position ", open));
            !s.ok()) {
          return s;
        }
        node->path.push_back(std::move(step));
      } else {
        return node;
      }
    }
  }

  NodeOr ParseCall() {
    const Token& name = Next();
    const FuncInfo* info = FindFunction(name.text);
    if (info == nullptr) {
      return SyntaxError(name.pos, absl::StrCat("unknown function '", name.text, "'"));
    }
    const size_t open = Next().pos;  // '('
    auto node = std::make_unique<Node>();
    node->kind = NodeKind::kCall;
    node->pos = name.pos;
    node->func = info->func;
    node->func_name = info->name;
    if (Peek().kind == Tok::kRParen) {
      Next();
    } else {
      while (true) {
        NodeOr arg = ParseExpr(open);
        if (!arg.ok()) return arg;
        node->kids.push_back(std::move(*arg));
        if (Peek().kind == Tok::kComma) {
          Next();
          continue;
        }
        if (absl::Status s =
                Expect(Tok::kRParen, absl::StrCat("',' or ')' closing the call of ", info->name,
                                                  "() opened at position ", open));
            !s.ok()) {
          return s;
        }
        break;
      }
    }
    const int n = static_cast<int>(node->kids.size());
    if (n < info->min_args || (info->max_args >= 0 && n > info->max_args)) {
      std::string expected;
      if (info->max_args < 0) {
        expected = absl::StrCat("at least ", info->min_args);
      } else if (info->min_args == info->max_args) {
        expected = absl::StrCat(info->min_args);
      } else {
        expected = absl::StrCat(info->min_args, " or ", info->max_args);
      }
      return SyntaxError(
          name.pos,
          absl::StrCat(info->name, "() takes ", expected,
                       info->min_args == 1 && info->max_args == 1 ? " argument" : " arguments",
                       ", got ", n));
    }
    if (info->func == Func::kExists && node->kids[0]->kind != NodeKind::kPath) {
      return SyntaxError(node->kids[0]->pos, "exists() needs a field path as its argument");
    }
    if (info->func == Func::kMatches) {
      const Node& pattern = *node->kids[1];
      if (pattern.kind != NodeKind::kLiteral || !pattern.literal.is_string()) {
        return SyntaxError(pattern.pos,
                           "matches() needs a string literal as its pattern (it is compiled "
                           "once, at compile time)");
      }
      RE2::Options options;
      options.set_log_errors(false);
      auto re = std::make_unique<RE2>(pattern.literal.string_value(), options);
      if (!re->ok()) {
        return SyntaxError(pattern.pos, absl::StrCat("invalid regular expression: ", re->error()));
      }
      node->regex = std::move(re);
    }
    return node;
  }

  std::vector<Token> tokens_;
  size_t i_ = 0;
  int depth_ = -1;  // the top-level expression is depth 0
};

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

using ValueOr = absl::StatusOr<ExprValue>;

absl::Status RuntimeError(size_t pos, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(message), " (position ", pos, ")"));
}

std::string TypeNames(const ExprValue& a, const ExprValue& b) {
  return absl::StrCat(std::string(a.TypeName()), " and ", std::string(b.TypeName()));
}

const char* ArithSymbol(ArithOp op) {
  switch (op) {
    case ArithOp::kAdd:
      return "+";
    case ArithOp::kSub:
      return "-";
    case ArithOp::kMul:
      return "*";
    case ArithOp::kDiv:
      return "/";
    case ArithOp::kMod:
      return "%";
  }
  return "?";
}

const char* CmpSymbol(CmpOp op) {
  switch (op) {
    case CmpOp::kEq:
      return "==";
    case CmpOp::kNe:
      return "!=";
    case CmpOp::kLt:
      return "<";
    case CmpOp::kLe:
      return "<=";
    case CmpOp::kGt:
      return ">";
    case CmpOp::kGe:
      return ">=";
  }
  return "?";
}

ValueOr FiniteOrError(double d, ArithOp op, size_t pos) {
  if (!std::isfinite(d)) {
    return RuntimeError(pos, absl::StrCat("operator '", ArithSymbol(op),
                                          "' overflowed (the result is not a finite number)"));
  }
  return ExprValue::Double(d);
}

ValueOr Arith(ArithOp op, const ExprValue& a, const ExprValue& b, size_t pos) {
  if (a.is_null() || b.is_null()) return ExprValue::Null();
  if (op == ArithOp::kAdd && a.is_string() && b.is_string()) {
    return ExprValue::String(a.string_value() + b.string_value());
  }
  if (!a.is_number() || !b.is_number()) {
    return RuntimeError(
        pos, absl::StrCat("operator '", ArithSymbol(op), "' expects ",
                          op == ArithOp::kAdd ? "two numbers or two strings" : "two numbers",
                          ", got ", TypeNames(a, b)));
  }
  const bool ints = a.is_int() && b.is_int();
  const double x = a.number_value();
  const double y = b.number_value();
  int64_t r = 0;
  switch (op) {
    case ArithOp::kAdd:
      if (ints && !__builtin_add_overflow(a.int_value(), b.int_value(), &r)) {
        return ExprValue::Int(r);
      }
      return FiniteOrError(x + y, op, pos);
    case ArithOp::kSub:
      if (ints && !__builtin_sub_overflow(a.int_value(), b.int_value(), &r)) {
        return ExprValue::Int(r);
      }
      return FiniteOrError(x - y, op, pos);
    case ArithOp::kMul:
      if (ints && !__builtin_mul_overflow(a.int_value(), b.int_value(), &r)) {
        return ExprValue::Int(r);
      }
      return FiniteOrError(x * y, op, pos);
    case ArithOp::kDiv:
      if (y == 0) return RuntimeError(pos, "operator '/': division by zero");
      if (ints && b.int_value() != -1 && a.int_value() % b.int_value() == 0) {
        return ExprValue::Int(a.int_value() / b.int_value());
      }
      return FiniteOrError(x / y, op, pos);
    case ArithOp::kMod:
      if (y == 0) return RuntimeError(pos, "operator '%': remainder by zero");
      if (ints) {
        // INT64_MIN % -1 overflows in C++; the remainder of anything by -1 is 0.
        if (b.int_value() == -1) return ExprValue::Int(0);
        return ExprValue::Int(a.int_value() % b.int_value());
      }
      return FiniteOrError(std::fmod(x, y), op, pos);
  }
  return ExprValue::Null();
}

// Three-way comparison of two numbers or two strings; *error is set for other types.
int OrderCompare(const ExprValue& a, const ExprValue& b, bool* comparable) {
  *comparable = true;
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) {
      return a.int_value() < b.int_value() ? -1 : (a.int_value() > b.int_value() ? 1 : 0);
    }
    // long double holds every int64 exactly, so mixed comparisons are exact.
    const long double x = a.is_int() ? static_cast<long double>(a.int_value()) : a.number_value();
    const long double y = b.is_int() ? static_cast<long double>(b.int_value()) : b.number_value();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    // std::string::compare is memcmp-based: bytewise, unsigned.
    const int c = a.string_value().compare(b.string_value());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  *comparable = false;
  return 0;
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view TrimView(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// Strict number parsing for to_number(): the whole (trimmed) text must be a number.
ExprValue ParseNumberText(std::string_view text) {
  std::string_view s = TrimView(text);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty() || s.front() == '+') return ExprValue::Null();
  // from_chars also accepts "inf" and "nan"; require a digit or '.' so only numbers pass.
  const char lead = s.front() == '-' && s.size() > 1 ? s[1] : s.front();
  if (!IsDigit(lead) && lead != '.') return ExprValue::Null();
  int64_t i = 0;
  auto [pi, ei] = std::from_chars(s.data(), s.data() + s.size(), i);
  if (ei == std::errc() && pi == s.data() + s.size()) return ExprValue::Int(i);
  double d = 0;
  auto [pd, ed] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ed != std::errc() || pd != s.data() + s.size() || !std::isfinite(d)) {
    return ExprValue::Null();
  }
  return ExprValue::Double(d);
}

class Evaluator {
 public:
  explicit Evaluator(const rapidjson::Value& record) : record_(record) {}

  ValueOr Eval(const Node& n) {
    switch (n.kind) {
      case NodeKind::kLiteral:
        return n.literal;
      case NodeKind::kPath: {
        const rapidjson::Value* v = Lookup(n);
        return v == nullptr ? ExprValue::Null() : ExprValue::FromJson(*v);
      }
      case NodeKind::kNot: {
        ValueOr v = Eval(*n.kids[0]);
        if (!v.ok() || v->is_null()) return v;
        if (!v->is_bool()) {
          return RuntimeError(
              n.pos, absl::StrCat("operator '!' expects a bool, got ", std::string(v->TypeName())));
        }
        return ExprValue::Bool(!v->bool_value());
      }
      case NodeKind::kNeg: {
        ValueOr v = Eval(*n.kids[0]);
        if (!v.ok() || v->is_null()) return v;
        if (!v->is_number()) {
          return RuntimeError(
              n.pos, absl::StrCat("unary '-' expects a number, got ", std::string(v->TypeName())));
        }
        if (v->is_int() && v->int_value() != std::numeric_limits<int64_t>::min()) {
          return ExprValue::Int(-v->int_value());
        }
        return ExprValue::Double(-v->number_value());
      }
      case NodeKind::kAnd:
      case NodeKind::kOr:
        return EvalLogical(n);
      case NodeKind::kCompare:
        return EvalCompare(n);
      case NodeKind::kArith: {
        ValueOr acc = Eval(*n.kids[0]);
        if (!acc.ok()) return acc;
        for (size_t k = 0; k < n.ops.size(); ++k) {
          ValueOr rhs = Eval(*n.kids[k + 1]);
          if (!rhs.ok()) return rhs;
          acc = Arith(n.ops[k], *acc, *rhs, n.op_pos[k]);
          if (!acc.ok()) return acc;
        }
        return acc;
      }
      case NodeKind::kIn: {
        ValueOr x = Eval(*n.kids[0]);
        if (!x.ok() || x->is_null()) return x;
        for (size_t k = 1; k < n.kids.size(); ++k) {
          ValueOr item = Eval(*n.kids[k]);
          if (!item.ok()) return item;
          if (*x == *item) return ExprValue::Bool(!n.negate);
        }
        return ExprValue::Bool(n.negate);
      }
      case NodeKind::kCall:
        return EvalCall(n);
    }
    return ExprValue::Null();
  }

  // The value at a path, or nullptr when some step is absent.
  const rapidjson::Value* Lookup(const Node& n) const {
    const rapidjson::Value* v = &record_;
    for (const PathStep& step : n.path) {
      if (step.is_index) {
        if (!v->IsArray() || step.index >= v->Size()) return nullptr;
        v = &(*v)[step.index];
      } else {
        if (!v->IsObject()) return nullptr;
        const rapidjson::Value key(rapidjson::StringRef(
            step.name.data(), static_cast<rapidjson::SizeType>(step.name.size())));
        auto it = v->FindMember(key);
        if (it == v->MemberEnd()) return nullptr;
        v = &it->value;
      }
    }
    return v;
  }

 private:
  ValueOr EvalLogical(const Node& n) {
    const bool is_and = n.kind == NodeKind::kAnd;
    bool saw_null = false;
    for (const auto& kid : n.kids) {
      ValueOr v = Eval(*kid);
      if (!v.ok()) return v;
      if (v->is_null()) {
        saw_null = true;
        continue;
      }
      if (!v->is_bool()) {
        return RuntimeError(
            kid->pos, absl::StrCat("operator '", is_and ? "&&" : "||", "' expects bools, got ",
                                   std::string(v->TypeName())));
      }
      // false decides an &&, true decides an ||.
      if (v->bool_value() != is_and) return ExprValue::Bool(!is_and);
    }
    if (saw_null) return ExprValue::Null();
    return ExprValue::Bool(is_and);
  }

  ValueOr EvalCompare(const Node& n) {
    ValueOr a = Eval(*n.kids[0]);
    if (!a.ok()) return a;
    ValueOr b = Eval(*n.kids[1]);
    if (!b.ok()) return b;
    if (n.cmp == CmpOp::kEq) return ExprValue::Bool(*a == *b);
    if (n.cmp == CmpOp::kNe) return ExprValue::Bool(!(*a == *b));
    if (a->is_null() || b->is_null()) return ExprValue::Null();
    bool comparable = false;
    const int c = OrderCompare(*a, *b, &comparable);
    if (!comparable) {
      return RuntimeError(n.pos, absl::StrCat("operator '", CmpSymbol(n.cmp), "' cannot compare ",
                                              TypeNames(*a, *b),
                                              " (only numbers with numbers, strings with "
                                              "strings)"));
    }
    switch (n.cmp) {
      case CmpOp::kLt:
        return ExprValue::Bool(c < 0);
      case CmpOp::kLe:
        return ExprValue::Bool(c <= 0);
      case CmpOp::kGt:
        return ExprValue::Bool(c > 0);
      default:
        return ExprValue::Bool(c >= 0);
    }
  }

  absl::Status ArgError(const Node& n, std::string_view expected, const ExprValue& got) {
    return RuntimeError(n.pos, absl::StrCat(n.func_name, "() expects ", std::string(expected),
                                            ", got ", std::string(got.TypeName())));
  }

  // Evaluates every argument (for functions that need all of them).
  absl::Status EvalArgs(const Node& n, std::vector<ExprValue>* args) {
    args->reserve(n.kids.size());
    for (const auto& kid : n.kids) {
      ValueOr v = Eval(*kid);
      if (!v.ok()) return v.status();
      args->push_back(*std::move(v));
    }
    return absl::OkStatus();
  }

  // An integral number argument (substr positions, round digits).
  absl::Status IntArg(const Node& n, const ExprValue& v, std::string_view what, int64_t* out) {
    if (!v.is_int()) {
      return RuntimeError(
          n.pos, absl::StrCat(n.func_name, "() expects an integer ", std::string(what), ", got ",
                              v.is_number() ? "a fractional number" : std::string(v.TypeName())));
    }
    *out = v.int_value();
    return absl::OkStatus();
  }

  ValueOr EvalCall(const Node& n) {
    // Functions with special evaluation rules first.
    switch (n.func) {
      case Func::kCoalesce:
        for (const auto& kid : n.kids) {
          ValueOr v = Eval(*kid);
          if (!v.ok() || !v->is_null()) return v;
        }
        return ExprValue::Null();
      case Func::kExists:
        return ExprValue::Bool(Lookup(*n.kids[0]) != nullptr);
      case Func::kIsNull: {
        ValueOr v = Eval(*n.kids[0]);
        if (!v.ok()) return v;
        return ExprValue::Bool(v->is_null());
      }
      default:
        break;
    }
    std::vector<ExprValue> args;
    if (absl::Status s = EvalArgs(n, &args); !s.ok()) return s;
    // contains(array, null) is a membership test; otherwise any null argument gives null.
    const bool array_membership =
        n.func == Func::kContains && args[0].type() == ExprValue::Type::kArray;
    if (!array_membership) {
      for (const ExprValue& a : args) {
        if (a.is_null()) return ExprValue::Null();
      }
    }
    const ExprValue& a0 = args[0];
    switch (n.func) {
      case Func::kLen:
        if (a0.is_string())
          return ExprValue::Int(static_cast<int64_t>(CodePointCount(a0.string_value())));
        if (a0.is_json()) {
          const rapidjson::Value& j = a0.json_value();
          return ExprValue::Int(j.IsArray() ? j.Size() : j.MemberCount());
        }
        return ArgError(n, "a string, array or object", a0);
      case Func::kLower:
      case Func::kUpper: {
        if (!a0.is_string()) return ArgError(n, "a string", a0);
        std::string s = a0.string_value();
        for (char& c : s) {
          if (n.func == Func::kLower && c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
          if (n.func == Func::kUpper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
        }
        return ExprValue::String(std::move(s));
      }
      case Func::kTrim:
        if (!a0.is_string()) return ArgError(n, "a string", a0);
        return ExprValue::String(std::string(TrimView(a0.string_value())));
      case Func::kSubstr: {
        if (!a0.is_string()) return ArgError(n, "a string", a0);
        int64_t start = 0;
        if (absl::Status s = IntArg(n, args[1], "start", &start); !s.ok()) return s;
        const std::vector<size_t> offsets = CodePointOffsets(a0.string_value());
        const int64_t count = static_cast<int64_t>(offsets.size()) - 1;
        if (start < 0) start = std::max<int64_t>(0, count + start);
        start = std::min(start, count);
        int64_t length = count - start;
        if (args.size() == 3) {
          int64_t want = 0;
          if (absl::Status s = IntArg(n, args[2], "length", &want); !s.ok()) return s;
          if (want < 0) {
            return RuntimeError(n.pos, "substr() expects a non-negative length");
          }
          length = std::min(length, want);
        }
        const size_t from = offsets[static_cast<size_t>(start)];
        const size_t to = offsets[static_cast<size_t>(start + length)];
        return ExprValue::String(a0.string_value().substr(from, to - from));
      }
      case Func::kContains:
        if (array_membership) {
          for (const rapidjson::Value& e : a0.json_value().GetArray()) {
            if (ExprValue::FromJson(e) == args[1]) return ExprValue::Bool(true);
          }
          return ExprValue::Bool(false);
        }
        [[fallthrough]];
      case Func::kStartsWith:
      case Func::kEndsWith: {
        if (!a0.is_string() || !args[1].is_string()) {
          return RuntimeError(
              n.pos, absl::StrCat(n.func_name, "() expects two strings",
                                  n.func == Func::kContains ? " (or an array and a value)" : "",
                                  ", got ", TypeNames(a0, args[1])));
        }
        const std::string& s = a0.string_value();
        const std::string& p = args[1].string_value();
        if (n.func == Func::kContains) return ExprValue::Bool(s.find(p) != std::string::npos);
        if (n.func == Func::kStartsWith) return ExprValue::Bool(s.compare(0, p.size(), p) == 0);
        return ExprValue::Bool(s.size() >= p.size() &&
                               s.compare(s.size() - p.size(), p.size(), p) == 0);
      }
      case Func::kMatches:
        if (!a0.is_string()) return ArgError(n, "a string", a0);
        return ExprValue::Bool(RE2::PartialMatch(a0.string_value(), *n.regex));
      case Func::kAbs:
        if (!a0.is_number()) return ArgError(n, "a number", a0);
        if (a0.is_int() && a0.int_value() != std::numeric_limits<int64_t>::min()) {
          return ExprValue::Int(a0.int_value() < 0 ? -a0.int_value() : a0.int_value());
        }
        return ExprValue::Double(std::fabs(a0.number_value()));
      case Func::kFloor:
      case Func::kCeil:
        if (!a0.is_number()) return ArgError(n, "a number", a0);
        if (a0.is_int()) return a0;
        return ExprValue::Double(n.func == Func::kFloor ? std::floor(a0.number_value())
                                                        : std::ceil(a0.number_value()));
      case Func::kRound: {
        if (!a0.is_number()) return ArgError(n, "a number", a0);
        int64_t digits = 0;
        if (args.size() == 2) {
          if (absl::Status s = IntArg(n, args[1], "digit count", &digits); !s.ok()) return s;
          if (digits < 0 || digits > 15) {
            return RuntimeError(n.pos, "round() expects a digit count from 0 to 15");
          }
        }
        if (a0.is_int()) return a0;
        const double scale = std::pow(10.0, static_cast<double>(digits));
        const double scaled = a0.number_value() * scale;
        // Beyond 2^53 a double has no fractional part left to round.
        if (!std::isfinite(scaled) || std::fabs(scaled) >= 9007199254740992.0) return a0;
        return ExprValue::Double(std::round(scaled) / scale);
      }
      case Func::kMin:
      case Func::kMax: {
        const ExprValue* best = &args[0];
        for (const ExprValue& a : args) {
          bool comparable = false;
          const int c = OrderCompare(a, *best, &comparable);
          if (!comparable || (!a.is_number() && !a.is_string())) {
            return RuntimeError(n.pos, absl::StrCat(n.func_name,
                                                    "() expects all numbers or all "
                                                    "strings, got ",
                                                    TypeNames(*best, a)));
          }
          if ((n.func == Func::kMin && c < 0) || (n.func == Func::kMax && c > 0)) best = &a;
        }
        return *best;
      }
      case Func::kToNumber:
        if (a0.is_number()) return a0;
        if (a0.is_bool()) return ExprValue::Int(a0.bool_value() ? 1 : 0);
        if (a0.is_string()) return ParseNumberText(a0.string_value());
        return ArgError(n, "a string, number or bool", a0);
      case Func::kToString:
        if (a0.is_string()) return a0;
        return ExprValue::String(a0.ToJsonText());
      default:
        break;
    }
    return ExprValue::Null();
  }

  const rapidjson::Value& record_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Expression
// ---------------------------------------------------------------------------------------------

Expression::Expression(std::string text, std::unique_ptr<expr_internal::Node> root)
    : text_(std::move(text)), root_(std::move(root)) {}

Expression::~Expression() = default;

absl::StatusOr<std::shared_ptr<const Expression>> Expression::Compile(std::string_view text) {
  if (text.size() > kMaxLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "position ", kMaxLength + 1, ": expression longer than ", kMaxLength, " bytes"));
  }
  Lexer lexer(text);
  absl::StatusOr<std::vector<Token>> tokens = lexer.Run();
  if (!tokens.ok()) return tokens.status();
  if (tokens->size() == 1) return SyntaxError(1, "empty expression");
  Parser parser(*std::move(tokens));
  absl::StatusOr<std::unique_ptr<Node>> root = parser.ParseAll();
  if (!root.ok()) return root.status();
  return std::shared_ptr<const Expression>(new Expression(std::string(text), *std::move(root)));
}

absl::StatusOr<ExprValue> Expression::Evaluate(const rapidjson::Value& record) const {
  Evaluator evaluator(record);
  return evaluator.Eval(*root_);
}

absl::StatusOr<bool> Expression::EvaluateBool(const rapidjson::Value& record) const {
  absl::StatusOr<ExprValue> v = Evaluate(record);
  if (!v.ok()) return v.status();
  if (v->is_null()) return false;
  if (!v->is_bool()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expression must evaluate to a bool, got ", std::string(v->TypeName())));
  }
  return v->bool_value();
}

}  // namespace wharf::pipeline::contract
